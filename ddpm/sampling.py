"""Reverse process: Algorithm 2 (DDPM ancestral sampling), DDIM, and classifier-free guidance.

`sample_steps` is a generator that yields every reverse step (the app streams it); `sample` drains it.
Every sampler walks a list of (t, t_prev) pairs, t_prev = -1 meaning "the clean image":
    DDPM:           [(T-1, T-2), (T-2, T-3), ..., (0, -1)]
    DDIM, S steps:  "trailing" spacing, e.g. T = 1000, S = 50: [(999, 979), (979, 959), ..., (19, -1)]
Guidance convention (Ho & Salimans 2021): eps = eps_uncond + s * (eps_cond - eps_uncond), s = 1 + w;
s = 1 is plain conditional sampling, and both halves run in one batched forward pass.

References: Ho et al. (2020) Alg. 2; Song et al. (2021) DDIM Eq. (12); Ho & Salimans (2021) Eq. (6).
"""
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .diffusion import predict_x0_from_eps

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
    t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
    if y is None or guidance_scale == 1.0:
        return ddpm.eps(x_t, t_batch, y)
    null = torch.full_like(y, ddpm.null_class)
    eps_cond, eps_uncond = ddpm.eps(torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]),
                                    torch.cat([y, null])).chunk(2)          # one batched pass, [2B] -> 2 x [B]
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def ddpm_step(x_t, t, eps, schedule, *, noise=None, clip_x0=True, variance="beta"):
    """Algorithm 2, line 4: x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t/sqrt(1 - alpha_bar_t) eps) + sigma_t z.

    Computed in the equivalent form x_{t-1} = tilde(mu)_t(x0_hat, x_t) + sigma_t z (Eq. 7), which lets
    x0_hat be clipped to [-1, 1]; without clipping the two forms are identical (tested).
    Returns x_{t-1}, x0_hat and the step's scalars.
    """
    s = schedule
    x0_hat = predict_x0_from_eps(x_t, t, eps, s.alpha_bar)
    if clip_x0:
        x0_hat = x0_hat.clamp(-1, 1)
    mean = s.posterior_mean_coef1[t] * x0_hat + s.posterior_mean_coef2[t] * x_t          # Eq. (7)
    sigma = s.sigma(t, variance) if t > 0 else torch.zeros(())                           # Alg. 2, line 3: z = 0 at t = 0
    x_prev = mean + sigma * noise if t > 0 else mean
    coefs = {"1/sqrt(alpha_t)": float(s.alphas[t].rsqrt()),
             "beta_t/sqrt(1-alpha_bar_t)": float(s.betas[t] / (1 - s.alpha_bar[t]).sqrt()),
             "sigma_t": float(sigma)}
    return x_prev, x0_hat, coefs


def ddim_step(x_t, t, t_prev, eps, schedule, *, eta=0.0, noise=None, clip_x0=True):
    """DDIM, Song et al. (2021) Eq. (12): jump from t to t_prev < t; eta = 0 is deterministic, eta = 1 is DDPM-like."""
    a_t = schedule.alpha_bar[t]
    a_prev = schedule.alpha_bar[t_prev] if t_prev >= 0 else torch.ones(())
    x0_hat = predict_x0_from_eps(x_t, t, eps, schedule.alpha_bar)
    if clip_x0:
        x0_hat = x0_hat.clamp(-1, 1)
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()                 # Eq. (16)
    x_prev = a_prev.sqrt() * x0_hat + (1 - a_prev - sigma ** 2).sqrt() * eps             # Eq. (12)
    if eta > 0:
        x_prev = x_prev + sigma * noise
    coefs = {"sqrt(alpha_bar_prev)": float(a_prev.sqrt()),
             "sqrt(1-alpha_bar_prev-sigma_t^2)": float((1 - a_prev - sigma ** 2).sqrt()),
             "sigma_t": float(sigma)}
    return x_prev, x0_hat, coefs


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
    schedule = ddpm.schedule
    pairs = timesteps(sampler, T, steps)
    for i, (t, t_prev) in enumerate(pairs):
        eps = guided_eps(ddpm, x, t, y, guidance_scale)
        stochastic = (sampler == "ddpm" and t > 0) or (sampler == "ddim" and eta > 0)
        noise = torch.randn(x.shape, generator=generator, device=x.device) if stochastic else None
        if sampler == "ddpm":
            x_prev, x0_hat, coefs = ddpm_step(x, t, eps, schedule, noise=noise, clip_x0=clip_x0, variance=variance)
        else:
            x_prev, x0_hat, coefs = ddim_step(x, t, t_prev, eps, schedule, eta=eta, noise=noise, clip_x0=clip_x0)
        yield Step(i, len(pairs), t, t_prev, x, x_prev, x0_hat, eps, coefs)
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
           clip_x0=True, variance="beta", generator=None, device=None, progress=False):
    """Algorithm 2: draw n_samples images, or n_samples per class (grouped by class in the order given).

    Returns a tensor [N, C, H, W] with values in [-1, 1]. Keyword extras pick the sampler
    ("ddpm": T steps of Alg. 2; "ddim": `steps` steps), guidance scale, clipping and randomness.
    """
    device = torch.device(device) if device is not None else ddpm.device
    y = _labels(ddpm, n_samples, classes, device)
    n = n_samples if y is None else len(y)
    x = torch.randn((n, *ddpm.image_shape), generator=generator, device=device)           # Alg. 2, line 1
    run = sample_steps(ddpm, x, y=y, sampler=sampler, steps=steps, eta=eta, guidance_scale=guidance_scale,
                       clip_x0=clip_x0, variance=variance, generator=generator)
    for step in tqdm(run, total=len(timesteps(sampler, ddpm.T, steps)), disable=not progress, desc=f"{sampler} sampling"):
        x = step.x_prev
    return x.clamp(-1, 1)
