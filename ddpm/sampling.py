"""Reverse process: Algorithm 2 (DDPM ancestral sampling), DDIM, DPM-Solver++(2M), classifier-free guidance.

Each sampler's step is one function that reads top to bottom: `ddpm_step` (Alg. 2, line 4), `ddim_step`
(DDIM, Eq. 12) and `dpmpp_2m_step` (DPM-Solver++(2M), Alg. 2 of Lu et al. 2022). `SAMPLERS` is the table of
samplers, one `Sampler` row each: its name, what to call it, whether it walks all T steps, and its step.
`sample_steps` is the loop: it calls `guided_eps` and the row's step, and yields every reverse step as a `Step`
(the app streams it); `sample` drains it.
Every sampler walks a list of (t, t_prev) pairs, t_prev = -1 meaning "the clean image":
    DDPM:           [(T-1, T-2), (T-2, T-3), ..., (0, -1)]
    DDIM, S steps:  "trailing" spacing, e.g. T = 1000, S = 50: [(999, 979), (979, 959), ..., (19, -1)]
    DPM-Solver++:   the same pairs as DDIM
Guidance convention (Ho & Salimans 2021): eps = eps_uncond + s * (eps_cond - eps_uncond), s = 1 + w;
s = 1 is plain conditional sampling, and both halves run in one batched forward pass.

Symbols: x_t = the current images, eps = eps_theta(x_t, t, y), x0_hat = the predicted clean image,
alpha_bar = bar(alpha)_t, a_prev = bar(alpha)_{t_prev}, sigma_t = the step's noise scale, z = the noise.
The schedule's scalars come as Python floats (`NoiseSchedule.at`), so a step runs tensor ops only on images.

References: Ho et al. (2020) Alg. 2, Eqs. (7), (15); Song et al. (2021) DDIM Eqs. (12), (16);
Lu et al. (2022) DPM-Solver++ Alg. 2 (multistep, second order); Ho & Salimans (2021) Eq. (6).
"""
import copy
import math
import numbers
import os
import shutil
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

VARIANCES = ("beta", "beta_tilde")


@dataclass
class Step:
    """One reverse step x_t -> x_{t_prev}, as yielded by `sample_steps`."""
    i: int             # 0-based index of this step
    n_steps: int       # number of steps in the whole run
    t: int
    t_prev: int        # -1 at the last step
    x_t: torch.Tensor
    x_prev: torch.Tensor
    x0_hat: torch.Tensor
    eps_hat: torch.Tensor
    coefs: dict        # the scalars of this step's update formula, by their symbol


def timesteps(sampler, T, steps=None):
    """The (t, t_prev) pairs a sampler (a name of SAMPLERS) walks, from t = T-1 down to t_prev = -1.

    A sampler with all_steps (Algorithm 2) walks all T steps (`steps` must be None or T); the others walk `steps`
    of them, "trailing" spacing (Lin et al. 2024), as diffusers' schedulers with timestep_spacing="trailing"."""
    if get_sampler(sampler).all_steps:
        if steps is not None and steps != T:
            few = [name for name, row in SAMPLERS.items() if not row.all_steps]
            raise ValueError(f"the {sampler} sampler always takes all T = {T} steps, got steps={steps!r}; "
                             f"for fewer steps use one of {few}")
        ts = list(range(T - 1, -1, -1))
    else:
        steps = T if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= T:
            raise ValueError(f"{sampler} steps must be an integer in [1, {T}], got {steps!r}")
        ts = [round(T - i * T / int(steps)) - 1 for i in range(int(steps))]
    return list(zip(ts, ts[1:] + [-1], strict=True))


def guided_eps(ddpm, x_t, t, y=None, guidance_scale=1.0):
    """eps_theta(x_t, t, y) with classifier-free guidance; y = None predicts with the null class (unconditional).

    y: class labels [B], or class weights [B, K + 1] (a mixture of class embeddings, for class interpolation).
    With s = guidance_scale != 1 both halves run in one batched forward pass of [x_t, x_t] with labels [y, null].
    """
    t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
    if y is None or guidance_scale == 1.0:
        return ddpm.eps(x_t, t_batch, y)
    if y.dim() == 1:
        y_null = torch.full_like(y, ddpm.null_class)
    else:                                                                         # weights: all on the null class
        y_null = torch.eye(y.shape[1], dtype=y.dtype, device=y.device)[[-1] * len(y)]
    eps_cond, eps_uncond = ddpm.eps(torch.cat([x_t, x_t]), t_batch.repeat(2), torch.cat([y, y_null])).chunk(2)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)                  # Ho & Salimans (2021) Eq. (6)


# Algorithm 2 (Ho et al. 2020), the loop that `sample_steps` runs for sampler="ddpm":
#   1: x_T ~ N(0, I)
#   2: for t = T, ..., 1 do                      (here t = T-1, ..., 0: see ddpm/schedule.py)
#   3:     z ~ N(0, I) if t > 1, else z = 0
#   4:     x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) + sigma_t z
#   5: end for
#   6: return x_0
def ddpm_step(x_t, t, eps, schedule, *, noise=None, clip_x0=True, variance="beta"):
    """Algorithm 2, line 4: one ancestral step x_t -> x_{t-1}, given eps = eps_theta(x_t, t).

    Computed in the equivalent form x_{t-1} = tilde(mu)_t(x0_hat, x_t) + sigma_t z (Eq. 7), which lets x0_hat
    be clipped to [-1, 1]; without clipping the two forms are identical (tested). noise: z, of x_t's shape,
    needed for t > 0. variance: sigma_t^2 = beta_t ("beta", the paper's choice) or tilde(beta)_t ("beta_tilde").
    Returns x_{t-1}, x0_hat and the scalars of line 4 by symbol.
    """
    beta_t, alpha_t, alpha_bar, a_prev = schedule.at(t)
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose one of {VARIANCES}")
    beta_tilde = (1 - a_prev) / (1 - alpha_bar) * beta_t                               # Eq. (7)
    sigma_t = math.sqrt(beta_t if variance == "beta" else beta_tilde) if t > 0 else 0.0  # Alg. 2, line 3: z = 0 at the end
    if sigma_t > 0 and noise is None:
        raise ValueError(f"ddpm_step at t = {t} > 0 needs noise z (a tensor of x_t's shape)")
    x0_hat = (x_t - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)               # Eq. (15)
    if clip_x0:
        x0_hat.clamp_(-1, 1)                                                            # a fresh tensor: in place
    coef_x0 = math.sqrt(a_prev) * beta_t / (1 - alpha_bar)                               # Eq. (7): tilde(mu)_t
    coef_xt = math.sqrt(alpha_t) * (1 - a_prev) / (1 - alpha_bar)
    x_prev = coef_x0 * x0_hat + coef_xt * x_t
    if sigma_t > 0:
        x_prev = x_prev + sigma_t * noise                                                # Alg. 2, line 4: + sigma_t z
    coefs = {"1/sqrt(alpha_t)": 1 / math.sqrt(alpha_t), "beta_t/sqrt(1-alpha_bar_t)": beta_t / math.sqrt(1 - alpha_bar),
             "sigma_t": sigma_t}
    return x_prev, x0_hat, coefs


def ddim_step(x_t, t, t_prev, eps, schedule, *, eta=0.0, noise=None, clip_x0=True):
    """DDIM, Song et al. (2021) Eq. (12): jump from t to t_prev < t (-1: the clean image), given eps = eps_theta(x_t, t).

    eta = 0 is deterministic; eta = 1 takes DDPM's posterior noise. noise: z, of x_t's shape, needed for eta > 0.
    Returns x_{t_prev}, x0_hat and the scalars of Eq. (12) by symbol.
    """
    if not -1 <= t_prev < t:
        raise ValueError(f"ddim_step jumps from t to an earlier t_prev in [-1, t), got t = {t}, t_prev = {t_prev}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must lie in [0, 1] (0 = deterministic), got {eta!r}")
    alpha_bar, a_prev = schedule.at(t).alpha_bar, schedule.at(t_prev).alpha_bar          # bar(alpha)_{-1} = 1
    sigma_t = eta * math.sqrt((1 - a_prev) / (1 - alpha_bar) * (1 - alpha_bar / a_prev))  # Eq. (16)
    if sigma_t > 0 and noise is None:
        raise ValueError(f"ddim_step with eta = {eta} > 0 needs noise z (a tensor of x_t's shape)")
    x0_hat = (x_t - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)               # Eq. (12): "predicted x_0"
    if clip_x0:
        x0_hat.clamp_(-1, 1)                                                            # a fresh tensor: in place
        # the direction term uses the eps that fits the clipped x0_hat (diffusers' use_clipped_model_output=True):
        # the raw eps drives guided samples off the data manifold
        eps = (x_t - math.sqrt(alpha_bar) * x0_hat) / math.sqrt(1 - alpha_bar)
    direction = math.sqrt(max(0.0, 1 - a_prev - sigma_t ** 2))       # Eq. (12): "direction to x_t" (>= 0 up to rounding)
    x_prev = math.sqrt(a_prev) * x0_hat + direction * eps
    if sigma_t > 0:
        x_prev = x_prev + sigma_t * noise                                                # Eq. (12): + sigma_t z
    coefs = {"sqrt(alpha_bar_prev)": math.sqrt(a_prev), "sqrt(1-alpha_bar_prev-sigma_t^2)": direction, "sigma_t": sigma_t}
    return x_prev, x0_hat, coefs


def dpmpp_2m_step(x_t, t, t_prev, eps, schedule, *, previous=None, clip_x0=True):
    """DPM-Solver++(2M), Lu et al. (2022) Algorithm 2: one step from t to t_prev < t (-1: the clean image).

    The solver works on the data prediction x0_hat and the half log-SNR lambda = log(alpha / sigma), with
    alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar). previous = (t of the step before, its x0_hat), or
    None at the first step; the first and the last step are first order (then it equals DDIM with eta = 0).
    Returns x_{t_prev}, x0_hat and the step's scalars by symbol.
    """
    if not -1 <= t_prev < t:
        raise ValueError(f"dpmpp_2m_step jumps from t to an earlier t_prev in [-1, t), got t = {t}, t_prev = {t_prev}")
    alpha_bar, a_prev = schedule.at(t).alpha_bar, schedule.at(t_prev).alpha_bar
    alpha_t, sigma_t = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    x0_hat = (x_t - sigma_t * eps) / alpha_t                                             # data prediction, Eq. (4)
    if clip_x0:
        x0_hat.clamp_(-1, 1)                                                            # a fresh tensor: in place
    if t_prev == -1:                                                                     # sigma = 0: the clean image
        return x0_hat, x0_hat, {"sigma_prev/sigma_t": 0.0, "alpha_prev(1-e^-h)": 1.0, "order": 1, "r": 0.0}
    alpha_p, sigma_p = math.sqrt(a_prev), math.sqrt(1 - a_prev)
    lam = lambda a_bar: 0.5 * math.log(a_bar / (1 - a_bar))                             # lambda = log(alpha / sigma)
    h = lam(a_prev) - lam(alpha_bar)                                                     # the step in lambda
    D, order, r = x0_hat, 1, 0.0
    if previous is not None:
        t_before, x0_before = previous
        r = (lam(alpha_bar) - lam(schedule.at(t_before).alpha_bar)) / h                 # r_i = h_{i-1} / h_i
        D = x0_hat + (x0_hat - x0_before) / (2 * r)                                     # (1 + 1/2r) x0_i - 1/2r x0_{i-1}
        order = 2
    x_prev = (sigma_p / sigma_t) * x_t + alpha_p * (1 - math.exp(-h)) * D               # Alg. 2, the update
    return x_prev, x0_hat, {"sigma_prev/sigma_t": sigma_p / sigma_t, "alpha_prev(1-e^-h)": alpha_p * (1 - math.exp(-h)),
                            "order": order, "r": r}


@dataclass(frozen=True)
class Sampler:
    """One row of the sampler table SAMPLERS: what the loop, the app, the CLI and the plots read about a sampler.

    A new sampler is one step function and one row. The loop calls every step the same way:
        step(x_t, t, t_prev, eps, schedule, *, noise, eta, previous, clip_x0, variance) -> (x_{t_prev}, x0_hat, coefs)
    noise: z (None where draws_noise says no), previous: (t, x0_hat) of the step before (None at the first),
    coefs: the scalars of the step's update formula by their symbol; a step takes the keywords it needs (`**_`)."""
    name: str                   # what callers pass: sample(..., sampler=name)
    label: str                  # what the app's picker and the plots' legends show
    short: str                  # in titles and tables: f"{short}-{steps}"
    all_steps: bool             # walks all T steps (Algorithm 2) instead of `steps` of them
    uses_eta: bool              # takes DDIM's eta (0 = deterministic)
    step: Callable              # one reverse step, called as above
    draws_noise: Callable       # draws_noise(t, eta): whether the step at t needs a fresh z
    deterministic: Callable     # deterministic(eta): the same x_T always gives the same image

    def title(self, steps, T):
        """How a table row or a plot title names a run: "DDPM-1000", "DDIM-25"."""
        return f"{self.short}-{T if self.all_steps else steps}"


# The table's steps: each passes on what its sampler uses of the loop's keywords.
def _ddpm(x_t, t, t_prev, eps, schedule, *, noise, clip_x0, variance, **_):
    return ddpm_step(x_t, t, eps, schedule, noise=noise, clip_x0=clip_x0, variance=variance)


def _ddim(x_t, t, t_prev, eps, schedule, *, noise, eta, clip_x0, **_):
    return ddim_step(x_t, t, t_prev, eps, schedule, eta=eta, noise=noise, clip_x0=clip_x0)


def _dpmpp_2m(x_t, t, t_prev, eps, schedule, *, previous, clip_x0, **_):
    return dpmpp_2m_step(x_t, t, t_prev, eps, schedule, previous=previous, clip_x0=clip_x0)


SAMPLERS = {row.name: row for row in (
    Sampler("ddpm", label="DDPM (Algorithm 2, all T steps)", short="DDPM", all_steps=True, uses_eta=False,
            step=_ddpm, draws_noise=lambda t, eta: t > 0, deterministic=lambda eta: False),     # Alg. 2, line 3
    Sampler("ddim", label="DDIM (fewer steps)", short="DDIM", all_steps=False, uses_eta=True,
            step=_ddim, draws_noise=lambda t, eta: eta > 0, deterministic=lambda eta: eta == 0),
    Sampler("dpmpp_2m", label="DPM-Solver++ (fewest steps)", short="DPM-Solver++", all_steps=False, uses_eta=False,
            step=_dpmpp_2m, draws_noise=lambda t, eta: False, deterministic=lambda eta: True),
)}


def get_sampler(name):
    """The row of SAMPLERS named `name`, with a clear error for anything else."""
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {list(SAMPLERS)}")
    return SAMPLERS[name]


def _check_settings(ddpm, x, y, guidance_scale, eta, variance):
    """The checks of sample_steps' inputs, each naming the bad value and what is allowed."""
    ddpm.check_images(x)
    ddpm.check_classes(y)
    if not isinstance(guidance_scale, numbers.Real) or not 0 <= guidance_scale < math.inf:
        raise ValueError(f"guidance_scale must be a number >= 0 (1 = no guidance), got {guidance_scale!r}")
    if guidance_scale != 1.0 and ddpm.num_classes is None:
        raise ValueError(f"guidance_scale = {guidance_scale} needs a class-conditional model; this one is "
                         "unconditional: use guidance_scale=1")
    if guidance_scale != 1.0 and y is None:
        raise ValueError(f"guidance_scale = {guidance_scale} needs class labels y (guidance pushes samples towards "
                         "a class); without classes use guidance_scale=1")
    if not isinstance(eta, numbers.Real) or not 0 <= eta <= 1:
        raise ValueError(f"eta must lie in [0, 1] (0 = deterministic DDIM), got {eta!r}")
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose one of {VARIANCES}")


@torch.inference_mode()
def sample_steps(ddpm, x, *, y=None, sampler="ddpm", steps=None, eta=0.0, guidance_scale=1.0,
                 clip_x0=True, variance=None, t_start=None, generator=None, randn=torch.randn):
    """Run the reverse process from x (pure noise x_{T-1}, or an image noised to step t_start) and yield each Step.

    variance: sigma_t^2 of Algorithm 2, "beta" or "beta_tilde"; None takes the model's own (`ddpm.variance`,
    "beta" unless a diffusers scheduler config said otherwise). randn(shape, generator=, device=) draws each
    step's noise z (as NVlabs/edm's `randn_like`): an ablation can pass one that returns zeros. The network runs
    in eval mode and inference mode; the mode `ddpm` was in comes back when the run ends.
    """
    variance = ddpm.variance if variance is None else variance
    _check_settings(ddpm, x, y, guidance_scale, eta, variance)
    if t_start is not None and (isinstance(t_start, bool) or not isinstance(t_start, numbers.Integral)
                                or not 0 <= t_start < ddpm.T):
        raise ValueError(f"t_start must be an integer in [0, {ddpm.T}), got {t_start!r}")
    row = get_sampler(sampler)
    pairs = timesteps(sampler, ddpm.T if t_start is None else t_start + 1, steps)
    was_training = ddpm.training
    ddpm.eval()
    previous = None                                           # (t, x0_hat) of the step before (multistep solvers)
    try:
        for i, (t, t_prev) in enumerate(pairs):
            eps = guided_eps(ddpm, x, t, y, guidance_scale)
            z = randn(x.shape, generator=generator, device=x.device) if row.draws_noise(t, eta) else None  # Alg. 2, line 3
            x_prev, x0_hat, coefs = row.step(x, t, t_prev, eps, ddpm.schedule, noise=z, eta=eta, previous=previous,
                                             clip_x0=clip_x0, variance=variance)
            previous = (t, x0_hat)
            yield Step(i, len(pairs), t, t_prev, x, x_prev, x0_hat, eps, coefs)
            x = x_prev
    finally:
        ddpm.train(was_training)


def as_class_list(classes, num_classes):
    """`classes` (Python or NumPy ints, a list of them, or a 1-D integer tensor) as a list of ints in
    [0, num_classes), with a clear error for anything else."""
    if torch.is_tensor(classes) or isinstance(classes, np.ndarray):
        if classes.ndim != 1 or classes.dtype in (torch.bool, np.bool_) or not (
                (torch.is_tensor(classes) and not classes.is_floating_point() and not classes.is_complex())
                or (isinstance(classes, np.ndarray) and np.issubdtype(classes.dtype, np.integer))):
            raise ValueError(f"classes must be a 1-D integer tensor or array, got {classes.dtype} of shape "
                             f"{tuple(classes.shape)}")
        classes = classes.tolist()
    elif isinstance(classes, numbers.Integral) and not isinstance(classes, bool):
        classes = [classes]
    classes = list(classes)
    if not classes:
        raise ValueError("classes is empty; pass None for unconditional samples")
    if num_classes is None:
        raise ValueError(f"this model is unconditional, but classes={classes} were asked for")
    bad = [c for c in classes
           if isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"classes {bad} are not classes of this model; valid: integers 0..{num_classes - 1}")
    return [int(c) for c in classes]


def sample(ddpm, n_samples, classes=None, *, sampler="ddpm", steps=None, eta=0.0, guidance_scale=1.0,
           clip_x0=True, variance=None, generator=None, device=None, progress=False, callback=None):
    """Algorithm 2: draw n_samples images, or n_samples per class (grouped by class in the order given).

    classes: None (unconditional), a class index, a list of them (Python or NumPy ints) or a 1-D integer tensor.
    Returns a tensor [N, C, H, W] with values in [-1, 1] (or [N, D] vectors for a model with data_dim).
    Keyword extras pick the sampler (a name of SAMPLERS: "ddpm" walks all T steps of Alg. 2, the others `steps`;
    `eta` for DDIM), guidance scale, clipping of x0_hat, sigma_t^2 (`variance`) and randomness; `callback(step)` is
    called with each `Step` as it is done (to watch x0_hat, or record a run).
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    device = torch.device(device) if device is not None else ddpm.device
    y = None
    if classes is not None:
        y = torch.tensor(as_class_list(classes, ddpm.num_classes), device=device).repeat_interleave(int(n_samples))
    n = int(n_samples) if y is None else len(y)
    x = torch.randn((n, *ddpm.sample_shape), generator=generator, device=device)           # Alg. 2, line 1
    run = sample_steps(ddpm, x, y=y, sampler=sampler, steps=steps, eta=eta, guidance_scale=guidance_scale,
                       clip_x0=clip_x0, variance=variance, generator=generator)
    for step in tqdm(run, total=len(timesteps(sampler, ddpm.T, steps)), disable=not progress, desc=f"{sampler} sampling"):
        x = step.x_prev
        if callback is not None:
            callback(step)
    return x.clamp(-1, 1) if ddpm.data_dim is None else x          # images live in [-1, 1]; points have no range


def slerp(a, b, w):
    """Spherical interpolation between two noise tensors of one shape at weights w [n] in [0, 1]: [n, *a.shape].

    Gaussian noise lives near a sphere; a straight line between two draws passes through lower-norm noise
    that the model never starts from, the great circle keeps the norm (Shoemake 1985; DDIM Sec. 5.4)."""
    if a.shape != b.shape:
        raise ValueError(f"slerp needs two noise tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    w = torch.as_tensor(w, dtype=a.dtype).view(-1, *([1] * a.dim()))
    cos = (a * b).sum() / (a.norm() * b.norm())
    theta = torch.arccos(cos.clamp(-1, 1))
    if theta < 1e-4:                                           # (nearly) the same direction: a straight line
        return (1 - w) * a + w * b
    return (torch.sin((1 - w) * theta) * a + torch.sin(w * theta) * b) / torch.sin(theta)


def compiled(ddpm):
    """A copy of `ddpm` for sampling, its network run through torch.compile (inductor, weights frozen in).

    Opt-in, for long sampling sessions on a CPU: the network then runs about 10-20% faster on 2 cores, but
    the first call compiles for 40-55 s, and the first call at a second batch size once more (after that,
    one graph serves every batch size; `python -m ddpm bench --compile` and `--ablations` measure both).
    The weights become constants of the compiled code, so later changes to `ddpm` do not reach the copy:
    train or load first, then call this. Sampling gives the same images up to float rounding.
    Inductor needs a C++ compiler on a CPU: `$CXX` or g++.
    """
    if ddpm.device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX"), "g++") if c):
        raise RuntimeError("compiled() needs a C++ compiler for torch.compile on a CPU and found none "
                           f"(CXX={os.environ.get('CXX')!r}, no g++ on PATH): install one (apt-get install g++) "
                           "or sample without compiling")
    fast = copy.deepcopy(ddpm).eval()
    fast.net = torch.compile(fast.net, options={"freezing": True})
    return fast
