"""Check of sample, Algorithm 2, on the challenge's exact model (models.py), whatever noise the student draws.

The model records every call, so each reverse step of the student's loop is seen: x_t and eps going in, and x_{t-1}
(the next call's input, or the returned samples). A step of Algorithm 2 is
    x_{t-1} = cx_t x_t - ce_t eps + sigma_t z,   z ~ N(0, I),   cx_t = 1 / sqrt(alpha_t),
    ce_t = beta_t / sqrt(alpha_t (1 - alpha_bar_t))
so the residual x_{t-1} - (cx_t x_t - ce_t eps) is Gaussian with standard deviation sigma_t, or zero where no noise is
added. Every combination of a mean (Alg. 2's or a catalogued mistake's), a sigma_t and a rule for where z is added has
a likelihood; a mistake is named only when it beats the right algorithm by a factor e^20 (by Markov's inequality a
correct loop is misnamed with probability below 100 e^-20 < 1e-6) and explains every step on its own (the 6-sigma
test below). The right algorithm passes when every step's residual has the variance it should (Wilson-Hilferty
6-sigma test per step, false alarm about 2e-9 per step, below 1e-5 for the ~1200 steps checked) and the noise of one
step is not the noise of the next. sigma_t^2 = beta_t and sigma_t^2 = tilde(beta)_t (the paper's two choices) both
pass. Loop-level mistakes (the range of t, the labels, x_T) are read from the calls before that.
"""
import inspect
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from ..sampling import sample as reference_sample
from . import challenge
from .models import NUM_CLASSES, ShapeMismatch, StepOutOfRange, sampling_model
from .report import named, not_implemented, passed, where, wrong

ITEM = "sample"
_NATS = 20.0                # a mistake must be e^20 times likelier than the right algorithm
_Z = 6.0
_SEED = 36


@dataclass
class Coefs:
    """The schedule at the steps t [S] (float64 of the float32 values the student reads), shaped [S, 1, 1]."""
    t: np.ndarray
    beta: np.ndarray
    alpha: np.ndarray
    ab: np.ndarray
    ab_prev: np.ndarray

    @classmethod
    def at(cls, schedule, t):
        get = lambda v: v.double().numpy()[t].reshape(-1, 1, 1)
        return cls(np.asarray(t), get(schedule.betas), get(schedule.alphas), get(schedule.alpha_bar),
                   get(schedule.alpha_bar_prev))


# mean of x_{t-1} = cx * x_t - ce * eps: the right one (None) and each catalogued mistake
MEANS = {
    None: (lambda c: 1 / np.sqrt(c.alpha), lambda c: c.beta / np.sqrt(c.alpha * (1 - c.ab))),
    "sample_one_over_sqrt_alpha_bar": (lambda c: 1 / np.sqrt(c.ab), lambda c: c.beta / np.sqrt(c.ab * (1 - c.ab))),
    "sample_no_one_over_sqrt_alpha": (lambda c: np.ones_like(c.ab), lambda c: c.beta / np.sqrt(1 - c.ab)),
    "sample_eps_coef_no_sqrt": (lambda c: 1 / np.sqrt(c.alpha), lambda c: c.beta / ((1 - c.ab) * np.sqrt(c.alpha))),
    "sample_eps_coef_alpha": (lambda c: 1 / np.sqrt(c.alpha), lambda c: c.beta / np.sqrt(c.alpha * (1 - c.alpha))),
    "sample_eps_coef_one_minus_alpha_bar": (lambda c: 1 / np.sqrt(c.alpha), lambda c: np.sqrt((1 - c.ab) / c.alpha)),
    "sample_sign_flipped": (lambda c: 1 / np.sqrt(c.alpha), lambda c: -c.beta / np.sqrt(c.alpha * (1 - c.ab))),
}
# sigma_t where noise is added: the paper's two choices (accepted) and the catalogued mistakes
SIGMAS = {
    "beta": lambda c: np.sqrt(c.beta),
    "beta_tilde": lambda c: np.sqrt(c.beta * (1 - c.ab_prev) / (1 - c.ab)),
    "sample_sigma_beta": lambda c: c.beta,
    "sample_no_noise": lambda c: np.zeros_like(c.beta),
}
ACCEPTED_SIGMAS = {"beta": "sigma_t^2 = beta_t (the paper's choice)",
                   "beta_tilde": "sigma_t^2 = tilde(beta)_t (the paper's other choice)"}
# which steps add noise: Alg. 2 line 3 (0-based: every step but t = 0) and the catalogued mistakes
RULES = {
    None: lambda t: t >= 1,
    "sample_noise_at_last_step": lambda t: t >= 0,
    "sample_no_noise_at_t1": lambda t: t >= 2,
}


RIGHT = (None, "beta", None)           # Algorithm 2 as the paper writes it


def combos():
    """(mean, sigma, rule) triples; the rule is moot without noise."""
    for m in MEANS:
        for s in SIGMAS:
            for r in RULES:
                if s != "sample_no_noise" or r is None:
                    yield m, s, r


def mistakes_of(combo):
    m, s, r = combo
    return [k for k in (m, s, r) if k is not None and k not in ACCEPTED_SIGMAS]


def _mean(m, c, x, eps):
    cx, ce = MEANS[m]
    return cx(c) * x - ce(c) * eps


def _sigma(combo, c):
    return SIGMAS[combo[1]](c).reshape(-1) * RULES[combo[2]](c.t)


@dataclass
class Steps:
    """The reverse steps of one run: x_t [S, B, D], eps [S, B, D], t [S] and x_{t-1} [S, B, D] (the last is the output)."""
    T: int
    c: Coefs
    x: np.ndarray
    eps: np.ndarray
    x_prev: np.ndarray
    z: np.ndarray = None                   # the noise, when known (an upload's challenge)
    cache: dict = field(default_factory=dict)

    @property
    def n(self):
        return self.x[0].size

    def part(self, keep):
        """The steps `keep` (a slice) only."""
        c = Coefs(*(v[keep] for v in (self.c.t, self.c.beta, self.c.alpha, self.c.ab, self.c.ab_prev)))
        return Steps(self.T, c, self.x[keep], self.eps[keep], self.x_prev[keep], None if self.z is None else self.z[keep])


def _floor(s):
    """The residual float32 arithmetic leaves where a step adds no noise: a few roundings of the largest |x|, and
    1e-4 for a schedule kept in float32 (1 - alpha_bar_0 = 1e-4 is good to 6e-4 there) against one in float64."""
    return 1e-4 + 2e-6 * np.abs(s.x).reshape(len(s.x), -1).max(1)


def _residual(combo, s):
    """x_{t-1} minus what combo predicts without its noise (with a known z: minus the noise too)."""
    m = combo[0]
    if m not in s.cache:
        r = s.x_prev - _mean(m, s.c, s.x, s.eps)
        if s.z is None:                    # the last step may also be clamped: `return x.clamp(-1, 1)`
            last = s.x_prev[-1] - np.clip(_mean(m, s.part(slice(-1, None)).c, s.x[-1:], s.eps[-1:])[0], -1, 1)
            r[-1] = np.where(np.abs(last) < np.abs(r[-1]), last, r[-1])
        s.cache[m] = r
    if s.z is None:
        return s.cache[m]
    return s.cache[m] - _sigma(combo, s.c).reshape(-1, 1, 1) * s.z


def _ss(combo, s):
    key = ("ss", combo[0]) if s.z is None else ("ss", combo)
    if key not in s.cache:
        s.cache[key] = (_residual(combo, s) ** 2).reshape(len(s.x), -1).sum(1)
    return s.cache[key]


def loglik(combo, s):
    """log p(x_{t-1} | x_t) summed over the steps, under combo; known z: every step is deterministic."""
    sigma = np.maximum(_sigma(combo, s.c) if s.z is None else 0.0, _floor(s))
    return float((-_ss(combo, s) / (2 * sigma ** 2) - s.n * np.log(sigma)).sum())


def misfits(combo, s):
    """Steps (as a bool [S]) whose residual does not fit combo: a 6-sigma Wilson-Hilferty test of its variance
    where noise is added, and 'more than float rounding' where none is."""
    sigma = _sigma(combo, s.c) if s.z is None else np.zeros(len(s.x))
    floor = _floor(s)
    noisy = sigma > 3 * floor
    q = _ss(combo, s) / np.where(noisy, sigma, 1.0) ** 2 / s.n
    wh = (np.cbrt(q) - (1 - 2 / (9 * s.n))) / np.sqrt(2 / (9 * s.n))
    quiet = np.sqrt(_ss(combo, s) / s.n) > np.maximum(floor, sigma)
    return np.where(noisy, np.abs(wh) > _Z, quiet)


def reused_noise(combo, s):
    """Mean cosine between one step's standardised noise and the next one's (or x_T): about 0 for fresh noise
    (standard deviation 1 / sqrt(B D S)), 1 for noise drawn once."""
    sigma = _sigma(combo, s.c)
    noisy = np.flatnonzero(sigma > 3 * _floor(s))
    if len(noisy) < 3:
        return 0.0
    u = (_residual(combo, s)[noisy]).reshape(len(noisy), -1)
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    x_T = s.x[0].ravel() / np.linalg.norm(s.x[0])
    return float(max((u[:-1] * u[1:]).sum(1).mean(), (u @ x_T).mean()))


@dataclass
class Verdict:
    """What the step analysis of one run found."""
    ok: bool
    mistakes: list = field(default_factory=list)
    figure: str = ""
    rows: list = field(default_factory=list)           # (T, t, ok) under the right algorithm
    sigma: str = "beta"


def _rows(combo, s):
    """(T, t, ok) per step: does combo explain it."""
    return [(s.T, int(t), bool(not bad)) for t, bad in zip(s.c.t, misfits(combo, s), strict=True)]


def analyse(s, t_base):
    """Name the combination that explains the steps, or say where the right algorithm fails."""
    scores = {k: loglik(k, s) for k in combos()}
    best = max(scores, key=scores.get)
    right = max((k for k in scores if not mistakes_of(k)), key=scores.get)
    rows = _rows(right, s)
    if mistakes_of(best) and scores[best] - scores[right] > _NATS and not misfits(best, s).any():
        return Verdict(False, mistakes_of(best), _figures(best, right, s, t_base), rows)
    if all(ok for *_, ok in rows):
        if s.z is None and reused_noise(right, s) > 0.5:
            cos = reused_noise(right, s)
            return Verdict(False, ["sample_noise_reused"], f"The noise your steps add is the same at every step: mean "
                           f"cosine {cos:.2f} between one step's noise and the next's (fresh noise gives about 0).", rows)
        return Verdict(True, rows=rows, sigma=right[1])
    return Verdict(False, rows=rows, figure=_largest(right, s, t_base))


def _num(value):
    return f"{value:.3g}"


def _figures(combo, right, s, t_base):
    """One concrete figure per mistake of combo, measured on the student's own steps."""
    out = []
    m, sig, rule = combo
    if m is not None:
        cx, ce = MEANS[m]
        cx0, ce0 = MEANS[None]
        gap = np.abs(cx(s.c) - cx0(s.c)).ravel() + np.abs(ce(s.c) - ce0(s.c)).ravel()
        j = int(np.argmax(gap))
        out.append(f"At t = {s.c.t[j] + t_base} (T = {s.T}) your step is x_(t-1) = {_num(cx(s.c).ravel()[j])} x_t - "
                   f"{_num(ce(s.c).ravel()[j])} eps + sigma_t z; Alg. 2, line 4 gives {_num(cx0(s.c).ravel()[j])} x_t - "
                   f"{_num(ce0(s.c).ravel()[j])} eps + sigma_t z.")
    r = _residual((m, "sample_no_noise", None), s).reshape(len(s.x), -1)
    measured = np.sqrt((r ** 2).mean(1))
    sqrt_beta = np.sqrt(s.c.beta).ravel()
    pick = {"sample_sigma_beta": np.argmin(np.abs(s.c.t - s.T // 2)), "sample_no_noise": np.argmin(np.abs(s.c.t - s.T // 2)),
            "sample_noise_at_last_step": np.argmin(s.c.t), "sample_no_noise_at_t1": np.argmin(np.abs(s.c.t - 1))}
    for k in (sig, rule):
        if k in pick:
            j = int(pick[k])
            should = sqrt_beta[j] if s.c.t[j] > 0 else 0.0
            out.append(f"At t = {s.c.t[j] + t_base} (T = {s.T}) your step added noise of standard deviation "
                       f"{measured[j]:.3g}; Algorithm 2 adds {should:.3g}" + (" (none at the last step)." if s.c.t[j] == 0
                                                                           else " (sqrt(beta_t))."))
    return " ".join(out)


def _largest(combo, s, t_base):
    r = _residual(combo, s).reshape(len(s.x), -1)
    sigma = _sigma(combo, s.c) if s.z is None else np.zeros(len(s.x))
    bad = misfits(combo, s)
    j = int(np.flatnonzero(bad)[0]) if bad.any() else 0
    rms = np.sqrt((r[j] ** 2).mean())
    return (f"first at t = {s.c.t[j] + t_base} (T = {s.T}): x_(t-1) differs from Alg. 2's mean by {rms:.3g} "
            f"(root mean square) where its noise has standard deviation {sigma[j]:.3g}")


# --- running a student's sample on the exact model ---

@dataclass
class Run:
    T: int
    n: int
    classes: list = None
    out: np.ndarray = None
    error: BaseException = None
    calls: list = None
    model: object = None

    @property
    def label(self):
        return f"T = {self.T}, n_samples = {self.n}" + (f", classes = {self.classes}" if self.classes else "")


def _run(fn, T, n, classes, t_base):
    model = sampling_model(T, conditional=classes is not None, t_base=t_base)
    run = Run(T, n, classes, model=model)
    state = np.random.get_state()
    try:
        with torch.random.fork_rng():
            torch.manual_seed(_SEED)
            np.random.seed(_SEED)
            out = fn(model, n) if classes is None else fn(model, n, classes)
            run.out = None if out is None else (out.detach().cpu().double().numpy() if torch.is_tensor(out)
                                                else np.asarray(out, dtype=np.float64))
    except Exception as err:          # the student's error is evidence: _loop_mistake reads it
        run.error = err
    finally:
        np.random.set_state(state)
    calls, seen = [], None
    for call in model.net.calls:      # the same call twice in a row (eps computed twice) is one step
        key = (call.t.tolist(), call.x.shape)
        if not (seen == key and torch.equal(calls[-1].x, call.x)):
            calls.append(call)
        seen = key
    run.calls = calls
    return run


def _index_of(err):
    """The step an error says is out of range: ours, torch's and NumPy's IndexError, ddpm's check_t."""
    if isinstance(err, StepOutOfRange):
        return err.t
    found = (re.search(r"index (-?\d+) is out of bounds", str(err))
             or re.search(r"t must lie in \[0, \d+\) \(T = \d+\), got values from -?\d+ to (-?\d+)", str(err)))
    return int(found.group(1)) if found else None


def _loop_mistake(run, t_base):
    """A report for what the calls show about the loop (errors, range of t, labels, shapes), or None."""
    T, err = run.T, run.error
    if isinstance(err, ShapeMismatch):
        return named(ITEM, "sample_hardcoded_shape", f"{err} (T = {T}, n_samples = {run.n}).")
    if err is not None:
        idx = _index_of(err)
        if idx is not None and T != 1000 and idx >= T and idx in (999 + t_base, 1000 + t_base, 999, 1000):
            return named(ITEM, "sample_hardcoded_T", f"On a model with T = {T} your loop asked for t = {idx}: "
                         f"{type(err).__name__}: {err}.")
        if idx is not None and idx == T + t_base:
            return named(ITEM, "sample_loop_T_to_1", f"The first step asked for t = {idx} (T = {T}): "
                         f"{type(err).__name__}: {err}." + _declare_hint(t_base))
        return wrong(ITEM, f"sample raised {type(err).__name__}: {err} ({run.label}).")
    if run.out is None:
        return wrong(ITEM, f"sample returned None ({run.label}): end it with `return x`.")
    if not run.calls:
        return wrong(ITEM, f"sample never called the network ({run.label}): eps = ddpm.eps(x, t) at every step.")
    if any(len(set(c.t.tolist())) > 1 for c in run.calls):
        return wrong(ITEM, "sample called the network with different t's in one batch; Algorithm 2 runs every image "
                           "through the same step t.")
    ts = [int(c.t[0]) for c in run.calls]
    if ts == list(range(T - 1, 0, -1)):
        return named(ITEM, "sample_loop_skips_zero", f"Your loop called the network at t = {T - 1 + t_base}, ..., "
                     f"{1 + t_base} ({len(ts)} steps) and never at t = {t_base}, the last step (T = {T}).")
    if ts != list(range(T - 1, -1, -1)):
        shown = lambda v: ", ".join(str(t + t_base) for t in v)
        return wrong(ITEM, f"Your loop called the network at t = {shown(ts[:3])}, ..., {shown(ts[-3:])} ({len(ts)} calls); "
                           f"Algorithm 2 runs t = {shown(range(T - 1, T - 4, -1))}, ..., {shown([2, 1, 0])} ({T} calls, "
                           f"T = {T}).")
    expected_n = run.n * (len(run.classes) if run.classes else 1)
    if run.classes:
        report = _labels(run.calls[0].y, run.n, run.classes)
        if report is not None:
            return report
    if run.out.shape != (expected_n, 1, 8, 8):
        return wrong(ITEM, f"sample returned shape {run.out.shape} ({run.label}); expected ({expected_n}, 1, 8, 8)"
                           + (": n_samples images per class" if run.classes else ""))
    x_T = run.calls[0].x.numpy()
    n = x_T.size
    if abs(x_T.mean()) > _Z / np.sqrt(n) or abs(x_T.var() - 1) > _Z * np.sqrt(2 / n):
        if x_T.min() >= 0 and x_T.max() <= 1:
            return named(ITEM, "sample_x_T_uniform", f"Your x_T has mean {x_T.mean():.3f} and variance {x_T.var():.3f}, "
                         "all values in [0, 1]: N(0, I) has mean 0 and variance 1.")
        return wrong(ITEM, f"Your x_T has mean {x_T.mean():.3f} and variance {x_T.var():.3f}; Algorithm 2 starts "
                           "from x_T ~ N(0, I) (6-sigma test).")
    return None


def _labels(y, n, classes):
    """A report when the labels y given to the network for sample(ddpm, n, classes) are not the package's order."""
    expected = torch.tensor(classes).repeat_interleave(n)
    if y is None or bool((y == NUM_CLASSES).all()):
        return named(ITEM, "sample_classes_ignored", f"For classes = {classes} the network got "
                     f"{'no labels' if y is None else 'only the null class'} at every step.")
    if len(y) == len(expected) and torch.equal(y, torch.tensor(classes).repeat(n)):
        return named(ITEM, "sample_classes_tiled", f"For n_samples = {n}, classes = {classes} your labels are "
                     f"{y.tolist()}; the package's order is {expected.tolist()}.")
    if len(y) != len(expected) or not torch.equal(y, expected):
        return wrong(ITEM, f"For n_samples = {n}, classes = {classes} the network got labels {y.tolist()}; "
                           f"expected {expected.tolist()} (n_samples per class, in the order given).")
    return None


def _declare_hint(t_base):
    return "" if t_base else " If you index t = 1..T on purpose, say so: check_function('sample', f, t_base=1)."


def steps_of_run(run):
    S, B = len(run.calls), len(run.calls[0].x)
    x = torch.stack([c.x for c in run.calls]).reshape(S, B, -1).numpy()
    eps = torch.stack([c.out for c in run.calls]).reshape(S, B, -1).numpy()
    x_prev = np.concatenate([x[1:], run.out.reshape(1, B, -1)])
    return Steps(run.T, Coefs.at(run.model.schedule, np.array([int(c.t[0]) for c in run.calls])), x, eps, x_prev)


def _finite(s):
    """The steps before the student's x first leaves float range (an exploding loop), which is all a test can use."""
    size = np.abs(np.concatenate([s.x, s.x_prev], 1)).reshape(len(s.x), -1).max(1)
    ok = np.isfinite(size) & (size < 1e4) & np.isfinite(s.eps).reshape(len(s.x), -1).all(1)
    return s if ok.all() else s.part(slice(0, int(np.argmin(ok))))


def _unit_range(run, t_base):
    """Did the samples come back as (x + 1) / 2? Judge the steps with that undone, if it explains the last step."""
    s = steps_of_run(run)
    if run.out.min() < 0 or run.out.max() > 1:
        return None
    undone = Steps(s.T, s.c, s.x, s.eps, np.concatenate([s.x_prev[:-1], 2 * s.x_prev[-1:] - 1]))
    last = slice(-1, None)
    if misfits(RIGHT, s.part(last)).any() and not misfits(RIGHT, undone.part(last)).any():
        return named(ITEM, "sample_output_unit_range", f"Your samples lie in [{run.out.min():.2f}, {run.out.max():.2f}]; "
                     "2 x - 1 of them is exactly the last step of Algorithm 2.")
    return None


def judge_run(run, t_base):
    """(report or None, Verdict or None) for one run of the student's sample."""
    report = _loop_mistake(run, t_base)
    if report is not None:
        return report, None
    report = _unit_range(run, t_base)
    if report is not None:
        return report, None
    steps = steps_of_run(run)
    finite = _finite(steps)
    if len(finite.x) == 0:
        return wrong(ITEM, f"Your x_(t-1) is NaN or inf (or beyond 1e4) after the first step, t = {steps.c.t[0] + t_base} "
                           f"(T = {run.T}): nothing of Algorithm 2 is left to compare."), None
    verdict = analyse(finite, t_base)
    if verdict.mistakes:
        return named(ITEM, verdict.mistakes, verdict.figure), verdict
    if len(finite.x) < len(steps.x):
        t = steps.c.t[len(finite.x)] + t_base
        return wrong(ITEM, f"Your x_(t-1) becomes NaN or inf (or beyond 1e4) at t = {t} (T = {run.T}); the steps before "
                           f"{'fit Algorithm 2' if verdict.ok else 'differ from it: ' + verdict.figure}."), None
    return None, verdict


def _takes_classes(fn):
    try:
        inspect.signature(fn).bind(None, 1, [0])
        return True
    except (TypeError, ValueError):
        return False


def _picture(run):
    model = sampling_model(run.T, conditional=run.classes is not None)
    with torch.random.fork_rng():
        torch.manual_seed(_SEED)
        reference = reference_sample(model, run.n, run.classes)
    return {"yours": torch.from_numpy(run.out).float().clamp(-1, 1), "reference": reference}


def conventions(t_base, clip_x0):
    t = ("t in {1, ..., T} (1-based, the paper's; declared with t_base=1): the network and the noise rule take the "
         "paper's t, the schedule's arrays are read at t - 1" if t_base == 1 else
         "t in {0, ..., T-1} (0-based, as ddpm): Algorithm 2 runs t = T-1, ..., 0 and adds no noise at t = 0")
    clip = {None: "either", True: "on (declared)", False: "off (declared)"}[clip_x0]
    return [f"Assumed: {t}.", f"Clipping x0_hat to [-1, 1]: {clip}; on this challenge it changes nothing (the exact model's "
            "x0_hat stays inside [-1, 1])."]


def check(fn, *, t_base=0, clip_x0=None):
    """Run a student's sample(ddpm, n_samples[, classes]) on the exact models (T = 1000, T = 100, with classes when the
    function takes them) and judge it."""
    plan = [(1000, 4, None), (100, 4, None)]
    if _takes_classes(fn):
        plan.append((100, challenge.N_PER_CLASS, challenge.CLASSES))
    details = conventions(t_base, clip_x0)
    results = []
    for T, n, classes in plan:
        run = _run(fn, T, n, classes, t_base)
        if isinstance(run.error, NotImplementedError) or (run.out is None and run.error is None and not run.calls):
            return not_implemented(ITEM)
        results.append((run, *judge_run(run, t_base)))
    shown = next((r for r, *_ in reversed(results) if r.out is not None and r.error is None
                  and r.out.shape == (r.n * len(r.classes or [0]), 1, 8, 8)), None)
    picture = _picture(shown) if shown is not None else None
    for run, report, _ in results:
        if report is not None and report.mistake:
            report.details = [f"Found in the run {run.label}."] + details
            report.picture = picture
            return report
    for run, report, _ in results:
        if report is not None:
            report.details = [f"In the run {run.label}."] + details
            report.picture = picture
            return report
    verdicts = [(run, v) for run, _, v in results]
    rows = [row for _, v in verdicts for row in v.rows]
    if all(v.ok for _, v in verdicts):
        sigmas = sorted({ACCEPTED_SIGMAS[v.sigma] for _, v in verdicts})
        if not _takes_classes(fn):
            details.append("Classes not checked: your sample takes no `classes` (Task 3.4a adds them).")
        return passed(ITEM, f"Every step of Algorithm 2 fits ({len(rows)} steps, T = 1000 and T = 100"
                            f"{', with classes' if len(plan) > 2 else ''}): {'; '.join(sigmas)}.", details, picture)
    run, v = next((run, v) for run, v in verdicts if not v.ok)
    return wrong(ITEM, f"Your steps differ from Algorithm 2 {where(rows)}, {v.figure}. No mistake of the catalogue "
                       "explains it.", [f"Seen in the run {run.label}."] + details, picture)


# --- one step from uploaded outputs ---

def upload_steps(arrays):
    """Steps of the sample challenge with the student's x_prev_T and the given z, per T."""
    data = {k: v.double().numpy() for k, v in challenge.load("sample").items()}
    out = []
    for T in challenge.SCHEDULES:
        sched = challenge.schedule(T)
        t = data[f"t_{T}"].astype(np.int64)
        flat = lambda v: v.reshape(16, 1, -1)            # each row is one step of a batch of one
        out.append(Steps(T, Coefs.at(sched, t), flat(data[f"x_t_{T}"]), flat(data[f"eps_{T}"]),
                         flat(np.asarray(arrays[f"x_prev_{T}"], dtype=np.float64)), flat(data[f"z_{T}"])))
    return out


def reference_step(s):
    """Algorithm 2, line 4 on known steps (x_t, eps, z): x_{t-1} = cx_t x_t - ce_t eps + sigma_t z, [S, B, D]."""
    return _mean(None, s.c, s.x, s.eps) + _sigma(RIGHT, s.c).reshape(-1, 1, 1) * s.z


def judge_upload(arrays):
    """The report for an uploaded x_prev_1000, x_prev_100 (one step per row) and, optionally, labels y."""
    steps = upload_steps(arrays)
    ref = [(s, reference_step(s)) for s in steps]
    order = np.argsort(steps[0].c.t)
    image = lambda v: torch.from_numpy(v[order].reshape(-1, 1, 8, 8)).float()
    picture = {"yours": image(steps[0].x_prev), "reference": image(ref[0][1])}
    details = ["Assumed: t in {0, ..., T-1} (0-based, as in the challenge file); z is added where the step adds noise."]
    labels = _upload_labels(arrays, details)
    fits = {k: all(not misfits(k, s).any() for s in steps) for k in combos()}
    accepted = [k for k, ok in fits.items() if ok and not mistakes_of(k)]
    if accepted and labels is None:
        return passed(ITEM, f"Every row matches Algorithm 2, line 4 ({sum(len(s.x) for s in steps)} rows, T = 1000 "
                            f"and T = 100, t = 0 and T-1 included): {ACCEPTED_SIGMAS[accepted[0][1]]}.", details, picture)
    if accepted:
        return labels
    for k, ok in fits.items():
        if ok:
            figure = " ".join(_figures(k, RIGHT, Steps(s.T, s.c, s.x, s.eps, s.x_prev), 0)
                              for s in steps if s.T == 1000)
            return named(ITEM, mistakes_of(k), figure, details, picture)
    own = _own_noise(steps)
    if own is not None:
        return named(ITEM, "sample_own_noise", own, details, picture)
    rows = [row for s in steps for row in _rows(RIGHT, s)]
    s = next(s for s in steps if misfits(RIGHT, s).any())
    return wrong(ITEM, f"x_(t-1) differs from Algorithm 2, line 4 {where(rows)}, {_largest(RIGHT, s, 0)}. "
                       "No mistake of the catalogue explains it.", details, picture)


def _own_noise(steps):
    """With the right mean, is the noise the student added N(0, sigma_t^2) but not the given z?"""
    u, z = [], []
    for s in steps:
        sigma = _sigma(RIGHT, s.c)
        r = s.x_prev - _mean(None, s.c, s.x, s.eps)
        quiet = sigma == 0
        if np.abs(r[quiet]).max(initial=0) > 1e-4:
            return None
        u.append((r[~quiet] / sigma[~quiet].reshape(-1, 1, 1)).ravel())
        z.append(s.z[~quiet].ravel())
    u, z = np.concatenate(u), np.concatenate(z)
    corr, var, n = float(np.corrcoef(u, z)[0, 1]), float(u.var()), len(u)
    if abs(corr) < _Z / np.sqrt(n) + 0.05 and abs(var - 1) < _Z * np.sqrt(2 / n) + 0.05:
        return (f"Your noise has the right size (variance {var:.3f} of sigma_t z) but its correlation with the given z "
                f"is {corr:.3f} (it should be 1): it is another draw. False alarm of this test below 1e-8.")
    return None


def _upload_labels(arrays, details):
    if "y" not in arrays:
        details.append("Labels not checked: no y in the upload.")
        return None
    return _labels(torch.as_tensor(arrays["y"]).long().reshape(-1), challenge.N_PER_CLASS, challenge.CLASSES)
