"""Reverse process: one DDPM / DDIM step against diffusers, Alg. 2 identities, guidance, and `sample`."""
import diffusers.schedulers.scheduling_ddpm as diffusers_ddpm
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from ddpm import NoiseSchedule, ddim_step, ddpm_step, q_posterior, sample, sample_steps, sample_xt, timesteps
from ddpm.sampling import SAMPLERS, Sampler, get_sampler, guided_eps
from ddpm.schedule import make_betas

T = 1000
SHAPE = (2, 1, 6, 6)
TOL = dict(atol=2e-5, rtol=1e-4)    # float32 buffers built in float64 (ours) vs in float32 (diffusers)


def _randn(seed, shape=SHAPE, scale=1.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


# ---------------------------------------------------------------------------------------------
# One step against diffusers
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [0, 1, 500, T - 1])
@pytest.mark.parametrize("variance, variance_type", [("beta", "fixed_large"), ("beta_tilde", "fixed_small")])
@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_step_matches_diffusers(monkeypatch, t, variance, variance_type, clip):
    schedule = NoiseSchedule("linear", T)
    ref = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", variance_type=variance_type,
                        clip_sample=clip, clip_sample_range=1.0)
    # scaled up so that x0_hat leaves [-1, 1] and clipping changes the result
    x_t, eps, z = _randn(0, scale=1.5), _randn(1), _randn(2)
    # DDPMScheduler.step draws its noise with diffusers' randn_tensor; hand it the same z we pass in
    monkeypatch.setattr(diffusers_ddpm, "randn_tensor", lambda shape, **kwargs: z.clone())
    expected = ref.step(eps, t, x_t)
    x_prev, x0_hat, coefs = ddpm_step(x_t, t, eps, schedule, noise=z, clip_x0=clip, variance=variance)
    torch.testing.assert_close(x0_hat, expected.pred_original_sample, **TOL)
    torch.testing.assert_close(x_prev, expected.prev_sample, **TOL)
    if clip:
        assert x0_hat.abs().max() <= 1.0
    if t == 0:
        assert coefs["sigma_t"] == 0.0


def test_ddpm_step_clipping_matters():
    """Guard for the test above: with these inputs clipping really changes x_{t-1}."""
    schedule = NoiseSchedule("linear", T)
    x_t, eps, z = _randn(0, scale=1.5), _randn(1), _randn(2)
    a, _, _ = ddpm_step(x_t, 500, eps, schedule, noise=z, clip_x0=True)
    b, _, _ = ddpm_step(x_t, 500, eps, schedule, noise=z, clip_x0=False)
    assert not torch.allclose(a, b, atol=1e-3)


@pytest.mark.parametrize("t", [1, 250, T - 1])
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_step_equals_alg2_line4_without_clipping(t, variance):
    schedule = NoiseSchedule("linear", T)
    x_t, eps, z = _randn(0), _randn(1), _randn(2)
    x_prev, _, coefs = ddpm_step(x_t, t, eps, schedule, noise=z, clip_x0=False, variance=variance)
    alpha, beta, a_bar = schedule.alphas[t], schedule.betas[t], schedule.alpha_bar[t]
    sigma = (beta if variance == "beta" else schedule.posterior_variance[t]).sqrt()     # Sec. 3.2: both choices
    alg2 = 1 / alpha.sqrt() * (x_t - beta / (1 - a_bar).sqrt() * eps) + sigma * z      # Alg. 2, line 4
    torch.testing.assert_close(x_prev, alg2, **TOL)
    # the step's scalars come from the float64 schedule (the float32 buffers lose digits in 1 - alpha_bar_t near t = 0)
    beta64 = make_betas("linear", T)
    a_bar64 = torch.cumprod(1 - beta64, 0)
    assert coefs["1/sqrt(alpha_t)"] == pytest.approx(float(1 / (1 - beta64[t]).sqrt()), rel=1e-12)
    assert coefs["beta_t/sqrt(1-alpha_bar_t)"] == pytest.approx(float(beta64[t] / (1 - a_bar64[t]).sqrt()), rel=1e-12)
    assert coefs["sigma_t"] == pytest.approx(float(sigma), rel=1e-5)


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("step_index", [0, 25, 49])      # 49: the last step, to t_prev = -1
def test_ddim_step_matches_diffusers(eta, clip, step_index):
    schedule = NoiseSchedule("linear", T)
    ref = DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", timestep_spacing="trailing",
                        set_alpha_to_one=True, clip_sample=clip, clip_sample_range=1.0)
    ref.set_timesteps(50)
    t, t_prev = timesteps("ddim", T, 50)[step_index]
    assert t == int(ref.timesteps[step_index])
    x_t, eps, z = _randn(0, scale=1.5), _randn(1), _randn(2)
    # our DDIM re-derives eps from the clipped x0_hat: diffusers' use_clipped_model_output=True
    expected = ref.step(eps, t, x_t, eta=eta, variance_noise=z, use_clipped_model_output=True)
    x_prev, x0_hat, coefs = ddim_step(x_t, t, t_prev, eps, schedule, eta=eta, noise=z, clip_x0=clip)
    torch.testing.assert_close(x0_hat, expected.pred_original_sample, **TOL)
    torch.testing.assert_close(x_prev, expected.prev_sample, **TOL)
    if eta == 0:
        assert coefs["sigma_t"] == 0.0


def test_ddim_last_step_lands_on_x0_hat():
    """At t_prev = -1, alpha_bar_prev = 1 and sigma = 0: x_{-1} is the (clipped) x0 prediction itself."""
    schedule = NoiseSchedule("linear", T)
    x_t, eps = _randn(0), _randn(1)
    x_prev, x0_hat, coefs = ddim_step(x_t, 19, -1, eps, schedule, eta=1.0, noise=_randn(2))
    torch.testing.assert_close(x_prev, x0_hat)
    assert coefs["sigma_t"] == 0.0


def test_ddim_timesteps():
    pairs = timesteps("ddim", 1000, 50)
    assert len(pairs) == 50
    assert pairs[0] == (999, 979)
    assert pairs[-1] == (19, -1)
    assert all(t_prev == t - 20 for t, t_prev in pairs[:-1])


@pytest.mark.parametrize("T_, steps", [(1000, 50), (1000, 30), (50, 7), (100, 100), (10, 1)])
def test_ddim_timesteps_match_diffusers_trailing(T_, steps):
    ref = DDIMScheduler(num_train_timesteps=T_, timestep_spacing="trailing")
    ref.set_timesteps(steps)
    pairs = timesteps("ddim", T_, steps)
    assert [t for t, _ in pairs] == ref.timesteps.tolist()
    assert [t_prev for _, t_prev in pairs] == ref.timesteps.tolist()[1:] + [-1]


def test_ddpm_timesteps_cover_every_step():
    pairs = timesteps("ddpm", 50)
    assert [t for t, _ in pairs] == list(range(49, -1, -1))
    assert [t_prev for _, t_prev in pairs] == list(range(48, -2, -1))


@pytest.mark.parametrize("steps", [0, 51, 2.0])
def test_ddim_timesteps_reject_bad_step_count(steps):
    with pytest.raises(ValueError, match=f"got {steps!r}"):
        timesteps("ddim", 50, steps)


def test_timesteps_reject_unknown_sampler():
    with pytest.raises(ValueError, match="'euler'"):
        timesteps("euler", 50)


def test_timesteps_errors_name_the_choices_from_the_table(monkeypatch):
    with pytest.raises(ValueError, match=r"'euler'; choose one of \['ddpm', 'ddim', 'dpmpp_2m'\]"):
        timesteps("euler", 50)
    with pytest.raises(ValueError, match=r"all T = 50 steps, got steps=10; for fewer steps use one of \['ddim', 'dpmpp_2m'\]"):
        timesteps("ddpm", 50, 10)
    monkeypatch.setitem(SAMPLERS, "plain", _plain_row())
    with pytest.raises(ValueError, match=r"use one of \['ddim', 'dpmpp_2m', 'plain'\]"):
        timesteps("ddpm", 50, 10)


def _plain_step(x_t, t, t_prev, eps, schedule, *, clip_x0, **_):
    """DDIM with eta = 0 and no clipping, written anew: x_{t_prev} = sqrt(a_prev) x0_hat + sqrt(1 - a_prev) eps."""
    alpha_bar, a_prev = schedule.at(t).alpha_bar, schedule.at(t_prev).alpha_bar
    x0_hat = (x_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar ** 0.5
    return a_prev ** 0.5 * x0_hat + (1 - a_prev) ** 0.5 * eps, x0_hat, {"sqrt(alpha_bar_prev)": a_prev ** 0.5}


def _plain_row():
    return Sampler("plain", label="Plain (a test's sampler)", short="Plain", all_steps=False, uses_eta=False,
                   step=_plain_step, draws_noise=lambda t, eta: False, deterministic=lambda eta: True)


def test_a_new_sampler_is_one_step_function_and_one_row(make_ddpm, monkeypatch):
    """A row plugged into SAMPLERS runs through `sample` and `sample_steps` with no other edit: here DDIM with
    eta = 0 written anew gives DDIM's images (unclipped, where the two formulas agree)."""
    monkeypatch.setitem(SAMPLERS, "plain", _plain_row())
    ddpm, steps = make_ddpm(T=50), []
    kw = dict(steps=5, guidance_scale=2.0, clip_x0=False)
    new = sample(ddpm, 2, [1, 4], sampler="plain", generator=torch.Generator().manual_seed(0), callback=steps.append, **kw)
    ddim = sample(ddpm, 2, [1, 4], sampler="ddim", generator=torch.Generator().manual_seed(0), **kw)
    torch.testing.assert_close(new, ddim, rtol=1e-5, atol=1e-5)
    assert [(s.t, s.t_prev) for s in steps] == timesteps("plain", 50, 5) == timesteps("ddim", 50, 5)
    assert list(steps[0].coefs) == ["sqrt(alpha_bar_prev)"] and get_sampler("plain").title(5, 50) == "Plain-5"


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_row_is_deterministic_exactly_when_no_step_draws_noise(name):
    row = get_sampler(name)
    for eta in (0.0, 0.5, 1.0):
        draws = any(row.draws_noise(t, eta) for t, _ in timesteps(name, 20, None if row.all_steps else 5))
        assert row.deterministic(eta) == (not draws)


# ---------------------------------------------------------------------------------------------
# An oracle network that knows x0
# ---------------------------------------------------------------------------------------------

def _oracle(ddpm, x0_of):
    """An eps model that returns the exact noise: eps = (x_t - sqrt(alpha_bar_t) x0) / sqrt(1 - alpha_bar_t)."""

    def eps(x_t, t, y=None):
        a = ddpm.schedule.alpha_bar[t].view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * x0_of(x_t, y)) / (1 - a).sqrt()

    return eps


def test_oracle_network_has_zero_loss(make_ddpm, monkeypatch):
    ddpm = make_ddpm(T=50)
    x0 = _randn(3, (4, 1, 28, 28)).clamp(-1, 1)
    monkeypatch.setattr(ddpm, "eps", _oracle(ddpm, lambda x_t, y: x0))
    loss = ddpm.loss(x0, torch.tensor([0, 1, 2, 3]), generator=torch.Generator().manual_seed(0))
    assert loss.item() < 1e-8


def test_reverse_step_with_true_eps_is_posterior_mean():
    schedule = NoiseSchedule("linear", T)
    x0, eps = _randn(0).clamp(-1, 1), _randn(1)
    for t in (1, 300, T - 1):
        x_t = sample_xt(x0, torch.full((SHAPE[0],), t), eps, schedule.alpha_bar)
        x_prev, x0_hat, _ = ddpm_step(x_t, t, eps, schedule, noise=torch.zeros(SHAPE), clip_x0=False)
        mean, _ = q_posterior(x0, x_t, t, schedule)
        torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(x_prev, mean, atol=1e-4, rtol=1e-4)


def test_sample_groups_classes_in_order_given(make_ddpm, monkeypatch):
    """An oracle whose clean image is the constant y / 10 shows which class each output belongs to."""
    ddpm = make_ddpm(T=50)
    seen = []

    def x0_of(x_t, y):
        seen.append(y.clone())
        return (y.float() / 10).view(-1, 1, 1, 1).expand_as(x_t)

    monkeypatch.setattr(ddpm, "eps", _oracle(ddpm, x0_of))
    x = sample(ddpm, 2, classes=[3, 1], generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 1, 28, 28)
    assert len(seen) == 50                                         # one network call per DDPM step
    assert all(y.tolist() == [3, 3, 1, 1] for y in seen)
    torch.testing.assert_close(x.mean(dim=(1, 2, 3)), torch.tensor([0.3, 0.3, 0.1, 0.1]), atol=1e-4, rtol=0)


def test_sample_is_deterministic_with_generator(make_ddpm):
    ddpm = make_ddpm(T=50)
    kw = dict(sampler="ddim", steps=5, eta=1.0)
    a = sample(ddpm, 2, classes=[3, 1], generator=torch.Generator().manual_seed(0), **kw)
    b = sample(ddpm, 2, classes=[3, 1], generator=torch.Generator().manual_seed(0), **kw)
    c = sample(ddpm, 2, classes=[3, 1], generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.min() >= -1 and a.max() <= 1


def test_sample_calls_back_with_every_step_and_samples_the_same(make_ddpm):
    ddpm, seen = make_ddpm(T=20), []
    kw = dict(sampler="ddim", steps=5, guidance_scale=2.0)
    a = sample(ddpm, 2, [3, 1], generator=torch.Generator().manual_seed(4), callback=seen.append, **kw)
    b = sample(ddpm, 2, [3, 1], generator=torch.Generator().manual_seed(4), **kw)
    assert [s.i for s in seen] == [0, 1, 2, 3, 4] and [s.t for s in seen] == [t for t, _ in timesteps("ddim", 20, 5)]
    torch.testing.assert_close(seen[-1].x_prev.clamp(-1, 1), a, rtol=0, atol=0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sample_ddpm_runs_all_steps(make_ddpm, monkeypatch):
    ddpm = make_ddpm(T=20, num_classes=None)
    calls = []
    real_eps = ddpm.eps
    monkeypatch.setattr(ddpm, "eps", lambda x_t, t, y=None: calls.append(int(t[0])) or real_eps(x_t, t, y))
    x = sample(ddpm, 3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 28, 28)
    assert calls == list(range(19, -1, -1))


# ---------------------------------------------------------------------------------------------
# Classifier-free guidance
# ---------------------------------------------------------------------------------------------

def _guidance_inputs():
    return _randn(0, (3, 1, 28, 28)), 17, torch.tensor([0, 4, 9])


def test_guidance_scale_one_is_plain_conditional(make_ddpm):
    ddpm = make_ddpm()
    x_t, t, y = _guidance_inputs()
    with torch.no_grad():
        guided = guided_eps(ddpm, x_t, t, y, guidance_scale=1.0)
        plain = ddpm.eps(x_t, torch.full((3,), t), y)
    assert torch.equal(guided, plain)


@pytest.mark.parametrize("s", [0.0, 3.0])
def test_guidance_formula_against_two_passes(make_ddpm, s):
    ddpm = make_ddpm()
    x_t, t, y = _guidance_inputs()
    t_batch = torch.full((3,), t)
    with torch.no_grad():
        guided = guided_eps(ddpm, x_t, t, y, guidance_scale=s)
        eps_c = ddpm.eps(x_t, t_batch, y)
        eps_u = ddpm.eps(x_t, t_batch, None)                   # None = the null class
        assert not torch.allclose(eps_c, eps_u, atol=1e-4)     # the class really changes the prediction
        torch.testing.assert_close(guided, eps_u + s * (eps_c - eps_u), atol=1e-5, rtol=1e-4)


def test_unconditional_eps_uses_null_class(make_ddpm):
    ddpm = make_ddpm()
    x_t, t, _ = _guidance_inputs()
    t_batch = torch.full((3,), t)
    with torch.no_grad():
        assert torch.equal(ddpm.eps(x_t, t_batch, None), ddpm.eps(x_t, t_batch, torch.full((3,), ddpm.null_class)))


# ---------------------------------------------------------------------------------------------
# The step generator
# ---------------------------------------------------------------------------------------------

def test_sample_steps_yields_chained_steps(make_ddpm):
    ddpm = make_ddpm(T=50)
    x = _randn(0, (2, 1, 28, 28))
    steps = list(sample_steps(ddpm, x, y=torch.tensor([1, 2]), sampler="ddim", steps=5,
                              generator=torch.Generator().manual_seed(0)))
    assert len(steps) == 5
    assert [s.i for s in steps] == list(range(5))
    assert all(s.n_steps == 5 for s in steps)
    assert [s.t for s in steps] == [49, 39, 29, 19, 9]
    assert [s.t_prev for s in steps] == [39, 29, 19, 9, -1]
    assert torch.equal(steps[0].x_t, x)
    for prev, nxt in zip(steps, steps[1:], strict=False):
        assert torch.equal(prev.x_prev, nxt.x_t)
    for s in steps:
        assert s.x0_hat.shape == s.eps_hat.shape == x.shape
        assert set(s.coefs) >= {"sigma_t"}


def test_sample_steps_t_start_runs_t_start_plus_one_steps(make_ddpm):
    ddpm = make_ddpm(T=50)
    x = _randn(0, (1, 1, 28, 28))
    steps = list(sample_steps(ddpm, x, t_start=9, generator=torch.Generator().manual_seed(0)))
    assert len(steps) == 10
    assert [s.t for s in steps] == list(range(9, -1, -1))


@pytest.mark.parametrize("t_start", [-1, 50])
def test_sample_steps_rejects_t_start_out_of_range(make_ddpm, t_start):
    ddpm = make_ddpm(T=50)
    with pytest.raises(ValueError, match=f"got {t_start}"):
        next(sample_steps(ddpm, _randn(0, (1, 1, 28, 28)), t_start=t_start))


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, -2])
def test_sample_rejects_bad_n_samples(make_ddpm, n):
    with pytest.raises(ValueError, match=f"got {n}"):
        sample(make_ddpm(), n)


@pytest.mark.parametrize("classes, shown", [([3, 10], r"\[10\]"), ([-1], r"\[-1\]")])
def test_sample_rejects_unknown_class(make_ddpm, classes, shown):
    with pytest.raises(ValueError, match=shown):
        sample(make_ddpm(), 1, classes=classes)


def test_sample_rejects_classes_for_unconditional_model(make_ddpm):
    with pytest.raises(ValueError, match="unconditional"):
        sample(make_ddpm(num_classes=None), 1, classes=[0])


def test_sample_steps_rejects_wrong_image_shape(make_ddpm):
    with pytest.raises(ValueError, match=r"\(1, 1, 32, 32\)"):
        next(sample_steps(make_ddpm(), torch.zeros(1, 1, 32, 32)))


def test_sample_rejects_unknown_sampler(make_ddpm):
    with pytest.raises(ValueError, match="'euler'"):
        sample(make_ddpm(), 1, sampler="euler")


@pytest.mark.parametrize("steps", [0, 51])
def test_sample_rejects_ddim_steps_out_of_range(make_ddpm, steps):
    with pytest.raises(ValueError, match=f"got {steps}"):
        sample(make_ddpm(T=50), 1, sampler="ddim", steps=steps)


@pytest.mark.parametrize("kwargs, shown", [(dict(guidance_scale=-1.0), "-1.0"), (dict(eta=-0.5), "-0.5")])
def test_sample_steps_rejects_negative_scalars(make_ddpm, kwargs, shown):
    with pytest.raises(ValueError, match=shown):
        next(sample_steps(make_ddpm(), torch.zeros(1, 1, 28, 28), **kwargs))


def test_class_weights_mix_the_class_embeddings(make_ddpm):
    """y may be class weights [B, K + 1]: one-hot rows are the labels themselves, a 50/50 row is neither class."""
    import torch.nn.functional as F
    ddpm = make_ddpm(T=20)
    x_t = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([3, 8])
    with torch.no_grad():
        hard = guided_eps(ddpm, x_t, 10, y, 3.0)
        torch.testing.assert_close(guided_eps(ddpm, x_t, 10, F.one_hot(y, 11).float(), 3.0), hard)
        half = 0.5 * F.one_hot(torch.tensor([3, 3]), 11).float() + 0.5 * F.one_hot(torch.tensor([8, 8]), 11).float()
        mixed = guided_eps(ddpm, x_t, 10, half, 3.0)
    assert not torch.allclose(mixed, hard, atol=1e-4)
    with pytest.raises(ValueError, match="class weights must be \\[B, 11\\]"):
        ddpm.check_classes(torch.full((2, 11), 0.5))
