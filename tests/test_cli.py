"""Command line: help texts, a 3-step training run on the fake MNIST files, resume, and a PNG sample grid."""
import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from ddpm import load_model
from ddpm.tools.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_module(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "ddpm", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_help():
    result = _run_module("--help")
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "sample" in result.stdout


def test_train_help(capsys):
    # in-process: test_help already starts `python -m ddpm` once (importing torch costs ~10 s on a busy machine)
    with pytest.raises(SystemExit) as err:
        main(["train", "--help"])
    assert err.value.code == 0
    out = capsys.readouterr().out
    for option in ("--dataset", "--steps", "--base-channels", "--channel-mults", "--resume"):
        assert option in out


def test_sample_help(capsys):
    with pytest.raises(SystemExit) as err:
        main(["sample", "--help"])
    assert err.value.code == 0
    assert "--guidance" in capsys.readouterr().out


def test_missing_command_fails():
    with pytest.raises(SystemExit) as err:
        main([])
    assert err.value.code == 2


TRAIN = ["train", "--dataset", "mnist", "--batch-size", "4", "--base-channels", "8", "--channel-mults", "1,2",
         "--T", "20", "--warmup", "2", "--device", "cpu", "--no-progress"]


@pytest.fixture
def trained(fake_data, tmp_path):
    """A 3-step conditional MNIST run on the fake files: the checkpoint folder."""
    root, _ = fake_data
    out = tmp_path / "run"
    main([*TRAIN, "--data", str(root), "--out", str(out), "--steps", "3"])
    return root, out


def test_train_writes_checkpoint(trained):
    _, out = trained
    assert {"model.safetensors", "config.json", "training_state.safetensors", "training_state.json"} <= set(
        os.listdir(out))
    meta = json.load(open(out / "training_state.json"))
    assert meta["step"] == 3 and meta["dataset"] == "mnist" and meta["n_train"] == 6
    ddpm = load_model(str(out))
    assert ddpm.num_classes == 10 and ddpm.T == 20 and ddpm.dataset == "mnist"
    assert ddpm.class_names[0] == "0 - zero"
    assert ddpm.net.conv_in.out_channels == 8


def test_train_resume_continues_step_count(trained):
    root, out = trained
    main([*TRAIN, "--data", str(root), "--out", str(out), "--steps", "5", "--resume"])
    assert json.load(open(out / "training_state.json"))["step"] == 5


def test_train_resume_with_decay_ends_at_zero_learning_rate(trained):
    """A constant-rate run continued with --decay-steps decays to 0 exactly at --steps."""
    root, out = trained
    main([*TRAIN, "--data", str(root), "--out", str(out), "--steps", "7", "--decay-steps", "4", "--resume",
          "--lr", "1e-3"])
    meta = json.load(open(out / "training_state.json"))
    assert meta["step"] == 7 and meta["decay_steps"] == 4
    assert meta["param_groups"][0]["lr"] == 0.0


@pytest.mark.parametrize("extra, rows, labelled", [([], 1, False), (["--classes", "0,7"], 2, True),
                                                   (["--classes", "all"], 10, True)])
def test_sample_writes_png_grid(trained, tmp_path, extra, rows, labelled):
    _, out = trained
    png = tmp_path / "grid.png"
    main(["sample", "--model", str(out), "--out", str(png), "--n", "2", "--steps", "4", "--scale", "2", *extra])
    image = Image.open(png)
    # image_grid: pad 2 around 28x28 tiles, upscaled 2x, plus a 110-pixel label margin with row labels
    width, height = (2 * (28 + 2) + 2) * 2, (rows * (28 + 2) + 2) * 2
    assert image.size == (width + (110 if labelled else 0), height)


def test_sample_compile_samples_through_the_compiled_network(trained, tmp_path, monkeypatch):
    """--compile hands sampling to ddpm.compiled; a pass-through stand-in for torch.compile counts its calls."""
    _, out = trained
    calls = []

    class Counted(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.inner = net

        def forward(self, *args):
            calls.append(len(args[0]))
            return self.inner(*args)
    monkeypatch.setattr(torch, "compile", lambda net, **kw: Counted(net))
    png = tmp_path / "grid.png"
    main(["sample", "--model", str(out), "--out", str(png), "--n", "2", "--steps", "4", "--compile"])
    assert calls == [2] * 4 and png.exists()


def test_sample_compile_without_a_cpp_compiler_says_what_to_install(trained, tmp_path, monkeypatch):
    """No $CXX and no g++ on PATH: --compile stops before sampling with a message, not inductor's traceback."""
    _, out = trained
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))                 # an empty folder: no g++ on it
    png = tmp_path / "grid.png"
    with pytest.raises(SystemExit, match=r"C\+\+ compiler.*CXX=None.*apt-get install g\+\+"):
        main(["sample", "--model", str(out), "--out", str(png), "--n", "2", "--steps", "4", "--compile"])
    assert not png.exists()


def test_sample_rejects_unknown_class(trained, tmp_path):
    _, out = trained
    with pytest.raises(ValueError, match=r"\[12\]"):
        main(["sample", "--model", str(out), "--out", str(tmp_path / "x.png"), "--classes", "12", "--steps", "2"])
    assert not (tmp_path / "x.png").exists()


def test_train_without_data_names_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        main([*TRAIN, "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run"), "--steps", "1"])


def test_train_decay_without_steps_is_refused_by_name(tmp_path):
    with pytest.raises(SystemExit, match="--decay-steps 5 needs --steps"):
        main([*TRAIN, "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--decay-steps", "5"])
    assert not (tmp_path / "run").exists()


def test_cli_trained_model_samples_deterministically(trained):
    _, out = trained
    ddpm = load_model(str(out))
    from ddpm import sample
    a = sample(ddpm, 1, [1], sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0))
    b = sample(ddpm, 1, [1], sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_train_cifar100_class_conditional_with_flips(fake_data, tmp_path):
    """`train --dataset cifar100` on CIFAR-layout files: the 32x32x3 preset's shape (narrowed), 100 classes + null."""
    root, _ = fake_data
    out = tmp_path / "c100"
    main(["train", "--dataset", "cifar100", "--data", str(root), "--out", str(out), "--steps", "2", "--batch-size", "4",
          "--base-channels", "32", "--channel-mults", "1,2", "--no-progress"])
    model = load_model(str(out))
    assert model.num_classes == 100 and model.sample_shape == (3, 32, 32) and model.net.config["num_res_blocks"] == 2
    state = json.load(open(out / "training_state.json"))
    assert state["step"] == 2


def test_train_writes_a_model_card_with_the_recipe(trained):
    _, out = trained
    text = (out / "README.md").read_text()
    for field in ("mnist, 6 training images", "3 optimizer steps at batch", "lr ", "p_uncond 0.1", " s on cpu",
                  "Not measured yet"):
        assert field in text, field
