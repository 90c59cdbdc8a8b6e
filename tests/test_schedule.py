"""Noise schedules: the time-index convention, and the buffers against diffusers' DDPMScheduler."""
import pytest
import torch
from diffusers import DDPMScheduler

from ddpm import NoiseSchedule
from ddpm.schedule import check_t

# diffusers builds its buffers in float32; ours are computed in float64 and stored as float32
TOL = dict(rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
@pytest.mark.parametrize("T", [2, 10, 50, 1000])
def test_alpha_bar_strictly_decreasing_in_open_unit_interval(name, T):
    s = NoiseSchedule(name, T)
    assert s.alpha_bar.shape == (T,)
    assert torch.all(s.alpha_bar > 0) and torch.all(s.alpha_bar < 1)
    assert torch.all(s.alpha_bar[1:] < s.alpha_bar[:-1])
    assert torch.all((s.betas > 0) & (s.betas < 1))


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_alpha_bar_prev_convention(name):
    s = NoiseSchedule(name, 100)
    assert s.alpha_bar_prev[0] == 1.0                          # x_{-1} is the clean image
    assert torch.equal(s.alpha_bar_prev[1:], s.alpha_bar[:-1])
    assert s.posterior_variance[0] == 0.0                      # no noise at the last reverse step
    assert torch.allclose(torch.cumprod(s.alphas.double(), 0).float(), s.alpha_bar, rtol=1e-6)


def _diffusers_posterior_variance(sched):
    return torch.stack([sched._get_variance(t, variance_type="fixed_small") for t in range(len(sched.betas))])


@pytest.mark.parametrize("ours, theirs", [("linear", "linear"), ("cosine", "squaredcos_cap_v2"),
                                          ("sigmoid", "sigmoid")])
@pytest.mark.parametrize("T", [50, 1000])
def test_buffers_match_diffusers(ours, theirs, T):
    s = NoiseSchedule(ours, T)
    ref = DDPMScheduler(num_train_timesteps=T, beta_schedule=theirs, beta_start=1e-4, beta_end=0.02)
    torch.testing.assert_close(s.betas, ref.betas, **TOL)
    torch.testing.assert_close(s.alphas, ref.alphas, **TOL)
    torch.testing.assert_close(s.alpha_bar, ref.alphas_cumprod, **TOL)
    # diffusers recovers beta_t as 1 - alpha_bar_t / alpha_bar_{t-1} in float32 (cancellation: ~1e-7 absolute
    # error) and clamps the variance to >= 1e-20; ours is computed in float64 and is exactly 0 at t = 0
    torch.testing.assert_close(s.posterior_variance, _diffusers_posterior_variance(ref), rtol=1e-3, atol=2e-7)


def test_at_gives_the_buffers_as_python_floats():
    s = NoiseSchedule("linear", 100)
    for t in (0, 37, 99):
        beta, alpha, alpha_bar, alpha_bar_prev = s.at(t)
        assert all(type(v) is float for v in s.at(t))
        torch.testing.assert_close(torch.tensor([beta, alpha, alpha_bar, alpha_bar_prev], dtype=torch.float32),
                                   torch.stack([s.betas[t], s.alphas[t], s.alpha_bar[t], s.alpha_bar_prev[t]]))
    assert s.at(-1).alpha_bar == 1.0 and s.at(0).alpha_bar_prev == 1.0   # the clean image, t = -1
    for bad in (100, -2, 3.5):
        with pytest.raises(ValueError, match=repr(bad)):
            s.at(bad)


def test_unknown_schedule_names_the_value():
    with pytest.raises(ValueError, match="'quadratic'.*linear"):
        NoiseSchedule("quadratic", 100)


@pytest.mark.parametrize("T", [1, 0, -5, 2.5])
def test_too_few_steps_names_the_value(T):
    with pytest.raises(ValueError, match=f"got {T}"):
        NoiseSchedule("linear", T)


def test_check_t():
    check_t(torch.tensor([0, 9]), 10)
    for bad, shown in ((torch.tensor([3, 10]), "10"), (torch.tensor([-1]), "-1")):
        with pytest.raises(ValueError, match=shown):
            check_t(bad, 10)
    with pytest.raises(ValueError, match="integer"):
        check_t(torch.tensor([1.5]), 10)


@pytest.mark.parametrize("kwargs, shown", [(dict(beta_end=1.5), "beta_end = 1.5"), (dict(beta_start=0.0), "beta_start = 0.0"),
                                           (dict(beta_start=-0.1), "beta_start = -0.1")])
def test_betas_outside_zero_one_name_the_value(kwargs, shown):
    with pytest.raises(ValueError, match=f"{shown}.*every beta must lie in \\(0, 1\\)"):
        NoiseSchedule("linear", 100, **kwargs)
