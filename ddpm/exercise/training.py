"""Check of train and train_classconditional, Algorithm 1, by running them on instruments (a second or less on a CPU).

The student's function gets a model, a loader and an optimizer that watch it:
    ProbeEps       the network: a linear map that starts (and, with learning rate 0, stays) at zero. It records every
                   call (x_t, t, y) and the gradient of the loss with respect to its output: for the simple loss
                   ||eps_theta - target||^2 at eps_theta = 0 that gradient is -target times a constant, so the
                   loss's target is seen exactly, whatever the student named it.
    ProbeOptimizer SGD with lr = 0: counts step() and notes whether the gradients it steps on are empty.
    ProbeLoader    192 images of the challenge in 12 batches of 16 (x0, y), in a fixed order.
What reveals each mistake:
    the noise in the loss  x_t = a x0 + c + m target is solved per image (64 pixels, 3 unknowns): an exact fit means
                           the target is the noise inside x_t, and (a, c, m) against t gives Eq. (4)'s coefficients
                           (or alpha_t's, or no square roots, or a rescaled x0); a target equal to x0, a target that
                           is another draw, or a target that is never negative (torch.rand) is seen directly.
    t                      1536 draws from {0, ..., T-1} (T = 100): a correct loop misses t = 0, or t = T-1, with
                           probability 0.99^1536 < 2e-7 each; t = T or more does not exist.
    zero_grad              a hook on the weight sees, at each backward, whether the last step's gradient is still there.
    labels                 the labels the network got against the batch's: dropped to the null class (num_classes),
                           to another value, never, or nearly always (over 70%). A per-image dropout with p >= 0.05 never
                           drops in 1536 labels with probability < 1e-34; a per-batch one with p >= 0.1 in 96 steps
                           with probability < 5e-5.
"""
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import challenge
from .models import NUM_CLASSES, challenge_ddpm, steps_of
from .report import named, not_implemented, passed, wrong
from .reverse import _index_of

T, BATCH, EPOCHS = 100, 16, 8
_SEED = 36


class ProbeLoader:
    """The challenge's training set in batches of 16 (x0, y), always in the same order; `current` is the batch
    given last (each batch is a copy, so a student's in-place edit cannot change the reference)."""

    def __init__(self, x0, y, batch_size=BATCH):
        self.dataset, self.batch_size = torch.utils.data.TensorDataset(x0, y), batch_size
        self.batches = [(x0[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x0), batch_size)]
        self.current = None

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for i, (x0, y) in enumerate(self.batches):
            self.current = i
            yield x0.clone(), y.clone()


@dataclass
class TrainCall:
    x: torch.Tensor          # x_t [B, D], float64
    t: torch.Tensor          # 0-based steps [B]
    y: torch.Tensor          # labels [B] as given, or None
    batch: int               # the loader's batch at the time of the call


class ProbeEps(nn.Module):
    """eps_theta for the training check: zero output, every call and its output's gradient recorded."""

    def __init__(self, num_classes, t_base, loader, dim=64):
        super().__init__()
        self.in_channels, self.num_classes, self.size_divisor, self.config = 1, num_classes, 1, None
        self.weight, self.bias = nn.Parameter(torch.zeros(dim, dim)), nn.Parameter(torch.zeros(dim))
        self.class_bias = nn.Parameter(torch.zeros(num_classes + 1, dim)) if num_classes else None
        self.t_base, self.loader = t_base, loader
        self.calls, self.grads, self.fresh = [], {}, []
        self.weight.register_hook(self._on_backward)

    def _on_backward(self, grad):
        # runs before the gradient is added to .grad: a zero_grad since the last step leaves it empty
        self.fresh.append(self.weight.grad is None or not bool(self.weight.grad.any()))

    def forward(self, x_t, t, y=None):
        x_t = torch.as_tensor(x_t)
        B = x_t.shape[0]
        labels = None if y is None else torch.as_tensor(y).detach().cpu().long().reshape(-1).expand(B)
        out = x_t.reshape(B, -1).to(self.weight.dtype) @ self.weight.T + self.bias
        if self.class_bias is not None and labels is not None:
            out = out + self.class_bias[labels.clamp(0, self.num_classes).to(out.device)]
        index = len(self.calls)
        self.calls.append(TrainCall(x_t.detach().cpu().double().reshape(B, -1).clone(),
                                    steps_of(t, B, T, self.t_base), labels, self.loader.current))
        if out.requires_grad:
            out.register_hook(lambda g: self.grads.__setitem__(index, g.detach().cpu().double().reshape(B, -1).clone()))
        return out.view(x_t.shape)


class ProbeOptimizer(torch.optim.SGD):
    """SGD with learning rate 0 that counts its steps and the steps taken on empty gradients."""

    def __init__(self, params):
        super().__init__(params, lr=0.0)
        self.steps = self.empty_steps = 0

    @torch.no_grad()
    def step(self, closure=None):
        self.steps += 1
        grads = [p.grad for group in self.param_groups for p in group["params"]]
        if all(g is None or not bool(g.any()) for g in grads):
            self.empty_steps += 1
        return super().step(closure)


@dataclass
class Run:
    ddpm: object
    loader: ProbeLoader
    optim: ProbeOptimizer
    error: BaseException = None

    @property
    def net(self):
        return self.ddpm.net


def _run(fn, conditional, t_base):
    data = challenge.load("train")
    loader = ProbeLoader(data["x0"], data["y"])
    num_classes = NUM_CLASSES if conditional else None
    ddpm = challenge_ddpm(T, ProbeEps(num_classes, t_base, loader), num_classes)
    run = Run(ddpm, loader, ProbeOptimizer(ddpm.parameters()))
    state = np.random.get_state()
    try:
        with torch.random.fork_rng():
            torch.manual_seed(_SEED)
            np.random.seed(_SEED)
            fn(ddpm, loader, EPOCHS, run.optim, "cpu")
    except Exception as err:          # the student's error is evidence: _crash reads it
        run.error = err
    finally:
        np.random.set_state(state)
    return run


# x_t = a(t) x0 + c(t) + n(t) eps under Eq. (4) and under each catalogued mistake of the forward process
_SCALE = {
    None: lambda s, t: (s.alpha_bar[t].sqrt(), 0 * t, (1 - s.alpha_bar[t]).sqrt()),
    "train_alpha_for_alpha_bar": lambda s, t: (s.alphas[t].sqrt(), 0 * t, (1 - s.alphas[t]).sqrt()),
    "train_no_sqrt": lambda s, t: (s.alpha_bar[t], 0 * t, 1 - s.alpha_bar[t]),
    "train_x0_rescaled": lambda s, t: (2 * s.alpha_bar[t].sqrt(), -s.alpha_bar[t].sqrt(), (1 - s.alpha_bar[t]).sqrt()),
    "train_x0_halved": lambda s, t: (s.alpha_bar[t].sqrt() / 2, s.alpha_bar[t].sqrt() / 2, (1 - s.alpha_bar[t]).sqrt()),
}


def _crash(run, item, t_base):
    err = run.error
    idx = _index_of(err)
    if idx is not None and idx >= T + t_base:
        if idx == T + t_base:
            return named(item, "train_t_from_one", f"Your loop asked for t = {idx} (T = {T}): {type(err).__name__}: {err}.")
        return named(item, "train_hardcoded_T", f"On a model with T = {T} your t reached {idx}: {type(err).__name__}: {err}.")
    return wrong(item, f"train raised {type(err).__name__}: {err}.")


def _time_steps(run, item, t_base):
    t = torch.cat([c.t for c in run.net.calls])
    lo, hi, n = int(t.min()) + t_base, int(t.max()) + t_base, len(t)
    if all(len(set(c.t.tolist())) == 1 for c in run.net.calls if len(c.t) > 1):
        return [(None, f"Every batch of {BATCH} images got one t: Algorithm 1 draws t for each image "
                       "(t = torch.randint(0, ddpm.T, (len(x0),))).")]
    if hi >= T + t_base:
        which = "train_t_from_one" if hi == T + t_base else "train_hardcoded_T"
        return [(which, f"Your t ranged over {lo}..{hi} in {n} draws; with T = {T} the steps are {t_base}..{T - 1 + t_base}.")]
    if int(t.min()) < 0:
        return [(None, f"Your t reached {lo}; the steps are {t_base}..{T - 1 + t_base}.")]
    found = []
    if int(t.min()) >= 1:
        found.append(("train_t_from_one", f"Your t ranged over {lo}..{hi} in {n} draws and never hit t = {t_base} "
                      f"(a correct draw misses it with probability {(1 - 1 / T) ** n:.0e})."))
    if int(t.max()) <= T - 2:
        found.append(("train_t_excludes_last", f"Your t ranged over {lo}..{hi} in {n} draws and never hit t = "
                      f"{T - 1 + t_base} = T-1 (a correct draw misses it with probability {(1 - 1 / T) ** n:.0e})."))
    return found


def _gradients(run):
    net, optim = run.net, run.optim
    calls, backwards = len(net.calls), len(net.fresh)
    if not net.grads:
        return [("train_no_backward", f"The network ran {calls} times but no gradient ever reached it.")]
    found = []
    stale = sum(1 for fresh in net.fresh[1:] if not fresh)
    if optim.steps == 0:
        changed = any(bool(p.detach().any()) for p in run.ddpm.parameters() if p.requires_grad)
        found.append((None, "The weights changed although `optim` never stepped: step the optimizer you are given.")
                     if changed else ("train_no_step", f"loss.backward() ran {backwards} times, optim.step() never."))
    elif optim.empty_steps == optim.steps:
        found.append(("train_zero_grad_after_backward", f"All {optim.steps} optimizer steps found zero gradients."))
    if stale:
        found.append(("train_no_zero_grad", f"At {stale} of {backwards - 1} backward passes after the first, the "
                      "gradient of the step before was still in the weights."))
    return found


def _targets(run):
    """(mistake id or None, figure) about the loss target and x_t, from the calls that got a gradient."""
    net, loader = run.net, run.loader
    used = [i for i in sorted(net.grads) if net.calls[i].batch is not None]
    x = torch.cat([net.calls[i].x for i in used])
    t = torch.cat([net.calls[i].t for i in used])
    target = -torch.cat([net.grads[i] for i in used])          # the loss's target, up to a positive constant
    sizes = {len(net.calls[i].x) for i in used}
    if sizes != {BATCH}:
        return None, f"The network got batches of {sorted(sizes)} images; the loader's batches hold {BATCH}."
    x0 = torch.cat([loader.batches[net.calls[i].batch][0].double().reshape(BATCH, -1) for i in used])
    if not bool(torch.isfinite(x).all()):
        nan = ~torch.isfinite(x).all(1)
        if bool((nan == (t >= 1)).all()):
            return "train_cumsum", "Your x_t is NaN for every t >= 1 and right at t = 0 (where alpha_bar_0 = alpha_0)."
        return None, f"Your x_t has NaN or inf at t = {sorted(set(t[nan].tolist()))[:8]}."
    scale = target.pow(2).mean().sqrt()
    if scale == 0:
        return None, "The loss's gradient with respect to eps_theta is zero: the loss does not compare eps_theta with a target."
    target = target / scale
    cos = torch.nn.functional.cosine_similarity(target, x0, dim=1)
    if float(cos.mean()) > 0.99:
        return "train_loss_x0", f"Your loss target has cosine {float(cos.mean()):.3f} with x0 (mean over {len(cos)} images)."
    positive = float((target >= 0).double().mean())
    if positive > 0.95:
        return "train_rand_noise", (f"{positive:.0%} of your noise values are >= 0 ({target.numel()} values): N(0, I) "
                                    "noise is negative half of the time.")
    design = torch.stack([x0, torch.ones_like(x0), target], 2)                      # [N, D, 3]
    coef = torch.linalg.lstsq(design, x.unsqueeze(2)).solution.squeeze(2)           # a, c, m per image
    misfit = (design @ coef.unsqueeze(2)).squeeze(2) - x
    exact = misfit.norm(dim=1) <= 1e-3 * (1 + x.norm(dim=1))
    if bool(exact.all()):
        return _coefficients(run.ddpm.schedule, t, coef)
    signal = torch.linalg.lstsq(design[:, :, :2], x.unsqueeze(2)).solution
    rest = x - (design[:, :, :2] @ signal).squeeze(2)
    corr = float(torch.nn.functional.cosine_similarity(rest, target, dim=1).mean())
    if abs(corr) < 0.2:
        return "train_fresh_eps", (f"The correlation between your loss target and the noise inside x_t is {corr:.2f}; "
                                   "it is 1 when the target is the noise that made x_t.")
    return None, (f"Your loss target is not the noise inside x_t (it explains x_t for {float(exact.double().mean()):.0%} "
                  f"of the images), nor x0.")


def _coefficients(schedule, t, coef):
    """Name the forward process whose a(t), c(t), n(t) fit the solved coefficients."""
    a, c, m = coef.unbind(1)
    sched = type("S", (), {k: getattr(schedule, k).double() for k in ("alphas", "alpha_bar")})
    for h, f in _SCALE.items():
        a_h, c_h, n_h = f(sched, t)
        if bool(((a - a_h).abs() < 2e-3).all() and ((c - c_h).abs() < 2e-3).all() and ((m - n_h).abs() < 0.03).all()):
            if h is None:
                return None, ""
            h = "train_x0_rescaled" if h == "train_x0_halved" else h
            return h, _forward_figure(sched, t, a, c, m)
    return None, "Your x_t is not Eq. (4) of x0 and the loss's noise. " + _forward_figure(sched, t, a, c, m)


def _forward_figure(sched, t, a, c, m):
    pick = (t - T // 2).abs() <= 5
    pick = pick if bool(pick.any()) else torch.ones_like(t, dtype=torch.bool)
    t_mid = int(t[pick].double().median())
    ab = float(sched.alpha_bar[t_mid])
    offset = f" {float(c[pick].mean()):+.3g}" if float(c[pick].abs().mean()) > 1e-3 else ""
    return (f"At t = {t_mid} (T = {T}) the x_t you gave the network is {float(a[pick].mean()):.3g} x0{offset} + "
            f"{float(m[pick].mean()):.3g} eps, noise variance {float((m[pick] ** 2).mean()):.3g}; Eq. (4) gives "
            f"{ab ** 0.5:.3g} x0 + {(1 - ab) ** 0.5:.3g} eps, noise variance {1 - ab:.3g}.")


def _labels(run):
    """(mistake id or None, figure, drop rate) about the labels the network got, against the batches' labels."""
    net, loader = run.net, run.loader
    calls = [c for c in net.calls if c.batch is not None]
    null = NUM_CLASSES
    if all(c.y is None or bool((c.y == null).all()) for c in calls):
        n = sum(len(c.x) for c in calls)
        return "train_cond_labels_not_passed", (f"In all {len(calls)} calls the network got no labels (or only the null "
                                                f"class {null}) for its {n} images; the batches held classes 0..{null - 1}."), 0.0
    given = torch.cat([c.y if c.y is not None else torch.full((len(c.x),), null) for c in calls])
    true = torch.cat([loader.batches[c.batch][1] for c in calls])
    if len(given) != len(true):
        return None, "The network got a different number of labels than the batches hold.", 0.0
    dropped, kept = given == null, given == true
    other = ~dropped & ~kept
    n = len(given)
    if bool(other.any()):
        values = sorted(set(given[other].tolist()))
        if len(values) == 1:
            return "train_cond_wrong_null", (f"{float(other.double().mean()):.0%} of the labels became {values[0]}; "
                                             f"the null class is {null} (ddpm.null_class)."), 0.0
        return None, f"The labels the network got are not the batch's: {int(other.sum())} of {n} differ.", 0.0
    rate = float(dropped.double().mean())
    if rate == 0:
        return "train_cond_no_null", f"None of the {n} labels was replaced by the null class {null}.", rate
    if rate > 0.7:                      # an inverted 10% mask drops 90% (+-0.8% over 1536 labels); p_uncond <= 0.6 passes
        return "train_cond_drop_inverted", f"{rate:.0%} of the {n} labels were replaced by the null class.", rate
    return None, "", rate


def check(fn, item, *, t_base=0):
    """Run a student's train or train_classconditional on the instruments and judge it."""
    conditional = item == "train_classconditional"
    run = _run(fn, conditional, t_base)
    details = [f"Assumed: t in {{{t_base}, ..., T{'' if t_base else '-1'}}} "
               f"({'1-based, as in the paper' if t_base else '0-based, as in ddpm'}); "
               f"the check ran {EPOCHS} epochs of {len(run.loader)} batches of {BATCH} on a model with T = {T}."]
    if isinstance(run.error, NotImplementedError) or (run.error is None and not run.net.calls and not run.optim.steps):
        return not_implemented(item)
    if run.error is not None:
        report = _crash(run, item, t_base)
        report.details = details
        return report
    if not run.net.calls:
        return wrong(item, "train never called the network: loss = F.mse_loss(ddpm.eps(x_t, t), eps).", details)
    if all(c.batch is None for c in run.net.calls):
        return wrong(item, "train never iterated the `loader` it was given (for x0, y in loader: ...); the check "
                           "compares what the network got with the loader's batches.", details)
    found = _time_steps(run, item, t_base) + _gradients(run)
    drop_rate = None
    if run.net.grads:
        found.append(_targets(run))
    if conditional:
        label_id, figure, drop_rate = _labels(run)
        found.append((label_id, figure))
    ids = [k for k, _ in found if k]
    figures = " ".join(f for _, f in found if f)
    if ids:
        return named(item, list(dict.fromkeys(ids)), figures, details)
    if figures:
        return wrong(item, figures + " No mistake of the catalogue explains it.", details)
    if run.optim.steps != EPOCHS * len(run.loader):
        return wrong(item, f"train took {run.optim.steps} optimizer steps; n_epochs = {EPOCHS} over {len(run.loader)} "
                           f"batches is {EPOCHS * len(run.loader)}.", details)
    t = torch.cat([c.t for c in run.net.calls])
    summary = (f"Algorithm 1 as it should be: {run.optim.steps} steps, t over {int(t.min()) + t_base}..{int(t.max()) + t_base}, "
               "the loss compares eps_theta with the noise inside x_t (Eq. 4), zero_grad before every backward")
    if conditional:
        summary += f", labels passed, {drop_rate:.0%} of them replaced by the null class"
    return passed(item, summary + ". False alarm of these tests below 1e-6.", details)
