"""The exercise's API used as a student would, without reading the source: the inputs it accepts and the clear
errors (naming the value and what is allowed) for inputs that used to pass silently."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ddpm import DDPM, PATCH2, NoiseSchedule, UNet2D, load_model, sample, sample_steps, sample_xt, train, train_classconditional
from ddpm.tools.cli import run

NET = dict(base_channels=8, channel_mults=(1, 2), attn_levels=(1,), emb_channels=32, groups=4)


def _images(n=4, seed=0):
    return torch.rand((n, 1, 28, 28), generator=torch.Generator().manual_seed(seed)) * 2 - 1     # in [-1, 1]


# ------------------------------------------------------------------ images outside [-1, 1]

@pytest.mark.parametrize("x0, shown", [
    ((torch.rand(4, 1, 28, 28) * 255).to(torch.uint8), "torch.uint8.*to_unit_range"),
    (torch.rand(4, 1, 28, 28) * 255, "values from .* to 25.*x / 127.5 - 1"),
    (torch.rand(4, 1, 28, 28), r"looks like images in \[0, 1\].*x \* 2 - 1"),
])
def test_sample_xt_refuses_images_outside_minus_one_one(x0, shown):
    alpha_bar = NoiseSchedule("linear", 1000).alpha_bar
    with pytest.raises(ValueError, match=shown):
        sample_xt(x0, torch.full((4,), 10), None, alpha_bar)
    sample_xt(_images(), torch.full((4,), 10), None, alpha_bar)                     # the same call in [-1, 1] passes


def test_training_on_zero_one_images_is_refused(make_ddpm):
    ddpm = make_ddpm(num_classes=None)
    loader = [(torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train(ddpm, loader, 1, torch.optim.SGD(ddpm.parameters(), lr=0.1), "cpu", progress=False)


def test_one_image_may_have_no_negative_pixel():
    """A single image (or copies of it, as the app's forward strip passes) is no evidence of [0, 1] scaling."""
    white = torch.ones(1, 1, 28, 28)
    sample_xt(white, 5, None, NoiseSchedule("linear", 100).alpha_bar)
    sample_xt(white.expand(3, -1, -1, -1), torch.tensor([1, 2, 3]), None, NoiseSchedule("linear", 100).alpha_bar)


# ------------------------------------------------------------------ the network and the DDPM object

def test_attn_levels_must_name_levels_the_network_has():
    with pytest.raises(ValueError, match=r"attn_levels \[2\] name levels \[2\].*levels are 0..1"):
        UNet2D(channel_mults=(1, 2), attn_levels=(2,))


def test_net_may_be_a_module_or_a_dict_and_saves_either_way(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = UNet2D(in_channels=1, num_classes=10, **NET)
        from_module = DDPM(num_classes=10, net=net)
        from_dict = DDPM(num_classes=10, net=NET)
    assert from_module.net is net
    assert sum(p.numel() for p in from_module.parameters()) == sum(p.numel() for p in from_dict.parameters())
    from_module.save_pretrained(tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert again.net.config == net.config
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), from_module.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="num_classes=10.*num_classes=None"):
        DDPM(num_classes=None, net=net)
    with pytest.raises(ValueError, match="net must be a UNet2D or a dict.*str"):
        DDPM(net="patch2")
    assert DDPM(num_classes=10, net=PATCH2).net.patch_size == 2


def test_ddpm_init_documents_every_argument():
    import inspect
    doc = DDPM.__doc__
    for name in list(inspect.signature(DDPM.__init__).parameters)[1:]:
        assert f"{name}:" in doc or f"{name}," in doc, name


# ------------------------------------------------------------------ sampling

@pytest.mark.parametrize("classes", [[3, 1], (3, 1), np.array([3, 1]), [np.int64(3), np.int32(1)], torch.tensor([3, 1])])
def test_classes_accept_python_numpy_and_tensor_ints(make_ddpm, classes):
    ddpm = make_ddpm(T=10)
    x = sample(ddpm, 2, classes, sampler="ddim", steps=2, generator=torch.Generator().manual_seed(0))
    ref = sample(ddpm, 2, [3, 1], sampler="ddim", steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, ref)


@pytest.mark.parametrize("classes, shown", [(torch.tensor([[1, 2]]), "1-D integer"), (torch.tensor([1.0]), "1-D integer"),
                                            ([1.5], r"\[1.5\]"), ([True], r"\[True\]"), ([10], r"\[10\]")])
def test_bad_classes_name_the_value(make_ddpm, classes, shown):
    with pytest.raises(ValueError, match=shown):
        sample(make_ddpm(T=10), 1, classes, sampler="ddim", steps=2)


def test_steps_for_the_ddpm_sampler_are_refused(make_ddpm):
    with pytest.raises(ValueError, match=r"ddpm sampler .* all T = 10 steps, got steps=5; "
                                         r"for fewer steps use one of \['ddim', 'dpmpp_2m'\]"):
        sample(make_ddpm(T=10), 1, sampler="ddpm", steps=5)


def test_guidance_on_an_unconditional_model_is_refused(make_ddpm):
    with pytest.raises(ValueError, match="guidance_scale = 3.0 needs a class-conditional model"):
        sample(make_ddpm(T=10, num_classes=None), 1, sampler="ddim", steps=2, guidance_scale=3.0)


def test_sample_runs_in_eval_mode_and_restores_the_mode_it_found(make_ddpm):
    ddpm = make_ddpm(T=10).train()
    modes = []
    sample(ddpm, 1, [0], sampler="ddim", steps=3, callback=lambda step: modes.append(ddpm.net.training))
    assert modes == [False] * 3 and ddpm.training and ddpm.net.training
    ddpm.eval()
    sample(ddpm, 1, [0], sampler="ddim", steps=2)
    assert not ddpm.training


def test_a_stopped_stream_restores_the_mode(make_ddpm):
    ddpm = make_ddpm(T=10).train()
    run_ = sample_steps(ddpm, torch.randn(1, 1, 28, 28), sampler="ddim", steps=5)
    next(run_)
    run_.close()
    assert ddpm.training


# ------------------------------------------------------------------ training loaders

def test_train_accepts_loaders_of_images_alone_or_pairs(make_ddpm):
    x = _images(8)
    for loader in ([x[:4], x[4:]],                                          # a list of batches
                   DataLoader(TensorDataset(x), batch_size=4),              # yields [x] (a 1-tuple)
                   DataLoader(TensorDataset(x, torch.zeros(8, dtype=torch.long)), batch_size=4)):
        ddpm = make_ddpm(num_classes=None)
        losses = train(ddpm, loader, 1, torch.optim.SGD(ddpm.parameters(), lr=1e-3), "cpu", progress=False)
        assert len(losses) == 2


def test_train_refuses_a_loader_of_something_else(make_ddpm):
    ddpm = make_ddpm(num_classes=None)
    with pytest.raises(ValueError, match="images x0 or pairs .* got dict"):
        train(ddpm, [{"image": _images()}], 1, torch.optim.SGD(ddpm.parameters(), lr=1e-3), "cpu", progress=False)
    with pytest.raises(ValueError, match="a tuple of 3"):
        train(ddpm, [(_images(), 1, 2)], 1, torch.optim.SGD(ddpm.parameters(), lr=1e-3), "cpu", progress=False)


def test_train_classconditional_needs_labels(make_ddpm):
    ddpm = make_ddpm()
    with pytest.raises(ValueError, match=r"\(x0, y\) pairs"):
        train_classconditional(ddpm, [_images()], 1, torch.optim.SGD(ddpm.parameters(), lr=1e-3), "cpu", progress=False)


def test_train_takes_no_p_uncond_and_n_epochs_none_means_by_steps(make_ddpm):
    ddpm = make_ddpm(num_classes=None)
    optim = torch.optim.SGD(ddpm.parameters(), lr=1e-3)
    with pytest.raises(TypeError, match="p_uncond"):
        train(ddpm, [_images()], 1, optim, "cpu", p_uncond=0.2)
    assert len(train(ddpm, [_images()], None, optim, "cpu", max_steps=3, progress=False)) == 3   # loops over the loader
    with pytest.raises(ValueError, match="n_epochs=None trains without end"):
        train(ddpm, [_images()], None, optim, "cpu", progress=False)


# ------------------------------------------------------------------ the command line

def test_device_cuda_without_a_gpu_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        run(["train", "--device", "cuda", "--steps", "1"])
    assert str(stop.value) == "ddpm: error: --device cuda: this machine has no CUDA GPU that torch can use; use --device cpu"
    with pytest.raises(SystemExit, match="--device 'gpu' is not a device name"):
        run(["train", "--device", "gpu", "--steps", "1"])


# ------------------------------------------------------------------ more inputs, from review

def test_old_configs_without_attn_levels_still_build():
    """Configs written before attn_levels was checked name no levels: two-level networks then have none."""
    assert UNet2D(base_channels=8, channel_mults=(1, 2), groups=4).config["attn_levels"] == []
    assert UNet2D(base_channels=8, channel_mults=(1, 2, 2), groups=4).config["attn_levels"] == [2]


def test_ddim_step_checks_its_own_arguments():
    from ddpm import ddim_step
    s, x = NoiseSchedule("linear", 100), torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="t = 10, t_prev = 20"):
        ddim_step(x, 10, 20, x, s)
    with pytest.raises(ValueError, match="eta must lie in \\[0, 1\\].*3"):
        ddim_step(x, 20, 10, x, s, eta=3, noise=x)


def test_guidance_without_classes_is_refused(make_ddpm):
    with pytest.raises(ValueError, match="needs class labels y"):
        sample(make_ddpm(T=10), 1, sampler="ddim", steps=2, guidance_scale=2.0)


def test_alpha_bars_may_be_an_array_or_a_list():
    a = NoiseSchedule("linear", 100).alpha_bar
    x0, eps = _images(2), torch.randn(2, 1, 28, 28)
    ref = sample_xt(x0, torch.tensor([3, 70]), eps, a)
    for other in (a.double().numpy(), a.tolist()):
        out = sample_xt(x0, torch.tensor([3, 70]), eps, other)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, ref)


def test_numpy_epochs_and_an_empty_loader(make_ddpm):
    ddpm = make_ddpm(num_classes=None)
    optim = torch.optim.SGD(ddpm.parameters(), lr=1e-3)
    assert len(train(ddpm, [_images()], np.int64(2), optim, "cpu", progress=False)) == 2
    with pytest.raises(ValueError, match="yielded no batch"):
        train(ddpm, [], None, optim, "cpu", max_steps=5, progress=False)


def test_cli_sample_of_an_unconditional_model_needs_no_guidance_flag(make_ddpm, tmp_path):
    make_ddpm(num_classes=None, T=10).save_pretrained(tmp_path / "m")
    run(["sample", "--model", str(tmp_path / "m"), "--n", "2", "--steps", "2", "--out", str(tmp_path / "a.png")])
    assert (tmp_path / "a.png").is_file()
    with pytest.raises(SystemExit, match="--guidance 3 needs --classes"):
        run(["sample", "--model", str(tmp_path / "m"), "--guidance", "3", "--out", str(tmp_path / "b.png")])
