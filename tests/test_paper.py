"""The paper's figures and the lenses (ddpm/eval/paper.py, spectral.py, ideal.py, flow.py) on tiny models."""
import math

import numpy as np
import pytest
import torch

from ddpm import sample
from ddpm.eval.flow import flow_vs_ddim, straightness
from ddpm.eval.ideal import ideal_model, x0_hat_gap
from ddpm.eval.judge import Judge
from ddpm.eval.likelihood import vlb_terms
from ddpm.eval.paper import commitment, progressive_strip, rate_distortion, wilson
from ddpm.eval.spectral import (band_index, band_snr, crossings, crossings_per_schedule, radial_power, settling,
                                spearman, spectra)


def pixels(n, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g).float() / 127.5 - 1


# --- Figure 5 ---------------------------------------------------------------------------------------------------------
def test_rate_distortion_adds_the_terms_from_the_top(make_ddpm):
    ddpm = make_ddpm(image_size=8, num_classes=None, T=40)
    x0 = pixels(3, (1, 8, 8), 0)
    bound = vlb_terms(ddpm, x0, generator=torch.Generator().manual_seed(1))
    rd = rate_distortion(bound)
    assert list(rd.t) == list(range(39, -1, -1))
    assert rd.rate[0] == pytest.approx(bound.prior.mean().item())                 # x_T: only L_T paid
    assert (np.diff(rd.rate) >= 0).all()                                          # bits only accumulate
    assert rd.rate[-1] + bound.terms[:, 0].mean().item() == pytest.approx(rd.total)   # then L_0: the whole bound
    assert rd.total == pytest.approx(bound.total.mean().item())
    assert rd.distortion[-1] == pytest.approx(127.5 * bound.x0_mse[:, 0].mean().sqrt().item())
    one = rate_distortion(bound, image=1)
    assert one.total == pytest.approx(bound.total[1].item())


def test_progressive_strip_shows_the_x0_hat_the_bound_measured(make_ddpm):
    ddpm = make_ddpm(image_size=8, num_classes=None, T=40)
    x0 = pixels(3, (1, 8, 8), 2)
    bound = vlb_terms(ddpm, x0, generator=torch.Generator().manual_seed(3))
    images, ts, rates, rmse = progressive_strip(ddpm, x0, bound, image=2, fractions=(0.1, 0.5, 0.9, 1.0))
    assert images.shape == (4, 1, 8, 8) and list(ts) == sorted(ts, reverse=True)
    total = bound.total[2].item()
    assert all(r >= f * total - 1e-9 or t == 0 for r, f, t in zip(rates, (0.1, 0.5, 0.9, 1.0), ts, strict=True))
    assert ts[-1] == 0 and rates[-1] < total                                    # L_0 is never part of a prefix
    for image, t, r in zip(images, ts, rmse, strict=True):                       # the same x_t as the bound's
        assert 127.5 * ((image - x0[2]) ** 2).mean().sqrt().item() == pytest.approx(r, rel=1e-4, abs=1e-3)
        assert r == pytest.approx(127.5 * math.sqrt(bound.x0_mse[2, t].item()), rel=1e-4, abs=1e-3)


def test_rate_distortion_refuses_an_estimate(make_ddpm):
    ddpm = make_ddpm(image_size=8, num_classes=None, T=40)
    partial = vlb_terms(ddpm, pixels(1, (1, 8, 8), 0), ts=[0, 5])
    with pytest.raises(ValueError, match="every term"):
        rate_distortion(partial)


# --- Figure 7 ---------------------------------------------------------------------------------------------------------
def test_wilson_interval():
    low, high = wilson(8, 8)
    assert low == pytest.approx(0.6756, abs=1e-3) and high == pytest.approx(1.0)
    low, high = wilson(4, 8)
    assert low < 0.5 < high and high - 0.5 == pytest.approx(0.5 - low)
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("y, scale", [(None, 1.0), (3, 2.0)])
def test_commitment_branches_from_the_frozen_trunk(make_ddpm, y, scale):
    ddpm = make_ddpm(image_size=28, num_classes=10, T=100)
    torch.manual_seed(0)
    judge = Judge(1, 10, 28).eval()
    c = commitment(ddpm, judge, ts=(90, 50, 10), K=4, y=y, guidance_scale=scale, trunk_steps=20, branch_steps=5,
                   generator=torch.Generator().manual_seed(0))
    assert c.ts == [89, 49, 9]                                                    # the trunk's grid: 99, 94, ...
    assert c.branches.shape == (3, 4, 1, 28, 28) and c.frozen.shape == (3, 1, 28, 28)
    assert ((c.agreement >= 0) & (c.agreement <= 1)).all()
    assert (c.low <= c.agreement).all() and (c.agreement <= c.high).all()
    assert c.committed_t is None or c.agreement[c.ts.index(c.committed_t):].min() >= 0.5
    assert c.chance == pytest.approx(0.1)


# --- the spectral lens --------------------------------------------------------------------------------------------------
def test_radial_power_of_white_noise_is_flat_and_of_a_constant_is_the_mean():
    noise = torch.randn(400, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    p = radial_power(noise)
    assert len(p) == int(band_index(16, 16).max()) + 1 == 12                      # radius up to 8 sqrt(2)
    assert np.allclose(p, 1, atol=0.1)
    flat = radial_power(torch.full((2, 1, 16, 16), 0.5))
    assert flat[0] == pytest.approx(0.25 * 256) and np.allclose(flat[1:], 0)     # all power at frequency 0
    x = pixels(3, (1, 16, 16), 1)                                                # Parseval, band by band
    counts = torch.bincount(band_index(16, 16).flatten()).numpy()
    assert (radial_power(x) * counts).sum() == pytest.approx((x.double() ** 2).sum(dim=(1, 2, 3)).mean().item())


def test_band_snr_crosses_one_where_the_schedule_says():
    power = np.array([100.0, 10.0, 1.0, 0.1])
    T = 1000
    ab = crossings_per_schedule(power, T)
    for name, cross in ab.items():
        assert (np.diff(cross) <= 0).all(), name                                 # finer bands drown earlier
    from ddpm.schedule import NoiseSchedule
    alpha_bar = NoiseSchedule("linear", T).alpha_bar.double().numpy()
    snr = band_snr(power, alpha_bar)
    cross = crossings(power, alpha_bar)
    for b, t in enumerate(cross):
        assert snr[t, b] >= 1 and (t == T - 1 or snr[t + 1, b] < 1)
    s = spectra(pixels(4, (1, 8, 8), 0), 0.5, generator=torch.Generator().manual_seed(0))
    assert set(s) == {"x0", "noise", "x_t"} and len(s["x_t"]) == len(s["x0"])


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 1, 2, 2]) == pytest.approx(0.894, abs=1e-3)


def test_settling_on_a_tiny_model(make_ddpm):
    ddpm = make_ddpm(image_size=8, num_classes=None, T=100)
    s = settling(ddpm, pixels(20, (1, 8, 8), 0), n=3, steps=10, generator=torch.Generator().manual_seed(0))
    assert s.error.shape == (10, len(s.settled_t)) and s.ts[0] == 99 and s.ts[-1] == 9
    assert np.allclose(s.error[-1], 0, atol=1e-6)                                 # DDIM's last x0_hat is the sample
    assert ((s.settled_t >= 9) & (s.settled_t <= 99)).all() and -1 <= s.rho <= 1


# --- the ideal denoiser -----------------------------------------------------------------------------------------------
def test_ideal_x0_hat_is_the_softmax_average(make_ddpm):
    like = make_ddpm(image_size=8, num_classes=3, T=100)
    train = pixels(6, (1, 8, 8), 0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    ideal = ideal_model(train, labels, like=like)
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(4, 1, 8, 8, generator=g)
    t = torch.tensor([0, 10, 50, 99])
    y = torch.tensor([3, 0, 2, 3])                                               # 3: the null class, all images
    got = ideal.net.x0_hat(x_t, t, y)
    ab = ideal.net.alpha_bar                      # float64 from the betas (1 - a float32 alpha_bar_0 keeps 3 digits)
    for b in range(4):
        a = ab[t[b]]
        allowed = [i for i in range(6) if y[b] == 3 or labels[i] == y[b]]
        logits = torch.tensor([-((x_t[b].double() - a.sqrt() * train[i].double()) ** 2).sum() / (2 * (1 - a))
                               for i in allowed], dtype=torch.float64)
        w = torch.exp(logits - logits.max())
        brute = sum(w_i * train[i].double() for w_i, i in zip(w / w.sum(), allowed, strict=True))
        assert torch.allclose(got[b], brute, atol=1e-10)
    eps, a = ideal.eps(x_t, t, y).double(), ab[t].view(-1, 1, 1, 1)
    assert torch.allclose((x_t - (1 - a).sqrt() * eps) / a.sqrt(), got, atol=1e-4)       # Eq. (15) inverts it


def test_ideal_model_samples_copies_of_its_training_images(make_ddpm):
    like = make_ddpm(image_size=8, num_classes=None, T=200)
    train = pixels(5, (1, 8, 8), 3)
    ideal = ideal_model(train, like=like)
    x = sample(ideal, 4, sampler="ddim", steps=50, generator=torch.Generator().manual_seed(0))
    nearest = torch.cdist(x.flatten(1), train.flatten(1)).min(1).values
    assert (nearest < 1e-3).all()
    with pytest.raises(ValueError):
        ideal.save_pretrained("/nonexistent")
    gap = x0_hat_gap(like, ideal, pixels(2, (1, 8, 8), 9), ts=(0, 100, 199), generator=torch.Generator().manual_seed(0))
    assert set(gap) == {"net_vs_ideal", "net", "ideal"} and len(gap["net"]) == 3


# --- DDPM as a flow -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("clip_x0", [True, False])
def test_ddim_equals_euler_on_the_flow(make_ddpm, clip_x0):
    """On the ideal denoiser of 16 images (an eps-model whose x0_hat stays in [-1, 1], as a trained one's nearly
    does: a random network's unclipped x0_hat at alpha = 0.006 reaches 1e2, and float32 rounding with it)."""
    like = make_ddpm(image_size=8, num_classes=None, T=1000)
    ddpm = ideal_model(pixels(16, (1, 8, 8), 4), like=like)
    for steps in (2, 3, 5, 10, 20, 50, 100):
        out = flow_vs_ddim(ddpm, n=2, steps=steps, clip_x0=clip_x0, generator=torch.Generator().manual_seed(steps))
        assert out["max_difference"] < 1e-9, steps                                # float64 steps: rounding only
        assert ((out["straightness_z"] > 0) & (out["straightness_z"] <= 1 + 1e-6)).all()


@pytest.mark.parametrize("clip_x0", [True, False])
def test_ddim_equals_euler_with_a_random_network(make_ddpm, clip_x0):
    """2 ... 100 steps, float64 steps: below 1e-5 even where a random network's unclipped x0_hat reaches 1e2."""
    ddpm = make_ddpm(image_size=8, num_classes=None, T=1000)
    for steps in (2, 5, 10, 20, 50, 100):
        out = flow_vs_ddim(ddpm, n=2, steps=steps, clip_x0=clip_x0, generator=torch.Generator().manual_seed(0))
        assert out["max_difference"] < 1e-5, (steps, out["max_difference"])
    assert out["ddim"].shape == out["flow"].shape == (2, 1, 8, 8) and out["ddim"].dtype == torch.float64
    single = flow_vs_ddim(ddpm, n=2, steps=20, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    assert single["ddim"].dtype == torch.float32 and single["max_difference"] < 1e-3


def test_straightness_of_a_line_and_a_corner():
    a, b, c = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    assert straightness([a, b * 0.5, b]).item() == pytest.approx(1.0)
    assert straightness([a, b, c]).item() == pytest.approx(math.sqrt(2) / 2)


# --- Table 2 in 2-D -------------------------------------------------------------------------------------------------
def test_every_target_gives_back_x0_and_eps():
    from ddpm.eval.likelihood import Schedule64
    from ddpm.eval.table2 import TARGETS, Predictor, target, to_x0
    from ddpm.points import recipe_model, two_moons
    model = recipe_model()
    s64 = Schedule64(model)
    g = torch.Generator().manual_seed(0)
    x0, eps = two_moons(64, generator=g), torch.randn(64, 2, generator=g)
    t = torch.randint(0, model.T, (64,), generator=g)
    t[:2] = torch.tensor([0, model.T - 1])
    a = s64.alpha_bar[t].float().view(-1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    for kind in TARGETS:
        out = target(kind, x0, eps, x_t, t, s64)
        assert torch.allclose(to_x0(kind, out, x_t, t, s64), x0, atol=1e-4), kind

        class Perfect(torch.nn.Module):                               # an MLP that outputs the exact target
            dim, num_classes, config = 2, None, None

            def forward(self, x, tt, y=None, exact=out):
                return exact
        assert torch.allclose(Predictor(Perfect(), kind, s64)(x_t, t), eps, atol=2e-3), kind


def test_vlb_weights_for_eps_are_eq_12s():
    from ddpm.eval.likelihood import Schedule64
    from ddpm.eval.table2 import TARGETS, vlb_weights
    from ddpm.points import recipe_model
    s64 = Schedule64(recipe_model())
    w = vlb_weights("eps", s64).double()
    beta, ab = s64.betas, s64.alpha_bar
    eq12 = beta ** 2 / (2 * beta * (1 - beta) * (1 - ab))                         # sigma_t^2 = beta_t, t >= 1
    ratio = w[1:] / eq12[1:]
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4)
    for kind in TARGETS:
        assert vlb_weights(kind, s64).mean().item() == pytest.approx(1.0, rel=1e-5)


def test_table2_runs_and_summarises():
    from ddpm.eval.table2 import summary, table2
    from ddpm.points import two_moons
    data, held = two_moons(500, generator=torch.Generator().manual_seed(0)), two_moons(200)
    seen = []
    rows = table2(data, held, targets=("eps", "mu"), seeds=(0,), steps=5, n_samples=50, progress=seen.append)
    assert len(rows) == 4 == len(seen) and all(r["swd"] > 0 for r in rows)
    cells = summary(rows)
    assert set(cells) == {("eps", "simple"), ("eps", "vlb"), ("mu", "simple"), ("mu", "vlb")}
    assert table2(data, held, stop=lambda: True) == []
