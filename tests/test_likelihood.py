"""The variational bound (ddpm/eval/likelihood.py) against a float64 NumPy port of Ho et al.'s reference code.

The port below follows diffusion_tf/diffusion_utils_2.py (GaussianDiffusion2: p_mean_variance with
model_mean_type="eps", model_var_type "fixedlarge" / "fixedsmall", _vb_terms_bpd, _prior_bpd) and
diffusion_tf/utils.py (normal_kl, approx_standard_normal_cdf, discretized_gaussian_log_likelihood) line by line,
with tf.* replaced by np.* and every array in float64.
"""
import math

import numpy as np
import pytest
import torch

from ddpm.eval.likelihood import (Schedule64, bounds, estimate_plan, noise_seeds, vb_terms_bpd, vlb_estimate,
                                  vlb_terms)
from ddpm.schedule import make_betas


# --- the reference, ported ---------------------------------------------------------------------------------------
def ref_normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + np.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * np.exp(-logvar2))


def ref_approx_standard_normal_cdf(x):
    return 0.5 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * np.power(x, 3))))


def ref_discretized_gaussian_log_likelihood(x, *, means, log_scales):
    centered_x = x - means
    inv_stdv = np.exp(-log_scales)
    cdf_plus = ref_approx_standard_normal_cdf(inv_stdv * (centered_x + 1. / 255.))
    cdf_min = ref_approx_standard_normal_cdf(inv_stdv * (centered_x - 1. / 255.))
    log_cdf_plus = np.log(np.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = np.log(np.maximum(1. - cdf_min, 1e-12))
    cdf_delta = cdf_plus - cdf_min
    return np.where(x < -0.999, log_cdf_plus,
                    np.where(x > 0.999, log_one_minus_cdf_min, np.log(np.maximum(cdf_delta, 1e-12))))


def meanflat(x):
    return x.reshape(x.shape[0], -1).mean(1)


class RefDiffusion:
    """GaussianDiffusion2 of the reference, eps-prediction, the pieces the bound uses."""

    def __init__(self, betas, model_var_type):
        self.betas = betas = np.asarray(betas, dtype=np.float64)
        self.model_var_type = model_var_type
        self.num_timesteps = len(betas)
        alphas = 1. - betas
        self.alphas_cumprod = np.cumprod(alphas, axis=0)
        self.alphas_cumprod_prev = np.append(1., self.alphas_cumprod[:-1])
        self.sqrt_recip_alphas_cumprod = np.sqrt(1. / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1. / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1. - self.alphas_cumprod_prev) / (1. - self.alphas_cumprod)
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1. - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1. - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1. - self.alphas_cumprod)

    @staticmethod
    def _extract(a, t, x_shape):
        return np.asarray(a)[t].reshape([len(t)] + (len(x_shape) - 1) * [1])

    def q_posterior_mean_variance(self, x_start, x_t, t):
        mean = (self._extract(self.posterior_mean_coef1, t, x_t.shape) * x_start
                + self._extract(self.posterior_mean_coef2, t, x_t.shape) * x_t)
        return mean, self._extract(self.posterior_log_variance_clipped, t, x_t.shape)

    def p_mean_variance(self, model_output, x, t, clip_denoised):
        model_log_variance = {
            'fixedlarge': np.log(np.append(self.posterior_variance[1], self.betas[1:])),
            'fixedsmall': self.posterior_log_variance_clipped,
        }[self.model_var_type]
        model_log_variance = self._extract(model_log_variance, t, x.shape) * np.ones(x.shape)
        pred_xstart = (self._extract(self.sqrt_recip_alphas_cumprod, t, x.shape) * x
                       - self._extract(self.sqrt_recipm1_alphas_cumprod, t, x.shape) * model_output)
        if clip_denoised:
            pred_xstart = np.clip(pred_xstart, -1., 1.)
        model_mean, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return model_mean, model_log_variance, pred_xstart

    def vb_terms_bpd(self, model_output, x_start, x_t, t, clip_denoised):
        true_mean, true_log_variance_clipped = self.q_posterior_mean_variance(x_start, x_t, t)
        model_mean, model_log_variance, pred_xstart = self.p_mean_variance(model_output, x_t, t, clip_denoised)
        kl = meanflat(ref_normal_kl(true_mean, true_log_variance_clipped, model_mean, model_log_variance)) / np.log(2.)
        decoder_nll = -ref_discretized_gaussian_log_likelihood(x_start, means=model_mean,
                                                               log_scales=0.5 * model_log_variance)
        decoder_nll = meanflat(decoder_nll) / np.log(2.)
        return np.where(t == 0, decoder_nll, kl), pred_xstart

    def prior_bpd(self, x_start):
        T = self.num_timesteps
        qt_mean = np.sqrt(self.alphas_cumprod[T - 1]) * x_start
        qt_log_variance = np.log(1. - self.alphas_cumprod[T - 1])
        return meanflat(ref_normal_kl(qt_mean, qt_log_variance, 0., 0.)) / np.log(2.)


REF_VAR = {"beta": "fixedlarge", "beta_tilde": "fixedsmall"}


def pixels(n, shape, seed):
    """Images in [-1, 1] on the 256-level grid, with both edge values present (the decoder's open bins)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), generator=g)
    x.view(n, -1)[:, 0], x.view(n, -1)[:, 1] = 0, 255
    return x.float() / 127.5 - 1


# --- tests ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
@pytest.mark.parametrize("clip_x0", [True, False])
def test_each_term_equals_the_reference(make_ddpm, variance, clip_x0):
    ddpm = make_ddpm(image_size=8, num_classes=None, T=1000)
    ref = RefDiffusion(make_betas("linear", 1000), REF_VAR[variance])
    g = torch.Generator().manual_seed(1)
    B = 12
    x0 = pixels(B, (1, 8, 8), 2).double()
    t = torch.tensor([0, 0, 1, 2, 3, 10, 50, 100, 400, 998, 999, 0])
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    ab = Schedule64(ddpm).alpha_bar[t].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    eps = noise + 0.3 * torch.randn(x0.shape, generator=g, dtype=torch.float64)        # an imperfect prediction
    ours, x0_hat = vb_terms_bpd(x0, x_t, t, eps, Schedule64(ddpm), variance, clip_x0)
    theirs, pred_xstart = ref.vb_terms_bpd(eps.numpy(), x0.numpy(), x_t.numpy(), t.numpy(), clip_x0)
    assert np.abs(ours.numpy() - theirs).max() < 1e-6
    assert np.abs(x0_hat.numpy() - pred_xstart).max() < 1e-9
    assert (ours[t == 0] > 0.5).all() and (ours > 0).all()          # a noisy eps: the decoder misses many bins


@pytest.mark.parametrize("conditional", [False, True])
def test_whole_bound_equals_the_reference(make_ddpm, conditional):
    """Every column of vlb_terms, and the prior, against the port fed the same x_t and the same network output."""
    T, B = 30, 3
    ddpm = make_ddpm(image_size=8, num_classes=10 if conditional else None, T=T)
    x0 = pixels(B, (1, 8, 8), 3)
    y = torch.tensor([1, 4, 7]) if conditional else None
    got = bounds(ddpm, x0, y, generator=torch.Generator().manual_seed(5), batch_size=16)
    seeds = noise_seeds(T, torch.Generator().manual_seed(5))
    x0_64 = x0.double()
    for variance in ("beta", "beta_tilde"):
        ref = RefDiffusion(make_betas("linear", T), REF_VAR[variance])
        for t in range(T):
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seeds[t]), dtype=torch.float64)
            ab = ref.alphas_cumprod[t]
            x_t = math.sqrt(ab) * x0_64 + math.sqrt(1 - ab) * noise
            with torch.no_grad():
                eps = ddpm.eps(x_t.float(), torch.full((B,), t), y).double()
            theirs, _ = ref.vb_terms_bpd(eps.numpy(), x0_64.numpy(), x_t.numpy(), np.full(B, t), True)
            assert np.abs(got[variance].terms[:, t].numpy() - theirs).max() < 1e-6, (variance, t)
        prior = ref.prior_bpd(x0_64.numpy())
        assert np.abs(got[variance].prior.numpy() - prior).max() < 1e-9
        assert got[variance].complete and torch.isfinite(got[variance].total).all()
        assert torch.allclose(got[variance].total, got[variance].terms.sum(1) + got[variance].prior)
    assert torch.equal(got["beta"].terms[:, 0], got["beta_tilde"].terms[:, 0])        # one decoder for both
    single = vlb_terms(ddpm, x0, y, "beta_tilde", generator=torch.Generator().manual_seed(5))
    assert torch.allclose(single.terms, got["beta_tilde"].terms, atol=1e-6)             # batching changes nothing


def test_oracle_model_makes_every_kl_vanish_with_beta_tilde(make_ddpm):
    """One training image and its exact epsilon as the model: p(x_{t-1}|x_t) = q(x_{t-1}|x_t,x_0) with
    sigma^2 = tilde(beta), so every KL term is 0; with beta only the variances differ, a known constant."""
    T = 200
    ddpm = make_ddpm(image_size=8, num_classes=None, T=T)
    x0 = pixels(1, (1, 8, 8), 4)
    ab = ddpm.schedule.alpha_bar.double()

    def oracle(x_t, t, y=None):
        a = ab[t].view(-1, 1, 1, 1)
        return ((x_t.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()).float()
    ddpm.eps = oracle
    small = vlb_terms(ddpm, x0, variance="beta_tilde", generator=torch.Generator().manual_seed(0))
    assert small.terms[:, 1:].abs().max() < 1e-8
    assert small.x0_mse[:, :].max() < 1e-10                                              # x0_hat = x0 at every t
    large = vlb_terms(ddpm, x0, variance="beta", generator=torch.Generator().manual_seed(0))
    s64 = Schedule64(ddpm)
    ratio = s64.betas[1:] / s64.posterior_variance[1:]
    expected = 0.5 * (ratio.log() - 1 + 1 / ratio) / math.log(2)                          # KL of equal means
    assert (large.terms[0, 1:] - expected).abs().max() < 1e-8
    # the decoder is exact too: x0 sits in its bin's centre, sigma = sqrt(tilde(beta)_1) is ~1.8 bins wide
    assert 0 < small.terms[0, 0] < 2


def test_estimate_shares_the_exact_terms_and_weights_cover_the_chain(make_ddpm):
    T = 300
    ddpm = make_ddpm(image_size=8, num_classes=None, T=T)
    x0 = pixels(2, (1, 8, 8), 6)
    ts, weights = estimate_plan(T, exact_below=40, ratio=1.1)
    assert sum(weights) == T and ts[:40] == list(range(40)) and len(set(ts)) == len(ts)
    exact = vlb_terms(ddpm, x0, generator=torch.Generator().manual_seed(3))
    fast = vlb_estimate(ddpm, x0, exact_below=40, ratio=1.1, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(fast.terms[:, ts], exact.terms[:, ts], atol=1e-6)            # the same noise per t
    assert fast.terms[:, [t for t in range(T) if t not in ts]].isnan().all()
    assert fast.complete
    reweighted = exact.prior + (exact.terms[:, ts] * torch.tensor(weights, dtype=torch.float64)).sum(1)
    assert torch.allclose(fast.total, reweighted, atol=1e-6)
    assert estimate_plan(50)[0] == list(range(50))                                       # short chains: exact


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_estimate_within_one_percent_on_the_bundled_models(name):
    """The default estimate against all T terms of the same run (its terms are a subset of them: see the test
    above), on 2 bundled test images; the report's figures use 64."""
    from ddpm.data import to_unit_range
    from ddpm.pretrained import load_examples, load_pretrained
    ddpm = load_pretrained(name)
    images, _ = load_examples(name)
    x0 = to_unit_range(images[:2])
    exact = vlb_terms(ddpm, x0, generator=torch.Generator().manual_seed(0))
    ts, weights = estimate_plan(ddpm.T)
    estimate = exact.prior + (exact.terms[:, ts] * torch.tensor(weights, dtype=torch.float64)).sum(1)
    assert abs(float(estimate.mean() / exact.total.mean()) - 1) < 0.01
    assert exact.share_below(100) > 0.85                                               # where the bits are


def test_stop_and_progress(make_ddpm):
    ddpm = make_ddpm(image_size=8, num_classes=None, T=40)
    x0 = pixels(2, (1, 8, 8), 7)
    calls = []
    b = vlb_terms(ddpm, x0, progress=lambda done, total: calls.append((done, total)), stop=lambda: len(calls) >= 1)
    assert calls == [(40, 40)] and b.complete                   # stop() is asked before each batch of calls
    b = bounds(ddpm, x0, variances=("beta",), batch_size=20, progress=lambda d, n: calls.append((d, n)),
               stop=lambda: len(calls) >= 3)["beta"]
    assert calls[1:] == [(10, 40), (20, 40)] and not b.complete                     # 10 steps per call, from t = 39
    assert b.terms[:, 20:].isfinite().all() and b.terms[:, :20].isnan().all() and (b.weights[:20] == 0).all()


def test_bad_inputs_are_named(make_ddpm):
    ddpm = make_ddpm(image_size=8, num_classes=None, T=20)
    x0 = pixels(1, (1, 8, 8), 8)
    with pytest.raises(ValueError, match="variance"):
        vlb_terms(ddpm, x0, variance="learned")
    with pytest.raises(ValueError, match=r"\[0, 20\)"):
        vlb_terms(ddpm, x0, ts=[0, 20])
    with pytest.raises(ValueError, match="-1, 1"):
        vlb_terms(ddpm, x0 * 127.5 + 127.5)
    with pytest.raises(ValueError, match="shape"):
        vlb_terms(ddpm, x0[0])


def test_evaluate_nll_prints_both_variances_and_fills_the_card(make_ddpm, tmp_path, capsys):
    from safetensors.torch import save_file

    from ddpm.tools.cli import main
    ddpm = make_ddpm(image_size=28, num_classes=None, T=20)
    ddpm.save_pretrained(tmp_path)
    g = torch.Generator().manual_seed(0)
    save_file({"images": torch.randint(0, 256, (5, 28, 28), generator=g, dtype=torch.uint8),
               "labels": torch.arange(5)}, str(tmp_path / "examples.safetensors"))
    main(["evaluate", "--model", str(tmp_path), "--nll", "--n-nll", "2"])
    out = capsys.readouterr().out
    assert "| beta |" in out and "| beta_tilde |" in out and "40 network calls" in out
    card = (tmp_path / "README.md").read_text()
    assert "## Likelihood" in card and "| beta_tilde |" in card and "--n-nll 2" in card
    with pytest.raises(ValueError, match="--n-nll 9"):
        main(["evaluate", "--model", str(tmp_path), "--nll", "--n-nll", "9"])
