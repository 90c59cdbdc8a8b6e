"""Noise schedules: the betas and every quantity derived from them.

Time-index convention (used everywhere in this package, tested in tests/test_schedule.py):
    t runs over {0, ..., T-1}; step t adds noise with variance betas[t];
    alpha_bar[t] = prod_{s <= t} (1 - betas[s]);  alpha_bar_prev[0] = 1 (x_{-1} is the clean image x_0);
    the last reverse step (t = 0) adds no noise.
This is the convention of diffusers' schedulers, so their buffers compare index for index.

References:
    Ho et al. (2020), Denoising Diffusion Probabilistic Models, Sec. 2 and 4 (linear schedule).
    Nichol & Dhariwal (2021), Improved DDPM, Eq. (17) (cosine schedule).
    Jabri et al. (2022) / GeoDiff, the sigmoid schedule as diffusers implements it.
"""
import math
from typing import NamedTuple

import torch
from torch import nn

SCHEDULES = ("linear", "cosine", "sigmoid")


def linear_betas(T, beta_start=1e-4, beta_end=0.02):
    """The paper's schedule: betas rise linearly from 1e-4 to 0.02 (for T = 1000)."""
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T, s=0.008, max_beta=0.999):
    """Nichol & Dhariwal (2021), Eq. (17): alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2)."""
    def alpha_bar(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    betas = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float64)


def sigmoid_betas(T, beta_start=1e-4, beta_end=0.02):
    """betas follow a sigmoid over [-6, 6], scaled into [beta_start, beta_end]."""
    return torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64)) * (beta_end - beta_start) + beta_start


def make_betas(name, T, beta_start=1e-4, beta_end=0.02):
    """The betas [T] (float64) of schedule `name`; every beta must lie strictly inside (0, 1)."""
    if not isinstance(T, int) or isinstance(T, bool) or T < 2:
        raise ValueError(f"T must be an integer >= 2, got {T!r}")
    if name == "linear":
        betas = linear_betas(T, beta_start, beta_end)
    elif name == "cosine":
        betas = cosine_betas(T)
    elif name == "sigmoid":
        betas = sigmoid_betas(T, beta_start, beta_end)
    else:
        raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
    if not (0 < betas.min() and betas.max() < 1):
        raise ValueError(f"beta_start = {beta_start!r} and beta_end = {beta_end!r} give betas from "
                         f"{float(betas.min()):g} to {float(betas.max()):g}; every beta must lie in (0, 1), "
                         "e.g. beta_start = 1e-4, beta_end = 0.02 (the paper's, for T = 1000)")
    return betas


def check_t(t, T):
    """Raise a ValueError naming the bad value unless every entry of t is an integer step in {0, ..., T-1}."""
    t = torch.as_tensor(t)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool or t.numel() == 0:
        raise ValueError(f"t must be integer time steps in [0, {T}), got {t.tolist()!r}")
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= T:
        raise ValueError(f"t must lie in [0, {T}) (T = {T}), got values from {lo} to {hi}")
    return t


class Scalars(NamedTuple):
    """The schedule at one step t, as Python floats (what a sampler's update needs; see NoiseSchedule.at)."""
    beta: float            # beta_t
    alpha: float           # alpha_t = 1 - beta_t
    alpha_bar: float       # bar(alpha)_t
    alpha_bar_prev: float  # bar(alpha)_{t-1}, 1 at t = 0


class NoiseSchedule(nn.Module):
    """All schedule quantities, computed in float64 and stored as float32 buffers.

    Glossary (name -> symbol in Ho et al. 2020):
        betas                 beta_t
        alphas                alpha_t = 1 - beta_t
        alpha_bar             bar(alpha)_t = prod_{s<=t} alpha_s          (Eq. 4)
        alpha_bar_prev        bar(alpha)_{t-1}, with bar(alpha)_{-1} = 1
        posterior_variance    tilde(beta)_t = (1 - bar(alpha)_{t-1}) / (1 - bar(alpha)_t) * beta_t   (Eq. 7)
        posterior_mean_coef1  coefficient of x_0 in tilde(mu)_t                                      (Eq. 7)
        posterior_mean_coef2  coefficient of x_t in tilde(mu)_t                                      (Eq. 7)
        snr                   bar(alpha)_t / (1 - bar(alpha)_t)
    """

    def __init__(self, name="linear", T=1000, beta_start=1e-4, beta_end=0.02):
        super().__init__()
        self.name, self.T = name, T
        betas = make_betas(name, T, beta_start, beta_end)
        alphas = 1.0 - betas
        alpha_bar = torch.cumprod(alphas, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        buffers = {
            "betas": betas,
            "alphas": alphas,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            "posterior_variance": betas * (1 - alpha_bar_prev) / (1 - alpha_bar),
            "posterior_mean_coef1": betas * alpha_bar_prev.sqrt() / (1 - alpha_bar),
            "posterior_mean_coef2": (1 - alpha_bar_prev) * alphas.sqrt() / (1 - alpha_bar),
            "snr": alpha_bar / (1 - alpha_bar),
        }
        for key, value in buffers.items():
            # non-persistent: the schedule is rebuilt from the config, never read from a checkpoint
            self.register_buffer(key, value.float(), persistent=False)
        # the same quantities as Python floats (from float64), so a sampling step runs no scalar tensor ops
        self._scalars = [Scalars(*row) for row in zip(*(v.tolist() for v in (betas, alphas, alpha_bar, alpha_bar_prev)),
                                                      strict=True)]

    def at(self, t):
        """beta_t, alpha_t, bar(alpha)_t and bar(alpha)_{t-1} of one step t as Python floats; t = -1 is the clean
        image x_0 (bar(alpha) = 1), the target of a sampler's last jump."""
        if t == -1:
            return Scalars(0.0, 1.0, 1.0, 1.0)
        if isinstance(t, bool) or t != int(t) or not 0 <= t < self.T:
            raise ValueError(f"t must be an integer step in [0, {self.T}) (or -1 for the clean image), got {t!r}")
        return self._scalars[int(t)]

    def extra_repr(self):
        return f"name={self.name!r}, T={self.T}"
