"""Two figures of Ho et al. (2020) recomputed on a model: rate-distortion (Figure 5, Sec. 4.3) and samples that share
x_t (Figure 7), the latter read by the judge classifier: when does the reverse process decide the class?

Time index: our t in {0..T-1} (ddpm/schedule.py); our x_t is the paper's x_{t+1}, and column t of a Bound holds
the paper's L_t (ddpm/eval/likelihood.py).
"""
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..sampling import ddim_step, sample_steps, timesteps
from .likelihood import Schedule64, noisy_images


# --- Figure 5: rate and distortion along the chain -------------------------------------------------------------------
@dataclass
class RateDistortion:
    """Sec. 4.3's progressive code: the receiver gets x_T, then x_{T-1}, ... x_0, paying L_T, L_{T-1}, ... L_0 bits.

    t [T]: our steps T-1 ... 0 (the receiver holds our x_t); rate [T]: bits/dim received so far, L_T plus the
    terms of every step above t (the paper's L_T + sum_{s > t} L_s); distortion [T]: the RMSE of x0_hat(x_t)
    on the [0, 255] scale, as in Figure 5; total: the whole bound (the lossless end, distortion 0)."""
    t: np.ndarray
    rate: np.ndarray
    distortion: np.ndarray
    total: float

    def at_fraction(self, fraction):
        """The largest t (the earliest point of the reverse chain) whose rate reaches `fraction` of the total; 0
        for a fraction beyond the rate at t = 0 (the rest is L_0, the decoder's bits that make x_0 exact)."""
        reached = np.nonzero(self.rate >= fraction * self.total)[0]
        return int(self.t[reached[0]]) if len(reached) else 0


def rate_distortion(bound, image=None):
    """Figure 5 from an exact `Bound` (vlb_terms with all T): the mean over images, or one image's curve."""
    if not bound.complete or bool((bound.weights != 1).any()):
        raise ValueError("rate_distortion needs every term: a Bound of vlb_terms with all T steps (not an estimate, "
                         "not a stopped run)")
    rows = slice(None) if image is None else slice(image, image + 1)
    terms, prior = bound.terms[rows].mean(0).numpy(), float(bound.prior[rows].mean())
    T = len(terms)
    above = np.concatenate([np.cumsum(terms[::-1])[::-1][1:], [0.0]])       # sum_{s > t} L_s, for t = 0 .. T-1
    rmse = 127.5 * np.sqrt(bound.x0_mse[rows].mean(0).numpy())                # [-1, 1] -> [0, 255] units
    order = np.arange(T - 1, -1, -1)
    return RateDistortion(order, prior + above[order], rmse[order], prior + float(terms.sum()))


@torch.inference_mode()
def progressive_strip(ddpm, x0, bound, *, image=0, y=None, fractions=(0.01, 0.02, 0.05, 0.1, 0.2, 0.4)):
    """Sec. 4.3, progressive lossy decompression: x0_hat at the step where `fractions` of one image's bits have
    arrived, from the same x_t the bound used. x0 and y: the batch that `bound` was computed on.

    Returns (x0_hat [K, C, H, W] in [-1, 1], ts [K], rates [K] bits/dim, rmse [K] on [0, 255])."""
    curve = rate_distortion(bound, image)
    ts = [curve.at_fraction(f) for f in fractions]
    x_t = torch.stack([noisy_images(ddpm, bound, x0, t)[image] for t in ts]).float()               # [K, C, H, W]
    t_batch = torch.tensor(ts, device=x0.device)
    eps = ddpm.eps(x_t, t_batch, None if y is None else torch.as_tensor(y)[image].repeat(len(ts)))
    alpha_bar = Schedule64(ddpm).alpha_bar[ts].float().view(-1, 1, 1, 1).to(x0.device)
    x0_hat = ((x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()).clamp(-1, 1)                 # Eq. (15)
    where = [int(np.nonzero(curve.t == t)[0][0]) for t in ts]
    return x0_hat, ts, curve.rate[where], curve.distortion[where]


# --- Figure 7: when does the model decide? ------------------------------------------------------------------------------
def wilson(successes, n, z=1.96):
    """The Wilson score interval of a proportion (Wilson 1927): (low, high), good also at 0 or n successes."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@dataclass
class Commitment:
    """Figure 7, read by a judge. trunk: the x_t frozen at each t of ts and the trunk's final sample; branches
    [len(ts), K, C, H, W]: K continuations from each frozen x_t, with fresh noise; agreement [len(ts)]: the share
    of continuations the judge puts in the trunk's class, with Wilson intervals low/high; committed_t: the largest
    t from which agreement stays >= level at every smaller frozen t (None if it never does)."""
    ts: list
    frozen: torch.Tensor
    trunk: torch.Tensor
    trunk_class: int
    branches: torch.Tensor
    agreement: np.ndarray
    low: np.ndarray
    high: np.ndarray
    committed_t: int
    chance: float


def _run(ddpm, x, y, guidance_scale, t_start, steps, generator, keep=()):
    """The reverse process from x at t_start down to x_0 (DDIM with eta = 1, DDPM's posterior noise, on `steps`
    steps; all steps when steps >= t_start + 1): the final images and the x_t entering each step in `keep`."""
    kept = {}
    all_steps = steps >= t_start + 1
    for step in sample_steps(ddpm, x, y=y, sampler="ddpm" if all_steps else "ddim", steps=None if all_steps else steps,
                             eta=1.0,
                             guidance_scale=guidance_scale, t_start=t_start, generator=generator):
        if step.t in keep:
            kept[step.t] = step.x_t
        x = step.x_prev
    return x.clamp(-1, 1), kept


def _eps(ddpm, x_t, t, y, guidance_scale):
    """guided_eps (ddpm/sampling.py) for a step t per row [B]: the branches of every frozen t share one call."""
    if y is None or guidance_scale == 1.0:
        return ddpm.eps(x_t, t, y)
    eps_cond, eps_uncond = ddpm.eps(torch.cat([x_t, x_t]), t.repeat(2),
                                    torch.cat([y, torch.full_like(y, ddpm.null_class)])).chunk(2)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)                  # Ho & Salimans (2021) Eq. (6)


def _branches(ddpm, starts, y, guidance_scale, steps, generator):
    """Continue each x_t of starts {t: [K, C, H, W]} down to x_0 with DDIM, eta = 1 (DDPM's posterior noise), on
    min(steps, t + 1) steps of its own grid; step i of every branch runs in one network call (the calls, not the
    images, are the cost on a CPU). Returns the final images [len(starts), K, C, H, W] in [-1, 1]."""
    plans = [timesteps("ddim", t + 1, min(steps, t + 1)) for t in starts]
    x = list(starts.values())
    K = len(x[0])
    for i in range(max(map(len, plans))):
        live = [b for b, plan in enumerate(plans) if i < len(plan)]
        t = torch.tensor([plans[b][i][0] for b in live], device=x[0].device).repeat_interleave(K)
        eps = _eps(ddpm, torch.cat([x[b] for b in live]), t, None if y is None else y.repeat(len(live)), guidance_scale)
        for b, eps_b in zip(live, eps.split(K), strict=True):
            t_b, t_prev = plans[b][i]
            z = torch.randn(x[b].shape, generator=generator, device=x[b].device)
            x[b] = ddim_step(x[b], t_b, t_prev, eps_b, ddpm.schedule, eta=1.0, noise=z)[0]       # Eq. (12), eta = 1
    return torch.stack(x).clamp(-1, 1)


@torch.inference_mode()
def commitment(ddpm, judge, *, ts=(900, 800, 700, 600, 500, 400, 300, 200, 100), K=8, y=None, guidance_scale=1.0,
               trunk_steps=100, branch_steps=20, level=0.5, generator=None):
    """Freeze one reverse trajectory (the trunk) at each t of ts, draw K continuations from each frozen x_t with
    fresh noise, and ask the judge which class each ends in (Ho et al. Figure 7: samples sharing x_t share
    high-level attributes; the larger t, the less they share).

    The trunk walks trunk_steps DDIM steps with eta = 1 (DDPM's posterior noise) on the "trailing" grid (ts move to
    the nearest step of it); each continuation takes branch_steps DDIM steps with eta = 1 from its t (all of them
    where fewer remain).
    y: one class for the trunk and its branches, with guidance_scale, or None (unconditional). Returns a Commitment."""
    T = ddpm.T
    grid = [t for t, _ in timesteps("ddim", T, min(trunk_steps, T))]
    ts = sorted({min(grid, key=lambda s: abs(s - t)) for t in ts}, reverse=True)
    device = ddpm.device
    x_T = torch.randn((1, *ddpm.sample_shape), generator=generator, device=device)
    y1 = None if y is None else torch.tensor([int(y)], device=device)
    trunk, frozen = _run(ddpm, x_T, y1, guidance_scale, T - 1, trunk_steps, generator, keep=set(ts))
    trunk_class = int(judge.classify(trunk)[0])
    yK = None if y is None else y1.repeat(K)
    branches = _branches(ddpm, {t: frozen[t].repeat(K, *[1] * (x_T.dim() - 1)) for t in ts}, yK, guidance_scale,
                         branch_steps, generator)
    agree = np.array([int((judge.classify(b) == trunk_class).sum()) for b in branches])
    intervals = np.array([wilson(a, K) for a in agree])
    share = agree / K
    committed = None
    for t, s in zip(ts[::-1], share[::-1], strict=True):             # from the smallest t upwards
        if s < level:
            break
        committed = t
    return Commitment(ts, torch.cat([frozen[t] for t in ts]), trunk, trunk_class, branches, share,
                      intervals[:, 0], intervals[:, 1], committed, 1 / judge.config["num_classes"])
