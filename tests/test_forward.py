"""The forward process q(x_t | x_0) (Eq. 4) and the posterior q(x_{t-1} | x_t, x_0) (Eqs. 6-7)."""
import pytest
import torch

from ddpm import NoiseSchedule, predict_x0_from_eps, q_posterior, sample_xt
from ddpm.schedule import make_betas

T = 100


@pytest.fixture
def schedule():
    return NoiseSchedule("linear", T)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 4, 4, generator=g) * 2 - 1
    eps = torch.randn(3, 1, 4, 4, generator=g)
    t = torch.tensor([0, 41, T - 1])
    return x0, t, eps


def test_sample_xt_exact_value(schedule, batch):
    x0, t, eps = batch
    x_t = sample_xt(x0, t, eps, schedule.alpha_bar)
    for i, ti in enumerate(t.tolist()):
        a = schedule.alpha_bar[ti]
        torch.testing.assert_close(x_t[i], a.sqrt() * x0[i] + (1 - a).sqrt() * eps[i])
    # a scalar t is broadcast to the whole batch
    torch.testing.assert_close(sample_xt(x0, 41, eps, schedule.alpha_bar), sample_xt(x0, torch.full((3,), 41), eps,
                                                                                     schedule.alpha_bar))


def test_sample_xt_draws_noise_from_generator(schedule, batch):
    x0, t, _ = batch
    a = sample_xt(x0, t, None, schedule.alpha_bar, generator=torch.Generator().manual_seed(7))
    b = sample_xt(x0, t, None, schedule.alpha_bar, generator=torch.Generator().manual_seed(7))
    c = sample_xt(x0, t, None, schedule.alpha_bar, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # the drawn noise is exactly randn of x0's shape from that generator
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, sample_xt(x0, t, eps, schedule.alpha_bar))


def test_sample_xt_moments(schedule):
    n, t = 20000, 30
    x0 = torch.linspace(-1, 1, 5).view(1, 1, 1, 5).expand(n, 1, 1, 5)
    x_t = sample_xt(x0, torch.full((n,), t), None, schedule.alpha_bar, generator=torch.Generator().manual_seed(0))
    a = schedule.alpha_bar[t]
    # standard errors: sqrt(1/n) ~ 0.007 for the mean, sqrt(2/n) ~ 0.01 (relative) for the variance
    torch.testing.assert_close(x_t.mean(0), a.sqrt() * x0[0], atol=0.03, rtol=0)
    torch.testing.assert_close(x_t.var(0), (1 - a).expand(1, 1, 5), atol=0, rtol=0.05)


@pytest.mark.parametrize("bad_t, shown", [([0, 1, T], str(T)), ([-1, 0, 3], "-1")])
def test_sample_xt_rejects_t_out_of_range(schedule, batch, bad_t, shown):
    x0, _, eps = batch
    with pytest.raises(ValueError, match=shown):
        sample_xt(x0, torch.tensor(bad_t), eps, schedule.alpha_bar)


def test_sample_xt_rejects_float_t(schedule, batch):
    x0, _, eps = batch
    with pytest.raises(ValueError, match="integer"):
        sample_xt(x0, torch.tensor([0.5, 1.0, 2.0]), eps, schedule.alpha_bar)


def test_sample_xt_rejects_mismatched_epsilon(schedule, batch):
    x0, t, _ = batch
    with pytest.raises(ValueError, match=r"\(3, 1, 4, 5\)"):
        sample_xt(x0, t, torch.zeros(3, 1, 4, 5), schedule.alpha_bar)


def test_sample_xt_rejects_wrong_number_of_steps(schedule, batch):
    x0, _, eps = batch
    with pytest.raises(ValueError, match="2 entries"):
        sample_xt(x0, torch.tensor([1, 2]), eps, schedule.alpha_bar)


def test_predict_x0_from_eps_inverts_sample_xt(schedule, batch):
    x0, t, eps = batch
    x_t = sample_xt(x0, t, eps, schedule.alpha_bar)
    # at t = T-1, sqrt(alpha_bar) ~ 0.2 amplifies the float32 rounding of x_t
    torch.testing.assert_close(predict_x0_from_eps(x_t, t, eps, schedule.alpha_bar), x0, atol=1e-5, rtol=1e-5)


def test_q_posterior_matches_eq7(schedule, batch):
    x0, t, eps = batch
    x_t = sample_xt(x0, t, eps, schedule.alpha_bar)
    mean, var = q_posterior(x0, x_t, t, schedule)
    # reference in float64 from the betas (float32 alpha_bar would lose 1 - alpha_bar_0 = beta_0 to cancellation)
    betas = make_betas("linear", T)
    alpha_bar = torch.cumprod(1 - betas, 0)
    for i, ti in enumerate(t.tolist()):
        beta, a_bar = betas[ti], alpha_bar[ti]
        a_prev = alpha_bar[ti - 1] if ti > 0 else torch.tensor(1.0, dtype=torch.float64)
        coef1 = a_prev.sqrt() * beta / (1 - a_bar)                        # Eq. (7)
        coef2 = (1 - beta).sqrt() * (1 - a_prev) / (1 - a_bar)
        torch.testing.assert_close(mean[i].double(), coef1 * x0[i].double() + coef2 * x_t[i].double(),
                                   atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(var[i].flatten()[0].double(), (1 - a_prev) / (1 - a_bar) * beta,
                                   atol=1e-9, rtol=1e-5)
    # t = 0: the posterior collapses onto x0 with zero variance
    assert var[0].item() == 0.0
    torch.testing.assert_close(mean[0], x0[0])


def test_q_posterior_mean_is_alg2_mean_for_true_eps(schedule, batch):
    """tilde(mu)_t(x0, x_t) = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) when x_t = q(x0, eps)."""
    x0, t, eps = batch
    x_t = sample_xt(x0, t, eps, schedule.alpha_bar)
    mean, _ = q_posterior(x0, x_t, t, schedule)
    alpha = schedule.alphas[t].view(-1, 1, 1, 1)
    beta = schedule.betas[t].view(-1, 1, 1, 1)
    a_bar = schedule.alpha_bar[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(mean, (x_t - beta / (1 - a_bar).sqrt() * eps) / alpha.sqrt(), atol=1e-5, rtol=1e-5)
