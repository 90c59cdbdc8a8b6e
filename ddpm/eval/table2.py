"""Table 2 of Ho et al. (2020) in 2-D: what should the network predict, and how should the loss weigh the steps?

The same MLP, budget and seed learn a point cloud with one of five targets, under one of two weightings:

    target   the network outputs                        x0_hat from it (alpha = sqrt(alpha_bar_t), sigma = sqrt(1 - alpha_bar_t))
    eps      the noise eps (the paper's choice)        (x_t - sigma eps_hat) / alpha                       Eq. (15)
    x0       the clean point x_0                       the output
    mu       the posterior mean tilde(mu)_t            (mu_hat - c2 x_t) / c1, tilde(mu) = c1 x_0 + c2 x_t   Eq. (7)
    v        v = alpha eps - sigma x_0                 alpha x_t - sigma v_hat          (Salimans & Ho 2022)
    flow     u = eps - x_0 (dz/dtau, ddpm/eval/flow.py) z - tau u_hat, z = x_t / (alpha + sigma)  (Lipman et al. 2023)

    simple   the mean squared error of the target, every t alike (for eps: L_simple, Eq. 14)
    vlb      the true bound's weighting: L_{t-1} = || tilde(mu) - mu_theta ||^2 / (2 sigma_t^2) (Eq. 8), written as a
             weight on the target's squared error (mu is linear in each target), normalised to mean 1 over t

Each run is sampled with Algorithm 2 and scored by the sliced Wasserstein distance to held-out points of the cloud;
seeds give the spread. Ho et al. found eps with L_simple best on CIFAR-10 (Table 2: FID 3.17; the true bound 13.22;
mu with the bound 13.51, mu with plain MSE diverged).
"""
import math
import time

import torch
from torch import nn

from ..points import RECIPE, recipe_model
from ..sampling import sample
from .likelihood import Schedule64
from .metrics import sliced_wasserstein

TARGETS = ("eps", "x0", "mu", "v", "flow")
WEIGHTINGS = ("simple", "vlb")


def _coefs(s64, t):
    """alpha, sigma, c1, c2 of the steps t [B], each [B, 1] (float32)."""
    pick = (s64.alpha_bar.sqrt(), (1 - s64.alpha_bar).sqrt(), s64.posterior_mean_coef1, s64.posterior_mean_coef2)
    return [v[t].float().view(-1, 1) for v in pick]


def target(kind, x0, eps, x_t, t, s64):
    """What the network is trained to output, for x_t = alpha x0 + sigma eps (Eq. 4)."""
    alpha, sigma, c1, c2 = _coefs(s64, t)
    return {"eps": lambda: eps, "x0": lambda: x0, "mu": lambda: c1 * x0 + c2 * x_t,
            "v": lambda: alpha * eps - sigma * x0, "flow": lambda: eps - x0}[kind]()


def to_x0(kind, out, x_t, t, s64):
    """x0_hat from the network's output (the table in the module docstring)."""
    alpha, sigma, c1, c2 = _coefs(s64, t)
    return {"eps": lambda: (x_t - sigma * out) / alpha, "x0": lambda: out, "mu": lambda: (out - c2 * x_t) / c1,
            "v": lambda: alpha * x_t - sigma * out, "flow": lambda: x_t / (alpha + sigma) - sigma / (alpha + sigma) * out
            }[kind]()


def vlb_weights(kind, s64, variance="beta"):
    """lambda_t [T] with lambda_t || target - out ||^2 = || tilde(mu) - mu_theta ||^2 / (2 sigma_t^2), up to one
    constant (normalised to mean 1): mu_theta - tilde(mu) = c1 (x0_hat - x_0), and x0_hat - x_0 is the target's error
    times d x0_hat / d out: -sigma / alpha (eps), 1 (x0), 1 / c1 (mu), -sigma (v), -tau (flow)."""
    alpha, sigma = s64.alpha_bar.sqrt(), (1 - s64.alpha_bar).sqrt()
    c1 = s64.posterior_mean_coef1
    slope = {"eps": sigma / alpha, "x0": torch.ones_like(alpha), "mu": 1 / c1, "v": sigma,
             "flow": sigma / (alpha + sigma)}[kind]
    weights = (c1 * slope) ** 2 / (2 * s64.model_log_variance[variance].exp())
    return (weights / weights.mean()).float()


class Predictor(nn.Module):
    """An MLP that outputs `kind`, seen by the samplers as an eps-model: forward returns eps_hat (Eq. 4 inverted)."""

    def __init__(self, mlp, kind, s64):
        super().__init__()
        self.mlp, self.kind, self.s64 = mlp, kind, s64
        self.dim, self.num_classes, self.config = mlp.dim, mlp.num_classes, mlp.config

    def forward(self, x_t, t, y=None):
        out = self.mlp(x_t, t, y)
        if self.kind == "eps":
            return out
        alpha, sigma, _, _ = _coefs(self.s64, t)
        return (x_t - alpha * to_x0(self.kind, out, x_t, t, self.s64)) / sigma


def train_one(data, kind, weighting, *, recipe=RECIPE, steps=1500, seed=0):
    """A DDPM(data_dim=2) of the playground's recipe whose MLP learns `kind` under `weighting`, for `steps` Adam
    steps on data [N, 2] (batch and learning rate of the recipe). Returns the model (its net a Predictor)."""
    if kind not in TARGETS or weighting not in WEIGHTINGS:
        raise ValueError(f"target {kind!r} / weighting {weighting!r}: choose a target of {TARGETS} and a weighting "
                         f"of {WEIGHTINGS}")
    model = recipe_model(recipe, seed=seed)
    s64 = Schedule64(model)
    model.net = Predictor(model.net, kind, s64)
    weights = vlb_weights(kind, s64) if weighting == "vlb" else torch.ones(model.T)
    optim = torch.optim.Adam(model.net.parameters(), lr=recipe["lr"])
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        x0 = data[torch.randint(0, len(data), (recipe["batch"],), generator=g)]
        t = torch.randint(0, model.T, (len(x0),), generator=g)                                   # Alg. 1, line 3
        eps = torch.randn(x0.shape, generator=g)                                                 # Alg. 1, line 4
        alpha, sigma, _, _ = _coefs(s64, t)
        x_t = alpha * x0 + sigma * eps                                                           # Eq. (4)
        err = (model.net.mlp(x_t, t) - target(kind, x0, eps, x_t, t, s64)) ** 2
        loss = (weights[t] * err.mean(1)).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.net.parameters(), 1.0)
        optim.step()
    return model.eval()


def table2(data, held_out, *, targets=TARGETS, weightings=WEIGHTINGS, seeds=(0, 1, 2), steps=1500, n_samples=1000,
           recipe=RECIPE, progress=None, stop=None):
    """Every target x weighting x seed: a list of rows {target, weighting, seed, swd, seconds}, swd the sliced
    Wasserstein distance of n_samples Algorithm-2 samples to held_out [M, 2]. progress(row) after each run;
    stop() -> True ends the table early (the rows so far are returned). A run of the defaults takes about 8 s of
    one core (1,500 Adam steps at batch 256, 1,000 samples of T = 100 steps); the whole default table (30 runs) is a
    job of minutes, run with progress and stop (the app's jobs stop at 360 s)."""
    rows = []
    for kind in targets:
        for weighting in weightings:
            for seed in seeds:
                if stop is not None and stop():
                    return rows
                start = time.perf_counter()
                model = train_one(data, kind, weighting, recipe=recipe, steps=steps, seed=seed)
                x = sample(model, n_samples, clip_x0=False, generator=torch.Generator().manual_seed(seed))  # points: no range
                swd = sliced_wasserstein(x, held_out, generator=torch.Generator().manual_seed(0))
                rows.append(dict(target=kind, weighting=weighting, seed=seed,
                                 swd=swd if math.isfinite(swd) else math.inf,           # a run that diverged
                                 seconds=time.perf_counter() - start))
                if progress is not None:
                    progress(rows[-1])
    return rows


def summary(rows):
    """{(target, weighting): (median swd, min, max)} over seeds: the table's cells with their seed bands."""
    cells = {}
    for row in rows:
        cells.setdefault((row["target"], row["weighting"]), []).append(row["swd"])
    return {key: (float(torch.tensor(v).median()), min(v), max(v)) for key, v in cells.items()}
