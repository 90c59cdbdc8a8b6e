"""ddpm.exercise: every catalogued mistake, written as a student writes it (tests/exercise_mistakes.py), is named by
its id; correct implementations in three styles pass without false alarm; unknown errors are located; uploads are
read safely and malformed or malicious ones are refused by name. Also the two package-side fixes of the
walk-through: a schedule whose last step is not noise warns, and a batch without its channel axis is refused."""
import io
import os
import pickle
import warnings
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import save as save_safetensors
from safetensors.torch import load_file

import ddpm as dd
from ddpm import exercise as ex
from ddpm.diffusion import ScheduleWarning
from ddpm.exercise import challenge, reverse
from exercise_mistakes import CORRECT, STUDENTS, UPLOAD_STEPS


# ------------------------------------------------------------------ the catalogue

def test_the_catalogue_has_25_mistakes_each_written_by_a_student():
    assert len(ex.MISTAKES) >= 25
    written = {m for m, *_ in STUDENTS} | {m for m, _ in UPLOAD_STEPS if m}
    assert set(ex.MISTAKES) == written
    for m in ex.MISTAKES.values():
        assert m.item in ex.ITEMS and m.notation and m.effect and m.fix


def test_every_mistake_is_named_by_its_id(capsys):
    """The naming rate over every student function (the issue asks >= 95%); each report carries a figure."""
    misnamed = []
    for mistake, item, fn, kwargs in STUDENTS:
        report = ex.check_function(item, fn, **kwargs)
        if report.mistake != mistake:
            misnamed.append(f"{fn.__name__}: expected {mistake}, got {report.verdict}\n{report!r}")
        else:
            assert not report.passed and any(ch.isdigit() for ch in report.message), report.message
            assert ex.MISTAKES[mistake].fix in report.message
    rate = 1 - len(misnamed) / len(STUDENTS)
    with capsys.disabled():
        print(f"\nexercise: {len(STUDENTS) - len(misnamed)} of {len(STUDENTS)} student mistakes named ({rate:.0%})")
    assert rate >= 0.95, "\n\n".join(misnamed)


@pytest.mark.parametrize("item, fn, kwargs", CORRECT, ids=[fn.__name__ for _, fn, _ in CORRECT])
def test_correct_implementations_pass(item, fn, kwargs):
    report = ex.check_function(item, fn, **kwargs)
    assert report.passed and report.mistake is None, repr(report)
    assert ("1-based" if kwargs.get("t_base") else "0-based") in repr(report)


def _seeded_sample(seed):
    def sample(ddpm, n_samples, classes=None):
        g = torch.Generator().manual_seed(seed)
        y = None if classes is None else torch.tensor(classes).repeat_interleave(n_samples)
        n, s = n_samples if y is None else len(y), ddpm.schedule
        x = torch.randn(n, *ddpm.sample_shape, generator=g)
        for t in range(ddpm.T - 1, -1, -1):
            eps = ddpm.eps(x, torch.full((n,), t), y)
            z = torch.randn(x.shape, generator=g) if t > 0 else torch.zeros_like(x)
            x = (x - s.betas[t] / (1 - s.alpha_bar[t]).sqrt() * eps) / s.alphas[t].sqrt() + s.betas[t].sqrt() * z
        return x
    return sample


def _seeded_train(seed, conditional):
    def train(ddpm, loader, n_epochs, optim, device):
        g = torch.Generator().manual_seed(seed)
        for _ in range(n_epochs):
            for x0, y in loader:
                t = torch.randint(0, ddpm.T, (len(x0),), generator=g)
                eps = torch.randn(x0.shape, generator=g)
                y = torch.where(torch.rand(len(y), generator=g) < 0.1, ddpm.null_class, y) if conditional else None
                loss = F.mse_loss(ddpm.eps(dd.sample_xt(x0, t, eps, ddpm.schedule.alpha_bar), t, y), eps)
                optim.zero_grad()
                loss.backward()
                optim.step()
    return train


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_false_alarm_whatever_the_students_noise(seed):
    """The stochastic checks (their stated false-alarm rates are below 1e-5) pass correct code on other draws."""
    assert ex.check_function("sample", _seeded_sample(seed)).passed
    for item in ("train", "train_classconditional"):
        assert ex.check_function(item, _seeded_train(seed, item != "train")).passed


# ------------------------------------------------------------------ what the report says

def _placeholder_xt(x0, t, epsilon, alphaBars):
    xt = None                       # Your code goes here
    return xt


def _placeholder_raises(*args, **kwargs):
    raise NotImplementedError


def _placeholder_pass(ddpm, loader, n_epochs, optim, device):
    pass


@pytest.mark.parametrize("item, fn", [("sample_xt", _placeholder_xt), ("sample_xt", _placeholder_raises),
                                      ("sample", lambda ddpm, n_samples, classes=None: None),
                                      ("sample", _placeholder_raises), ("train", _placeholder_pass),
                                      ("train_classconditional", _placeholder_raises)])
def test_placeholders_are_not_implemented_yet(item, fn):
    report = ex.check_function(item, fn)
    assert report.not_implemented and not report.passed and report.mistake is None
    assert report.verdict == "not implemented yet" and "not implemented yet" in repr(report)
    assert "not implemented yet" in report._repr_markdown_()


def test_an_unknown_error_is_located_only_at_t0():
    def sample_xt(x0, t, epsilon, alphaBars):          # "at t = 0 nothing happens yet"
        a = alphaBars[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * epsilon
        return torch.where((t == 0).view(-1, 1, 1, 1), x0, x_t)
    report = ex.check_function("sample_xt", sample_xt)
    assert report.mistake is None and not report.passed
    assert "only at t = 0" in report.message and "1 x0 + 0 epsilon" in report.message


def test_an_unknown_error_is_located_only_for_T100():
    def own_schedule(T):                                # the default betas, whatever T the model has
        return torch.cumprod(1 - torch.linspace(1e-4, 0.02, T), 0)

    def sample_xt(x0, t, epsilon, alphaBars):
        a = own_schedule(len(alphaBars))[t].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * epsilon
    assert "only for T = 100" in ex.check_function("sample_xt", sample_xt).message

    def sample(ddpm, n_samples):
        alpha_bar = own_schedule(ddpm.T)
        betas = 1 - alpha_bar / torch.cat([torch.ones(1), alpha_bar[:-1]])
        x = torch.randn(n_samples, *ddpm.sample_shape)
        for t in range(ddpm.T - 1, -1, -1):
            eps = ddpm.eps(x, torch.full((n_samples,), t))
            z = torch.randn_like(x) if t > 0 else 0
            x = (x - betas[t] / (1 - alpha_bar[t]).sqrt() * eps) / (1 - betas[t]).sqrt() + betas[t].sqrt() * z
        return x
    report = ex.check_function("sample", sample)
    assert not report.passed and report.mistake is None
    assert "only for T = 100" in report.message and "T = 100, n_samples = 4" in repr(report)


def _function(name):
    return next(fn for fn in [f for _, _, f, _ in STUDENTS] + [f for _, f, _ in CORRECT] if fn.__name__ == name)


def test_the_report_reads_well_and_draws_both_strips():
    report = ex.check_function("sample_xt", _function("sample_xt__no_sqrt"))
    text = repr(report)
    assert text.startswith("sample_xt: mistake xt_no_sqrt") and "At t = 500 (T = 1000)" in text
    assert "noise variance 0.85" in text and "0.922" in text and "Fix:" in text
    assert report._repr_markdown_().startswith("**❌ sample_xt: mistake xt_no_sqrt**")
    image = ex.render_report(report)
    assert image.height > 2 * 8 * 4 and image.width > 8 * 8 * 4                 # two rows of 8 images, 4x
    grid = np.asarray(image)
    top, bottom = grid[: grid.shape[0] // 2], grid[grid.shape[0] // 2:]
    assert not np.array_equal(top, bottom)                                      # yours differs from the reference
    assert ex.render_report(ex.check_function("train", _placeholder_pass)) is None


def test_declared_conventions_are_stated_and_checked():
    report = ex.check_function("sample", _function("sample__package"), clip_x0=True)
    assert report.passed and "Clipping x0_hat to [-1, 1]: on (declared)" in repr(report)
    one_based = _function("sample__one_based")
    report = ex.check_function("sample", one_based)                             # 1-based, but not declared
    assert report.mistake == "sample_loop_T_to_1" and "t_base=1" in report.message
    with pytest.raises(ValueError, match="t_base must be 0"):
        ex.check_function("sample", one_based, t_base=2)
    with pytest.raises(ValueError, match="clip_x0 is a convention of sample"):
        ex.check_function("sample_xt", _placeholder_xt, clip_x0=False)
    with pytest.raises(ValueError, match="unknown item 'sample_x'"):
        ex.check_function("sample_x", _placeholder_xt)


# ------------------------------------------------------------------ challenges and uploads

def test_challenge_files_are_small_and_rebuilt_exactly():
    sizes = {name: os.path.getsize(os.path.join(challenge.FOLDER, name)) for name in os.listdir(challenge.FOLDER)}
    assert sum(sizes.values()) < 1_000_000, sizes
    for name, tensors in challenge.build().items():
        stored = load_file(os.path.join(challenge.FOLDER, name))
        assert stored.keys() == tensors.keys() and all(torch.equal(stored[k], tensors[k]) for k in tensors), name
    data = challenge.load("sample_xt")
    for T in challenge.SCHEDULES:
        assert {0, T - 1} <= set(data[f"t_{T}"].tolist())
    assert ex.challenge_files("sample").endswith("sample.safetensors")
    with pytest.raises(ValueError, match="checked by running them"):
        ex.challenge_files("train")


def test_the_challenge_model_is_exact():
    """eps* is E[eps | x_t]: for x_t made from one data image at small t, eps* recovers the noise that made it."""
    model = ex.sampling_model(100)
    pts, _ = challenge.points()
    eps = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.full((6,), 2)
    x_t = dd.sample_xt(pts, t, eps, model.schedule.alpha_bar)
    assert torch.allclose(model(x_t, t), eps, atol=1e-4)


def _npz(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("item", ex.UPLOAD_ITEMS)
def test_right_uploads_pass_as_npz_safetensors_and_path(item, tmp_path):
    right = ex.solution_outputs(item)
    assert ex.check_outputs(item, _npz(**right)).passed
    assert ex.check_outputs(item, save_safetensors({k: np.ascontiguousarray(v) for k, v in right.items()})).passed
    path = tmp_path / "outputs.npz"
    path.write_bytes(_npz(**right))
    report = ex.check_outputs(item, str(path))
    assert report.passed and ex.render_report(report) is not None


@pytest.mark.parametrize("mistake, step", UPLOAD_STEPS, ids=[fn.__name__ for _, fn in UPLOAD_STEPS])
def test_uploaded_steps_name_the_mistake(mistake, step):
    data = {k: v.double().numpy() for k, v in challenge.load("sample").items()}
    arrays = {}
    for T in challenge.SCHEDULES:
        rows = [step(data[f"x_t_{T}"][i], int(data[f"t_{T}"][i]), data[f"eps_{T}"][i], data[f"z_{T}"][i],
                     data[f"betas_{T}"], data[f"alphas_{T}"], data[f"alpha_bar_{T}"]) for i in range(16)]
        arrays[f"x_prev_{T}"] = np.stack(rows).astype(np.float32)
    report = ex.check_outputs("sample", _npz(**arrays))
    assert (report.passed, report.mistake) == (mistake is None, mistake), repr(report)


def test_uploaded_labels_in_the_wrong_order_are_named():
    right = ex.solution_outputs("sample")
    right["y"] = np.tile(np.array(challenge.CLASSES), challenge.N_PER_CLASS)
    assert ex.check_outputs("sample", _npz(**right)).mistake == "sample_classes_tiled"


def test_uploaded_xt_mistakes_are_named():
    right = ex.solution_outputs("sample_xt")
    data = {k: v.double().numpy() for k, v in challenge.load("sample_xt").items()}
    wrong = {f"x_t_{T}": (lambda a: a * data[f"x0_{T}"] + (1 - a) * data[f"epsilon_{T}"])(
        data[f"alphaBars_{T}"][data[f"t_{T}"].astype(int)].reshape(-1, 1, 1, 1)) for T in challenge.SCHEDULES}
    assert ex.check_outputs("sample_xt", _npz(**wrong)).mistake == "xt_no_sqrt"
    noisy = {k: v + np.random.default_rng(0).standard_normal(v.shape) for k, v in right.items()}
    assert ex.check_outputs("sample_xt", _npz(**noisy)).mistake is None


def _refused(item, upload, *words):
    report = ex.check_outputs(item, upload)
    assert report.refused and report.verdict == "refused" and not report.passed, repr(report)
    for word in words:
        assert word in report.message, report.message
    return report


def test_malformed_and_malicious_uploads_are_refused_by_name(tmp_path):
    right = ex.solution_outputs("sample_xt")

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    _refused("sample_xt", pickle.dumps(Boom()), "pickle")
    _refused("sample_xt", pickle.dumps(right), "pickle")
    _refused("sample_xt", _npz(x_t_1000=np.array([Boom()], dtype=object), x_t_100=right["x_t_100"]), "dtype=object")
    assert not (tmp_path / "pwned").exists()
    _refused("sample_xt", b"\0" * (5 * 2 ** 20 + 1), "5.0 MB", "limited to 5 MB")
    big = tmp_path / "big.npz"
    big.write_bytes(b"PK\x03\x04" + b"\0" * (6 * 2 ** 20))
    _refused("sample_xt", str(big), "6.0 MB")
    _refused("sample_xt", _npz(x_t_1000=right["x_t_1000"]), "missing ['x_t_100']")
    _refused("sample_xt", _npz(**right, extra=np.zeros(3)), "unexpected ['extra']")
    _refused("sample_xt", _npz(x_t_1000=right["x_t_1000"][:8], x_t_100=right["x_t_100"]), "'x_t_1000' has shape (8, 1, 8, 8)")
    nan = dict(right, x_t_100=right["x_t_100"].copy())
    nan["x_t_100"][3, 0, 2, 2] = np.nan
    _refused("sample_xt", _npz(**nan), "'x_t_100' holds 1 NaN")
    inf = dict(right, x_t_100=np.full((16, 1, 8, 8), np.inf, dtype=np.float32))
    _refused("sample_xt", _npz(**inf), "inf")
    _refused("sample_xt", _npz(x_t_1000=right["x_t_1000"].astype(str), x_t_100=right["x_t_100"]), "dtype <U")
    buf = io.BytesIO()
    np.save(buf, right["x_t_1000"])
    _refused("sample_xt", buf.getvalue(), "single .npy")
    _refused("sample_xt", b"hello, world", "neither .npz nor .safetensors")
    _refused("sample_xt", str(tmp_path / "missing.npz"), "no file at")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x_t_1000.npy", b"\0" * (40 * 2 ** 20))
    assert len(bomb.getvalue()) < 5 * 2 ** 20
    _refused("sample_xt", bomb.getvalue(), "unpacks to 40.0 MB")
    _refused("sample", _npz(**{f"x_prev_{i}": np.zeros(1) for i in range(20)}), "holds 20 arrays")
    with pytest.raises(ValueError, match="checked by running them"):
        ex.check_outputs("train", _npz(**right))


def test_no_student_code_runs_in_the_upload_path(monkeypatch):
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled an upload"))
    monkeypatch.setattr(np, "load", lambda *a, allow_pickle=False, **k: np.lib.npyio.NpzFile(a[0], allow_pickle=allow_pickle)
                        if allow_pickle is False else pytest.fail("np.load with allow_pickle"))
    assert ex.check_outputs("sample_xt", _npz(**ex.solution_outputs("sample_xt"))).passed


def test_the_upload_step_reference_is_algorithm_2():
    """The reference of the step challenge is the package's own ddpm_step (clipping off: the same formula)."""
    data = {k: v for k, v in challenge.load("sample").items()}
    right = ex.solution_outputs("sample")
    for T in challenge.SCHEDULES:
        sched = challenge.schedule(T)
        for i in range(16):
            t = int(data[f"t_{T}"][i])
            x, _, _ = dd.ddpm_step(data[f"x_t_{T}"][i:i + 1], t, data[f"eps_{T}"][i:i + 1], sched,
                                   noise=data[f"z_{T}"][i:i + 1], clip_x0=False)
            assert np.allclose(x.numpy(), right[f"x_prev_{T}"][i:i + 1], atol=1e-4), (T, t)
            up = dict(right, **{f"x_prev_{T}": right[f"x_prev_{T}"].copy()})
            up[f"x_prev_{T}"][i:i + 1] = x.numpy()                  # float64 coefficients, float32 images: passes
            assert ex.check_outputs("sample", _npz(**up)).passed, (T, t)
    assert reverse.RIGHT == (None, "beta", None)


# ------------------------------------------------------------------ what a student trips on (issue item 5)

def test_a_schedule_whose_last_step_is_not_noise_warns_with_the_fix():
    net = dict(base_channels=8, channel_mults=(1,), attn_levels=())
    with pytest.warns(ScheduleWarning, match=r"alpha_bar at t = T-1 is 0\.364.*beta_start=0\.001, beta_end=0\.2"):
        dd.DDPM(T=100, net=net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dd.DDPM(T=1000, net=net)
        dd.DDPM(T=100, beta_start=1e-3, beta_end=0.2, net=net)
        dd.DDPM(T=100, schedule="cosine", net=net)


def test_an_image_batch_without_its_channel_axis_is_refused_with_the_fix():
    model = dd.DDPM(T=1000, net=dict(base_channels=8, channel_mults=(1,), attn_levels=()))
    batch = torch.zeros(4, 28, 28)
    with pytest.raises(ValueError, match=r"lacks its channel dimension: use x.unsqueeze\(1\)"):
        model.eps(batch, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"needs its channel dimension, \[B, C, H, W\].*x0.unsqueeze\(1\)"):
        dd.sample_xt(batch, torch.arange(4), None, model.schedule.alpha_bar)
    assert dd.sample_xt(torch.zeros(1, 28, 28), 10, None, model.schedule.alpha_bar).shape == (1, 28, 28)   # one image
