"""Reverse process: Algorithm 2 (DDPM ancestral sampling), DDIM, and classifier-free guidance.

`sample_steps` is a generator that yields every reverse step (the app streams it); `sample` drains it.
Every sampler walks a list of (t, t_prev) pairs, t_prev = -1 meaning "the clean image":
    DDPM:           [(T-1, T-2), (T-2, T-3), ..., (0, -1)]
    DDIM, S steps:  "trailing" spacing, e.g. T = 1000, S = 50: [(999, 979), (979, 959), ..., (19, -1)]
Guidance convention (Ho & Salimans 2021): eps = eps_uncond + s * (eps_cond - eps_uncond), s = 1 + w;
s = 1 is plain conditional sampling, and both halves run in one batched forward pass.

References: Ho et al. (2020) Alg. 2; Song et al. (2021) DDIM Eq. (12); Ho & Salimans (2021) Eq. (6).
"""
import copy
import os
import shutil
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


SAMPLERS = ("ddpm", "ddim")


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
    """The (t, t_prev) pairs a sampler walks, from t = T-1 down to t_prev = -1."""
    if sampler == "ddpm":
        ts = list(range(T - 1, -1, -1))
    elif sampler == "ddim":
        steps = T if steps is None else steps
        if not isinstance(steps, int) or not 1 <= steps <= T:
            raise ValueError(f"DDIM steps must be an integer in [1, {T}], got {steps!r}")
        ts = [round(T - i * T / steps) - 1 for i in range(steps)]   # "trailing" spacing (Lin et al. 2024)
    else:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    return list(zip(ts, ts[1:] + [-1]))


def guided_eps(ddpm, x_t, t, y=None, guidance_scale=1.0):
    """eps_theta with classifier-free guidance; y = None samples from the unconditional (null-class) model."""
    if y is None or guidance_scale == 1.0:
        return ddpm.eps(x_t, torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long), y)
    return _guided(ddpm, x_t, t, torch.cat([y, torch.full_like(y, ddpm.null_class)]), guidance_scale)


def _guided(ddpm, x_t, t, y_and_null, guidance_scale):
    """Ho & Salimans (2021) Eq. (6) with both halves in one batched pass; y_and_null = [y, null], [2B]."""
    t_batch = torch.full((len(y_and_null),), t, device=x_t.device, dtype=torch.long)
    eps_cond, eps_uncond = ddpm.eps(torch.cat([x_t, x_t]), t_batch, y_and_null).chunk(2)   # [2B] -> 2 x [B]
    return eps_cond.sub_(eps_uncond).mul_(guidance_scale).add_(eps_uncond)             # eps_u + s (eps_c - eps_u)


# Per-step scalars as Python floats, computed for all steps of a run at once. Each is one float32 tensor
# op, as the per-step tensor arithmetic was, so the values are the same bit for bit; a step then runs
# no scalar tensor ops and no host conversions.
def _ddpm_coefs(schedule, ts, variance):
    s, t = schedule, torch.tensor(ts, device=schedule.betas.device)
    sigma = torch.where(t > 0, s.sigma(t, variance), 0.0)                                 # Alg. 2, line 3: z = 0 at t = 0
    a_t = s.alpha_bar[t]
    table = {"sqrt(1-alpha_bar_t)": (1 - a_t).sqrt(), "sqrt(alpha_bar_t)": a_t.sqrt(),
             "coef1": s.posterior_mean_coef1[t], "coef2": s.posterior_mean_coef2[t],
             "1/sqrt(alpha_t)": s.alphas[t].rsqrt(), "beta_t/sqrt(1-alpha_bar_t)": s.betas[t] / (1 - a_t).sqrt(),
             "sigma_t": sigma}
    return [dict(zip(table, values)) for values in zip(*(v.tolist() for v in table.values()))]


def _ddim_coefs(schedule, pairs, eta):
    alpha_bar = schedule.alpha_bar
    t = torch.tensor([t for t, _ in pairs], device=alpha_bar.device)
    t_prev = torch.tensor([t_prev for _, t_prev in pairs], device=alpha_bar.device)
    a_t = alpha_bar[t]
    a_prev = torch.where(t_prev >= 0, alpha_bar[t_prev.clamp(min=0)], 1.0)                # alpha_bar_{-1} = 1
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()                 # Eq. (16)
    table = {"sqrt(1-alpha_bar_t)": (1 - a_t).sqrt(), "sqrt(alpha_bar_t)": a_t.sqrt(),
             "sqrt(alpha_bar_prev)": a_prev.sqrt(), "sqrt(1-alpha_bar_prev-sigma_t^2)": (1 - a_prev - sigma ** 2).sqrt(),
             "sigma_t": sigma}
    return [dict(zip(table, values)) for values in zip(*(v.tolist() for v in table.values()))]


def _x0_hat(x_t, eps, c, clip_x0):
    """Invert Eq. (4): x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), optionally clipped to [-1, 1]."""
    x0_hat = torch.sub(x_t, eps * c["sqrt(1-alpha_bar_t)"]).div_(c["sqrt(alpha_bar_t)"])
    return x0_hat.clamp_(-1, 1) if clip_x0 else x0_hat


def _ddpm_update(x_t, eps, c, noise, clip_x0):
    x0_hat = _x0_hat(x_t, eps, c, clip_x0)
    x_prev = torch.add(x0_hat * c["coef1"], x_t * c["coef2"])                            # Eq. (7): tilde(mu)_t
    if noise is not None:
        x_prev.add_(noise * c["sigma_t"])                                                # Alg. 2, line 4
    return x_prev, x0_hat


def _ddim_update(x_t, eps, c, noise, clip_x0):
    x0_hat = _x0_hat(x_t, eps, c, clip_x0)
    if clip_x0:
        # The direction term must use the eps that matches the clipped x0_hat (diffusers'
        # use_clipped_model_output=True); the raw eps drives guided samples off the data manifold.
        eps = torch.sub(x_t, x0_hat * c["sqrt(alpha_bar_t)"]).div_(c["sqrt(1-alpha_bar_t)"])
    x_prev = torch.add(x0_hat * c["sqrt(alpha_bar_prev)"], eps * c["sqrt(1-alpha_bar_prev-sigma_t^2)"])  # Eq. (12)
    if noise is not None:
        x_prev.add_(noise * c["sigma_t"])
    return x_prev, x0_hat


def _public(c, keys):
    return {k: c[k] for k in keys}


DDPM_COEFS = ("1/sqrt(alpha_t)", "beta_t/sqrt(1-alpha_bar_t)", "sigma_t")
DDIM_COEFS = ("sqrt(alpha_bar_prev)", "sqrt(1-alpha_bar_prev-sigma_t^2)", "sigma_t")


def ddpm_step(x_t, t, eps, schedule, *, noise=None, clip_x0=True, variance="beta"):
    """Algorithm 2, line 4: x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t/sqrt(1 - alpha_bar_t) eps) + sigma_t z.

    Computed in the equivalent form x_{t-1} = tilde(mu)_t(x0_hat, x_t) + sigma_t z (Eq. 7), which lets
    x0_hat be clipped to [-1, 1]; without clipping the two forms are identical (tested).
    Returns x_{t-1}, x0_hat and the step's scalars.
    """
    if t > 0 and noise is None:
        raise ValueError(f"ddpm_step at t = {t} > 0 needs noise z (a tensor of x_t's shape)")
    c = _ddpm_coefs(schedule, [t], variance)[0]
    x_prev, x0_hat = _ddpm_update(x_t, eps, c, noise if t > 0 else None, clip_x0)
    return x_prev, x0_hat, _public(c, DDPM_COEFS)


def ddim_step(x_t, t, t_prev, eps, schedule, *, eta=0.0, noise=None, clip_x0=True):
    """DDIM, Song et al. (2021) Eq. (12): jump from t to t_prev < t; eta = 0 is deterministic, eta = 1 is DDPM-like."""
    if eta > 0 and noise is None:
        raise ValueError(f"ddim_step with eta = {eta} > 0 needs noise z (a tensor of x_t's shape)")
    c = _ddim_coefs(schedule, [(t, t_prev)], eta)[0]
    x_prev, x0_hat = _ddim_update(x_t, eps, c, noise if eta > 0 else None, clip_x0)
    return x_prev, x0_hat, _public(c, DDIM_COEFS)


@torch.inference_mode()
def sample_steps(ddpm, x, *, y=None, sampler="ddpm", steps=None, eta=0.0, guidance_scale=1.0,
                 clip_x0=True, variance="beta", t_start=None, generator=None):
    """Run the reverse process from x (pure noise x_{T-1}, or an image noised to step t_start) and yield each Step."""
    ddpm.check_images(x)
    ddpm.check_classes(y)
    if guidance_scale < 0:
        raise ValueError(f"guidance_scale must be >= 0 (1 = no guidance), got {guidance_scale}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    T = ddpm.T if t_start is None else t_start + 1
    if not 1 <= T <= ddpm.T:
        raise ValueError(f"t_start must lie in [0, {ddpm.T}), got {t_start}")
    pairs = timesteps(sampler, T, steps)
    # Everything that does not change from step to step is computed here, once.
    if sampler == "ddpm":
        coefs = _ddpm_coefs(ddpm.schedule, [t for t, _ in pairs], variance)
        plan = [(t, t_prev, c, t > 0) for (t, t_prev), c in zip(pairs, coefs)]
        update, public = _ddpm_update, DDPM_COEFS
    else:
        plan = [(t, t_prev, c, eta > 0) for (t, t_prev), c in zip(pairs, _ddim_coefs(ddpm.schedule, pairs, eta))]
        update, public = _ddim_update, DDIM_COEFS
    guided = y is not None and guidance_scale != 1.0
    if guided:
        y_in = torch.cat([y, torch.full_like(y, ddpm.null_class)])                     # [y, null]: [2B]
    elif y is None and ddpm.num_classes is not None:
        y_in = torch.full((x.shape[0],), ddpm.null_class, device=x.device)             # the unconditional model
    else:
        y_in = y
    for i, (t, t_prev, c, stochastic) in enumerate(plan):
        if guided:
            eps = _guided(ddpm, x, t, y_in, guidance_scale)
        else:
            eps = ddpm.eps(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long), y_in)
        noise = torch.randn(x.shape, generator=generator, device=x.device) if stochastic else None
        x_prev, x0_hat = update(x, eps, c, noise, clip_x0)
        yield Step(i, len(plan), t, t_prev, x, x_prev, x0_hat, eps, _public(c, public))
        x = x_prev


def _labels(ddpm, n_samples, classes, device):
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    if classes is None:
        return None
    classes = list(classes)
    if not classes:
        raise ValueError("classes is empty; pass None for unconditional samples")
    if ddpm.num_classes is None:
        raise ValueError(f"this model is unconditional, but classes={classes} were asked for")
    bad = [c for c in classes if not isinstance(c, int) or not 0 <= c < ddpm.num_classes]
    if bad:
        raise ValueError(f"classes {bad} are not classes of this model; valid: 0..{ddpm.num_classes - 1}")
    return torch.tensor(classes, device=device).repeat_interleave(n_samples)  # grouped by class, in order given


def sample(ddpm, n_samples, classes=None, *, sampler="ddpm", steps=None, eta=0.0, guidance_scale=1.0,
           clip_x0=True, variance="beta", generator=None, device=None, progress=False, callback=None):
    """Algorithm 2: draw n_samples images, or n_samples per class (grouped by class in the order given).

    Returns a tensor [N, C, H, W] with values in [-1, 1]. Keyword extras pick the sampler
    ("ddpm": T steps of Alg. 2; "ddim": `steps` steps), guidance scale, clipping and randomness;
    `callback(step)` is called with each `SampleStep` as it is done (to watch x0_hat, or record a run).
    """
    device = torch.device(device) if device is not None else ddpm.device
    y = _labels(ddpm, n_samples, classes, device)
    n = n_samples if y is None else len(y)
    x = torch.randn((n, *ddpm.image_shape), generator=generator, device=device)           # Alg. 2, line 1
    run = sample_steps(ddpm, x, y=y, sampler=sampler, steps=steps, eta=eta, guidance_scale=guidance_scale,
                       clip_x0=clip_x0, variance=variance, generator=generator)
    for step in tqdm(run, total=len(timesteps(sampler, ddpm.T, steps)), disable=not progress, desc=f"{sampler} sampling"):
        x = step.x_prev
        if callback is not None:
            callback(step)
    return x.clamp(-1, 1)


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
