"""DPM-Solver++(2M) against diffusers' DPMSolverMultistepScheduler (algorithm_type="dpmsolver++", solver_order=2):
the same network, timesteps and start noise give the same x after every step, with and without guidance and
clipping; and the identities that make it a DDPM sampler (first order = DDIM with eta = 0)."""
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from ddpm import NoiseSchedule, ddim_step, dpmpp_2m_step, sample, sample_steps, timesteps
from ddpm.sampling import guided_eps

TOL = dict(atol=5e-5, rtol=1e-4)    # float64 scalars (ours) vs float32 (diffusers), accumulated over up to 20 steps


def diffusers_run(ddpm, x, y, steps, guidance, clip):
    """x after every step of diffusers' DPM-Solver++(2M) loop around ddpm's network (guidance as ours)."""
    s = ddpm.schedule
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=s.T, beta_schedule="linear", beta_start=float(s.betas[0]), beta_end=float(s.betas[-1]),
        algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing",
        thresholding=clip, sample_max_value=1.0)          # thresholding at max 1.0 is clipping x0_hat to [-1, 1]
    scheduler.set_timesteps(steps)
    xs = []
    with torch.inference_mode():
        for t in scheduler.timesteps:
            eps = guided_eps(ddpm, x, int(t), y, guidance)
            x = scheduler.step(eps, t, x).prev_sample
            xs.append(x)
    return scheduler.timesteps.tolist(), xs


@pytest.mark.parametrize("steps", [1, 2, 6, 10, 20])
@pytest.mark.parametrize("guidance, clip", [(1.0, False), (1.0, True), (3.0, True)])
def test_dpmpp_2m_matches_diffusers_step_for_step(make_ddpm, steps, guidance, clip):
    ddpm = make_ddpm(T=1000)
    x = torch.randn(4, *ddpm.sample_shape, generator=torch.Generator().manual_seed(0)) * 1.2
    y = torch.tensor([0, 3, 7, 9])
    ours = list(sample_steps(ddpm, x, y=y, sampler="dpmpp_2m", steps=steps, guidance_scale=guidance, clip_x0=clip))
    their_ts, theirs = diffusers_run(ddpm, x, y, steps, guidance, clip)
    assert [s.t for s in ours] == their_ts == [t for t, _ in timesteps("dpmpp_2m", 1000, steps)]
    assert len(ours) == len(theirs) == steps
    for step, expected in zip(ours, theirs, strict=True):
        torch.testing.assert_close(step.x_prev, expected, **TOL, msg=lambda m, s=step: f"step {s.i} (t = {s.t}): {m}")
    orders = [s.coefs["order"] for s in ours]
    assert orders == ([1] if steps == 1 else [1] + [2] * (steps - 2) + [1])   # lower order first and last


def test_first_order_step_is_ddim_with_eta_zero():
    schedule = NoiseSchedule("linear", 1000)
    x_t, eps = torch.randn(2, 1, 6, 6), torch.randn(2, 1, 6, 6)
    for clip in (True, False):
        a, a0, _ = dpmpp_2m_step(x_t, 999, 899, eps, schedule, clip_x0=clip)
        b, b0, _ = ddim_step(x_t, 999, 899, eps, schedule, eta=0.0, clip_x0=clip)
        torch.testing.assert_close(a0, b0)
        if not clip:                     # (clipped, DDIM re-derives eps from x0_hat; so does the exact solution)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_second_order_uses_the_previous_prediction():
    schedule = NoiseSchedule("linear", 1000)
    x_t, eps, before = torch.randn(2, 1, 6, 6), torch.randn(2, 1, 6, 6), torch.randn(2, 1, 6, 6)
    first, _, c1 = dpmpp_2m_step(x_t, 899, 799, eps, schedule, clip_x0=False)
    second, _, c2 = dpmpp_2m_step(x_t, 899, 799, eps, schedule, previous=(999, before), clip_x0=False)
    assert c1["order"] == 1 and c2["order"] == 2 and c2["r"] > 0
    assert not torch.allclose(first, second, atol=1e-3)
    last, x0_hat, c3 = dpmpp_2m_step(x_t, 99, -1, eps, schedule, previous=(199, before))
    assert torch.equal(last, x0_hat) and c3["order"] == 1                     # to the clean image: x0_hat


def test_sample_with_dpmpp_is_deterministic_and_checked(make_ddpm):
    ddpm = make_ddpm(T=100)
    a = sample(ddpm, 2, [1, 4], sampler="dpmpp_2m", steps=5, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    b = sample(ddpm, 2, [1, 4], sampler="dpmpp_2m", steps=5, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (4, 1, 28, 28) and a.abs().max() <= 1
    with pytest.raises(ValueError, match="dpmpp_2m steps must be an integer in \\[1, 100\\], got 0"):
        sample(ddpm, 1, sampler="dpmpp_2m", steps=0)
    with pytest.raises(ValueError, match="t = 5, t_prev = 5"):
        dpmpp_2m_step(torch.zeros(1, 1, 2, 2), 5, 5, torch.zeros(1, 1, 2, 2), ddpm.schedule)
