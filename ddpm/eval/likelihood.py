"""The variational bound of Ho et al. (2020), Eq. (5), in bits per dimension: Table 1's NLL column.

    L = L_T + sum_{t=2}^{T} L_{t-1} + L_0                                   (the paper's t in {1..T})
    L_T     = KL(q(x_T | x_0) || N(0, I))                                   the prior term, no parameters
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))           two Gaussians, Eqs. (6)-(7) and (11)
    L_0     = -log p_theta(x_0 | x_1)                                       the discretized Gaussian decoder, Eq. (13)

Each term is a one-sample Monte Carlo estimate (one x_t ~ q(x_t | x_0) per t and image), divided by the number of
dimensions D and by log 2: bits/dim. The code follows Ho et al.'s reference, diffusion_tf/diffusion_utils_2.py
(`_vb_terms_bpd`, `_prior_bpd`, `calc_bpd_loop`) and diffusion_tf/utils.py (`normal_kl`,
`approx_standard_normal_cdf`, `discretized_gaussian_log_likelihood`), as ported to PyTorch in
improved-diffusion's gaussian_diffusion.py and losses.py; it computes in float64 after the network.

Index mapping. This package's t runs over {0..T-1} (ddpm/schedule.py): our x_t is the paper's x_{t+1}, exactly as
in the reference code ("t == 0 means diffused for 1 step"). The term computed from our x_t is a distribution over
our x_{t-1} = the paper's x_t, so column t of `Bound.terms` holds the paper's L_t:
    terms[:, 0]  = L_0 = -log p(x_0 | x_1)          from our x_0 (the paper's x_1), the decoder
    terms[:, t]  = L_t = KL(q(x_t|x_{t+1},x_0) || p(x_t|x_{t+1}))   (paper's indices) from our x_t, t = 1..T-1
    prior        = L_T, with our alpha_bar[T-1] = the paper's alpha_bar_T
The reverse variance sigma_t^2 (Sec. 3.2) is beta_t ("beta", the reference's "fixedlarge") or tilde(beta)_t
("beta_tilde", "fixedsmall"). As in the reference, the decoder at t = 0 takes tilde(beta) at our t = 1 for both
(tilde(beta)_0 = 0, and the reference notes that it gives "a better decoder log likelihood"), so L_0 is the same for
both variances; x0_hat is clipped to [-1, 1] as in the reference's calc_bpd_loop and in Algorithm 2's sampler.
"""
import math
import time
from dataclasses import dataclass

import torch

from ..diffusion import check_image_range
from ..sampling import VARIANCES
from ..schedule import make_betas

LOG2 = math.log(2.0)


# --- The reference's three distributions (diffusion_tf/utils.py, diffusion_utils_2.py), in nats per dimension ----
def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per dimension, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x):
    """The standard normal CDF, through the tanh approximation of the reference (so that the bits match it)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """Eq. (13): log of the mass N(means, e^(2 log_scales)) puts on the pixel bin of x, per dimension, in nats.

    x holds uint8 pixels rescaled to [-1, 1] (bins 2/255 wide); the edge bins reach to -inf and +inf."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))                          # x = -1: delta_- = -inf
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))          # x = 1: delta_+ = +inf
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _bits_per_dim(nats):
    """Mean over every dimension but the batch's, in bits (the reference's meanflat / log 2)."""
    return nats.flatten(1).mean(1) / LOG2


# --- The schedule in float64 ------------------------------------------------------------------------------------
class Schedule64:
    """The quantities the bound needs, in float64 from the model's betas (the reference's GaussianDiffusion2)."""

    def __init__(self, ddpm):
        config = ddpm.config
        betas = make_betas(ddpm.schedule.name, ddpm.T, config.get("beta_start", 1e-4), config.get("beta_end", 0.02))
        alpha_bar = torch.cumprod(1 - betas, 0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        self.T, self.betas, self.alpha_bar, self.alpha_bar_prev = ddpm.T, betas, alpha_bar, alpha_bar_prev
        self.posterior_variance = betas * (1 - alpha_bar_prev) / (1 - alpha_bar)                      # Eq. (7)
        self.posterior_mean_coef1 = betas * alpha_bar_prev.sqrt() / (1 - alpha_bar)
        self.posterior_mean_coef2 = (1 - alpha_bar_prev) * (1 - betas).sqrt() / (1 - alpha_bar)
        # tilde(beta)_0 = 0: the reference puts tilde(beta) of the next step in its place ("clipped")
        first = self.posterior_variance[1:2]
        self.posterior_log_variance_clipped = torch.cat([first, self.posterior_variance[1:]]).log()
        self.model_log_variance = {"beta": torch.cat([first, betas[1:]]).log(),              # "fixedlarge"
                                   "beta_tilde": self.posterior_log_variance_clipped}          # "fixedsmall"


def _at(values, t, x):
    """values[t] for t [B], shaped to broadcast against x [B, ...]."""
    return values.to(x.device)[t].view(-1, *([1] * (x.dim() - 1)))


def vb_terms_bpd(x0, x_t, t, eps, s64, variance="beta", clip_x0=True):
    """One term of the bound per image, in bits/dim (the reference's `_vb_terms_bpd`), and x0_hat.

    x0, x_t, eps: float64 [B, ...]; eps = eps_theta(x_t, t); t [B] in {0..T-1} (our index: see the module
    docstring). Returns (L_t [B]: the decoder NLL where t = 0, the KL elsewhere; x0_hat [B, ...])."""
    x0_hat = _at(s64.alpha_bar, t, x_t).rsqrt() * x_t - (1 / _at(s64.alpha_bar, t, x_t) - 1).sqrt() * eps   # Eq. (15)
    if clip_x0:
        x0_hat = x0_hat.clamp(-1, 1)
    true_mean = _at(s64.posterior_mean_coef1, t, x_t) * x0 + _at(s64.posterior_mean_coef2, t, x_t) * x_t    # Eq. (7)
    model_mean = _at(s64.posterior_mean_coef1, t, x_t) * x0_hat + _at(s64.posterior_mean_coef2, t, x_t) * x_t
    model_log_variance = _at(s64.model_log_variance[variance], t, x_t)
    bits = _bits_per_dim(normal_kl(true_mean, _at(s64.posterior_log_variance_clipped, t, x_t), model_mean,
                                   model_log_variance))
    first = t == 0                                    # the reference computes both and keeps one: the same numbers
    if first.any():
        bits[first] = _bits_per_dim(-discretized_gaussian_log_likelihood(
            x0[first], model_mean[first], (0.5 * model_log_variance[first]).expand_as(x0[first])))        # Eq. (13)
    return bits, x0_hat


def prior_bpd(x0, s64):
    """L_T = KL(q(x_T | x_0) || N(0, I)) per image in bits/dim (the reference's `_prior_bpd`)."""
    a, zero = s64.alpha_bar[-1], torch.zeros((), dtype=torch.float64)
    return _bits_per_dim(normal_kl(a.sqrt() * x0.double(), (1 - a).log(), zero, zero))


# --- The bound of a model on images --------------------------------------------------------------------------------
@dataclass
class Bound:
    """The bound's terms for B images, in bits/dim. Columns are our t in {0..T-1}, holding the paper's L_t.

    terms [B, T]: L_t (L_0 the decoder NLL), NaN where not computed; prior [B]: L_T; weights [T]: how many terms each
    computed term stands for (1 in an exact run, a stratum's width in an estimate, 0 where not computed);
    eps_mse [B, T]: || eps - eps_theta(x_t, t) ||^2 / D, the per-t L_simple of Eq. (14); x0_mse [B, T]: the mean
    squared error of x0_hat in [-1, 1] units (Figure 5's distortion); seeds [T]: the noise seed of each t, so that
    `noisy_images` gives the x_t the terms were computed from."""
    variance: str
    terms: torch.Tensor
    prior: torch.Tensor
    weights: torch.Tensor
    eps_mse: torch.Tensor
    x0_mse: torch.Tensor
    seeds: list

    @property
    def total(self):
        """L_T + sum_t w_t L_t per image [B], in bits/dim: the bound (NLL upper bound) when complete."""
        return self.prior + (self.terms.nan_to_num() * self.weights).sum(1)

    @property
    def complete(self):
        """Every t was computed or stands in a stratum: the total bounds the whole chain."""
        return bool(self.weights.sum() == self.terms.shape[1])

    def share_below(self, t):
        """The share of the mean total carried by the terms at steps < t (our index)."""
        return float((self.terms[:, :t].nan_to_num() * self.weights[:t]).sum(1).mean() / self.total.mean())


def _check(ddpm, x0, variances, ts):
    if ddpm.data_dim is not None:
        raise ValueError("the bound in bits/dim needs an image model (pixels in 256 bins); this model has data_dim="
                         f"{ddpm.data_dim}")
    ddpm.check_images(x0)
    check_image_range(x0)
    bad = [v for v in variances if v not in VARIANCES]
    if bad or not variances:
        raise ValueError(f"unknown variance {bad or variances!r}; choose from {VARIANCES}")
    ts = list(range(ddpm.T)) if ts is None else [int(t) for t in ts]
    if not ts or min(ts) < 0 or max(ts) >= ddpm.T or len(set(ts)) != len(ts):
        raise ValueError(f"ts must be distinct steps in [0, {ddpm.T}), got {ts if len(ts) < 20 else ts[:20]}...")
    return ts


def noise_seeds(T, generator=None):
    """One seed per step t: the noise of x_t depends only on t and the generator, not on which ts a run computes,
    so an estimate shares its exact terms (and their noise) with the full run of the same generator."""
    return torch.randint(0, 2 ** 62, (T,), generator=generator).tolist()


def seeded_noise(x0, seed):
    """The noise [B, ...] (float64, x0's device) of one step's x_t for the batch x0."""
    return torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(x0.device)


def noisy_images(ddpm, bound, x0, t):
    """x_t ~ q(x_t | x_0), Eq. (4), in float64, exactly as `bounds` drew it for the batch x0 at our step t: what
    the receiver of Sec. 4.3 holds once the bits of the steps above t have arrived."""
    alpha_bar = Schedule64(ddpm).alpha_bar[t].item()
    return math.sqrt(alpha_bar) * x0.double() + math.sqrt(1 - alpha_bar) * seeded_noise(x0.double(), bound.seeds[t])


@torch.inference_mode()
def bounds(ddpm, x0, y=None, variances=VARIANCES, *, ts=None, weights=None, clip_x0=True, batch_size=256,
           generator=None, progress=None, stop=None):
    """The bound for each variance in `variances`, from one set of network calls: {variance: Bound}.

    x0 [B, C, H, W] in [-1, 1] (uint8 pixels / 127.5 - 1); y: class labels [B] or None (a conditional model's
    null class: the unconditional bound); ts: our steps to compute (default all T, largest first, as the
    reference's loop), weights: what each stands for (default 1). progress(done, total) is called after each
    batch of network calls; stop() -> True ends the run early, with the terms computed so far (Bound.complete
    is then False). x_t ~ q(x_t | x_0) is drawn with noise seeded per t from `generator` (see noise_seeds).
    """
    variances = (variances,) if isinstance(variances, str) else tuple(variances)
    ts = _check(ddpm, x0, variances, ts)
    ddpm.check_classes(y)
    y = None if y is None else torch.as_tensor(y, device=x0.device)
    s64, B, T, device = Schedule64(ddpm), x0.shape[0], ddpm.T, x0.device
    seeds = noise_seeds(T, generator)
    w = torch.zeros(T, dtype=torch.float64)
    if weights is not None and len(weights) != len(ts):
        raise ValueError(f"weights must give one number per step of ts ({len(ts)}), got {len(weights)}")
    w[ts] = 1.0 if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    ts = sorted(ts, reverse=True)
    x0_64 = x0.double()
    nan = torch.full((B, T), math.nan, dtype=torch.float64)
    terms = {v: nan.clone() for v in variances}
    eps_mse, x0_mse = nan.clone(), nan.clone()
    per_call = max(1, batch_size // B)                          # steps per network call: B images at each
    was_training = ddpm.training
    ddpm.eval()
    try:
        for start in range(0, len(ts), per_call):
            if stop is not None and stop():
                w[ts[start:]] = 0.0
                break
            chunk = ts[start:start + per_call]
            t = torch.tensor(chunk, device=device).repeat_interleave(B)                                 # [k B]
            noise = torch.cat([seeded_noise(x0_64, seeds[s]) for s in chunk])
            x0_k = x0_64.repeat(len(chunk), *[1] * (x0.dim() - 1))
            x_t = _at(s64.alpha_bar, t, x0_k).sqrt() * x0_k + (1 - _at(s64.alpha_bar, t, x0_k)).sqrt() * noise  # Eq. (4)
            eps = ddpm.eps(x_t.float(), t, None if y is None else y.repeat(len(chunk))).double()
            cols = torch.tensor(chunk)
            for v in variances:                                 # x0_hat does not depend on the variance
                bits, x0_hat = vb_terms_bpd(x0_k, x_t, t, eps, s64, v, clip_x0)
                terms[v][:, cols] = bits.view(len(chunk), B).T.cpu()
            eps_mse[:, cols] = ((eps - noise) ** 2).flatten(1).mean(1).view(len(chunk), B).T.cpu()          # Eq. (14)
            x0_mse[:, cols] = ((x0_hat - x0_k) ** 2).flatten(1).mean(1).view(len(chunk), B).T.cpu()
            if progress is not None:
                progress(min(start + per_call, len(ts)), len(ts))
    finally:
        ddpm.train(was_training)
    prior = prior_bpd(x0_64, s64).cpu()
    return {v: Bound(v, terms[v], prior, w.clone(), eps_mse, x0_mse, seeds) for v in variances}


def vlb_terms(ddpm, x0, y=None, variance="beta", *, ts=None, clip_x0=True, generator=None, progress=None, stop=None):
    """The bound's terms per image and per t, in bits/dim, and their total: a `Bound` (see `bounds`).

    All T steps by default (exact, up to the one-sample Monte Carlo of each term, as in the reference); `ts`
    computes only those steps (the total is then their partial sum). variance: sigma_t^2 = "beta" or "beta_tilde".
    """
    return bounds(ddpm, x0, y, (variance,), ts=ts, clip_x0=clip_x0, generator=generator, progress=progress,
                  stop=stop)[variance]


def estimate_plan(T, exact_below=100, ratio=1.05):
    """The steps a fast estimate computes and the weight of each: ([t], [w]) with sum(w) = T.

    Every t < exact_below is computed (there the terms are large and change fast: about 94% of the bound of the
    bundled models lies there); above, log-spaced strata [a, b) with b / a about `ratio` each stand for their
    width b - a, at one step near their geometric centre (the terms fall roughly as 1/t, nearly flat in log t
    over a stratum). With T <= exact_below every step is computed."""
    if not exact_below >= 1 or not ratio > 1:
        raise ValueError(f"exact_below must be an integer >= 1 and ratio > 1, got {exact_below!r} and {ratio!r}")
    exact_below = min(int(exact_below), T)                   # a short chain is computed whole
    edges = [exact_below]
    while edges[-1] < T:
        edges.append(min(T, max(edges[-1] + 1, round(edges[-1] * ratio))))
    ts, weights = list(range(exact_below)), [1] * exact_below
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        ts.append(min(b - 1, round(math.sqrt(a * b))))
        weights.append(b - a)
    return ts, weights


def vlb_estimate(ddpm, x0, y=None, variance="beta", *, exact_below=100, ratio=1.05, clip_x0=True, generator=None,
                 progress=None, stop=None):
    """The bound from about 15% of the network calls: a `Bound` whose total is within 1% of `vlb_terms`'s on the
    bundled models (the same generator gives the same terms below exact_below). See estimate_plan."""
    ts, weights = estimate_plan(ddpm.T, exact_below, ratio)
    return bounds(ddpm, x0, y, (variance,), ts=ts, weights=weights, clip_x0=clip_x0, generator=generator,
                  progress=progress, stop=stop)[variance]


def nll_table(ddpm, x0, y=None, *, seed=0, progress=None):
    """The bound of images x0 for both variances, all T terms and the fast estimate, timed: a markdown table
    (what `python -m ddpm evaluate --nll` prints and writes into the model card)."""
    start = time.perf_counter()
    exact = bounds(ddpm, x0, y, generator=torch.Generator().manual_seed(seed), progress=progress)
    seconds_exact, start = time.perf_counter() - start, time.perf_counter()
    ts, weights = estimate_plan(ddpm.T)
    fast = bounds(ddpm, x0, y, ts=ts, weights=weights, generator=torch.Generator().manual_seed(seed))
    seconds_fast, n, exact_below = time.perf_counter() - start, len(x0), min(100, ddpm.T)
    lines = ["The variational bound L of Ho et al. (2020), Eq. (5), the NLL column of their Table 1: an upper bound on "
             "-log p(x_0) in bits/dim, computed by `ddpm.eval.likelihood` (terms as in the reference code).", "",
             "| sigma_t^2 | bound, all T terms | L_T | L_0 (decoder) | share of t < 100 | fast estimate | its error |",
             "|---|---|---|---|---|---|---|"]
    for v in VARIANCES:
        total, estimate = exact[v].total, fast[v].total.mean()
        spread = f" ± {total.std() / math.sqrt(n):.3f}" if n > 1 else ""
        lines.append(f"| {v} | {total.mean():.3f}{spread} | {exact[v].prior.mean():.2e} | "
                     f"{exact[v].terms[:, 0].mean():.3f} | {100 * exact[v].share_below(exact_below):.0f}% | {estimate:.3f} | "
                     f"{100 * (estimate / total.mean() - 1):+.2f}% |")
    given = "the null class (unconditional)" if y is None else "their classes"
    return "\n".join(lines) + (
        f"\n\nBits/dim on {n} images (mean ± standard error over images), given {given}; one x_t per t and image, "
        f"seed {seed}. All T = {ddpm.T} terms: {n * ddpm.T:,} network calls in "
        f"{seconds_exact:.0f} s; the fast estimate (every t < {exact_below}, {len(ts) - exact_below} log-spaced strata above): "
        f"{n * len(ts):,} calls in {seconds_fast:.0f} s.")
