"""What a student tripped on, each now a clear message or a fix: one default network for `DDPM()` and the CLI, a
class-conditional diffusers UNet, a misspelled local folder, `evaluate` and a card written by hand, the betas on the
command line."""
import argparse
import json
import warnings

import pytest
import torch

from ddpm import DDPM, UNet2D, load_model, load_pretrained
from ddpm.checkpoint import CheckpointError
from ddpm.diffusion import ScheduleWarning
from ddpm.tools.cli import _betas, _network, add_train_args, main
from ddpm.unet import CIFAR32, PATCH2, default_net


def _train_args(*argv):
    parser = argparse.ArgumentParser()
    add_train_args(parser)
    return parser.parse_args(list(argv))


# ------------------------------------------------------------------ one default network

def test_ddpm_without_a_net_builds_the_network_the_cli_trains():
    assert _network(_train_args(), 28) == default_net(28) == PATCH2 and _network(_train_args(), 32) == CIFAR32
    built = DDPM(num_classes=10).net.config
    assert built == UNet2D(num_classes=10, **PATCH2).config and built["patch_size"] == 2
    assert DDPM(net={}).net.config == UNet2D().config             # a dict is taken as given, as config.json holds it


# ------------------------------------------------------------------ a class-conditional diffusers UNet

def _diffusers_unet(folder, **labels):
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                norm_num_groups=4, **labels).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("labels, shown", [(dict(num_class_embeds=10), "num_class_embeds 10"),
                                           (dict(class_embed_type="timestep"), "class_embed_type 'timestep'")])
def test_a_class_conditional_diffusers_unet_is_refused_by_name(tmp_path, labels, shown):
    with pytest.raises(ValueError, match=f"is a class-conditional UNet2DModel \\({shown}\\).*unconditional diffusers UNets only"):
        load_model(_diffusers_unet(tmp_path / "conditional", **labels))
    model = load_model(_diffusers_unet(tmp_path / "unconditional"))                 # the same UNet without labels loads
    assert model.num_classes is None and model.eps(torch.zeros(1, 1, 8, 8), 3).shape == (1, 1, 8, 8)


# ------------------------------------------------------------------ a misspelled local folder

def test_a_misspelled_folder_is_named_as_a_folder_with_the_closest_one(tmp_path, monkeypatch, make_ddpm):
    monkeypatch.chdir(tmp_path)
    make_ddpm().save_pretrained(tmp_path / "runs" / "mnist")
    assert load_model("runs/mnist").num_classes == 10      # the folder itself loads
    asked = []

    def offline(model_id, **kwargs):                        # the Hub, unreachable here
        asked.append(model_id)
        raise OSError("the Hub cannot be reached")
    monkeypatch.setattr(DDPM, "from_pretrained", offline)
    for path, shown in (("./runs/mnsit", "runs/mnist"), ("runs/mnsit/", "runs/mnist"), ("./rnus/mnist", "runs/mnist"),
                        (str(tmp_path / "runs" / "minst"), str(tmp_path / "runs" / "mnist"))):
        with pytest.raises(CheckpointError, match=f"^no such folder: {path} \\(did you mean {shown}\\?\\)$"):
            load_model(path)                                 # a path, never a Hub repo id: the Hub is not asked
    with pytest.raises(CheckpointError, match="^no such folder: ~/no-such-run$"):
        load_model("~/no-such-run")
    assert asked == []
    # a Hub-like id: asked of the Hub, and when that fails too, both answers
    with pytest.raises(CheckpointError, match=r"^no such folder: runs/mnsit \(did you mean runs/mnist\?\); as a Hugging Face "
                                              r"Hub repo id it did not load either: the Hub cannot be reached"):
        load_model("runs/mnsit")
    with pytest.raises(CheckpointError, match=r"^no such folder: mnst \(did you mean mnist\?\)"):
        load_pretrained("mnst")                              # a bundled model's name, misspelled
    assert asked == ["runs/mnsit", "mnst"]


# ------------------------------------------------------------------ the betas on the command line

TRAIN = ["train", "--dataset", "mnist", "--batch-size", "4", "--base-channels", "8", "--channel-mults", "1,2",
         "--warmup", "1", "--device", "cpu", "--no-progress", "--steps", "1"]


def test_train_takes_the_betas_and_a_short_schedule_then_needs_no_warning(fake_data, tmp_path):
    root, _ = fake_data
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScheduleWarning)                 # T = 100 with scaled betas: x_T is noise
        main([*TRAIN, "--data", str(root), "--out", str(tmp_path / "run"), "--T", "100", "--beta-start", "1e-3",
              "--beta-end", "0.2"])
    config = json.load(open(tmp_path / "run" / "config.json"))
    assert (config["T"], config["beta_start"], config["beta_end"]) == (100, 1e-3, 0.2)
    assert _betas(_train_args()) == {}                                    # unset: DDPM's own defaults
    with pytest.raises(ValueError, match="--beta-end sets the linear and sigmoid schedules' betas; --schedule cosine"):
        main([*TRAIN, "--data", str(root), "--out", str(tmp_path / "cos"), "--schedule", "cosine", "--beta-end", "0.2"])
    with pytest.raises(ValueError, match="beta_end = 2.0 give betas .* every beta must lie in \\(0, 1\\)"):
        main([*TRAIN, "--data", str(root), "--out", str(tmp_path / "big"), "--beta-end", "2"])


# ------------------------------------------------------------------ evaluate and a card written by the student

def test_evaluate_quick_leaves_a_students_card_and_writes_no_table(make_ddpm, fake_data, tmp_path):
    from ddpm.eval.judge import Judge
    root, _ = fake_data
    folder = tmp_path / "model"
    make_ddpm(num_classes=10, T=60, dataset="mnist").save_pretrained(folder)
    Judge(width=4).save(folder)
    ours = (folder / "README.md").read_text()
    main(["evaluate", "--model", str(folder), "--data", str(root), "--quick"])
    assert (folder / "README.md").read_text() == ours and not (folder / "evaluation.md").exists()   # a try: nothing
    mine = "# My first diffusion model\n\nTrained on my laptop during the lab.\n"
    (folder / "README.md").write_text(mine)
    main(["evaluate", "--model", str(folder), "--data", str(root), "--quick"])
    assert (folder / "README.md").read_text() == mine
    assert not (folder / "evaluation.md").exists() and not (folder / "quality_cost.md").exists()


def test_an_empty_model_id_is_named():
    for empty in ("", "  "):
        with pytest.raises(CheckpointError, match="the model id is empty"):
            load_model(empty)
