"""Checkpoints: safetensors + JSON round trips, resumable training, and clear errors for broken folders."""
import json
import os

import pytest
import torch
from huggingface_hub import ModelCard

from ddpm import EMA, DDPM, load_model, load_training_state, sample, save_training_state, train_classconditional
from ddpm.checkpoint import CheckpointError, write_model_card

from test_training import NET_8PX, _tiny_batch


def _state_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _saved(make_ddpm, tmp_path, **kwargs):
    ddpm = make_ddpm(class_names=[f"class {i}" for i in range(10)], dataset="mnist", **kwargs)
    folder = tmp_path / "model"
    ddpm.save_pretrained(folder)
    return ddpm, str(folder)


def test_save_load_round_trip_is_bit_exact(make_ddpm, tmp_path):
    ddpm, folder = _saved(make_ddpm, tmp_path)
    assert {"config.json", "model.safetensors"} <= set(os.listdir(folder))
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in os.listdir(folder))
    loaded = load_model(folder)
    assert isinstance(loaded, DDPM) and not loaded.training
    assert _state_equal(ddpm, loaded)
    assert loaded.class_names == ddpm.class_names and loaded.dataset == "mnist"
    assert (loaded.T, loaded.num_classes, loaded.sample_shape) == (ddpm.T, ddpm.num_classes, ddpm.sample_shape)
    torch.testing.assert_close(loaded.schedule.alpha_bar, ddpm.schedule.alpha_bar, rtol=0, atol=0)
    kw = dict(sampler="ddim", steps=4, eta=1.0)
    a = sample(ddpm, 1, classes=[2, 5], generator=torch.Generator().manual_seed(0), **kw)
    b = sample(loaded, 1, classes=[2, 5], generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(a, b)


def test_round_trip_keeps_schedule_and_net_config(make_ddpm, tmp_path):
    ddpm, folder = _saved(make_ddpm, tmp_path, schedule="cosine", T=30)
    loaded = load_model(folder)
    assert loaded.schedule.name == "cosine" and loaded.T == 30
    assert _state_equal(ddpm, loaded)


def test_config_is_what_config_json_holds_and_a_copy(make_ddpm, tmp_path):
    ddpm, folder = _saved(make_ddpm, tmp_path, schedule="cosine", T=30)
    config = ddpm.config
    assert config == json.load(open(os.path.join(folder, "config.json"))) == load_model(folder).config
    assert config["schedule"] == "cosine" and config["T"] == 30 and config["net"]["base_channels"] == 8
    config["net"]["base_channels"], config["T"] = 99, 7                  # a copy: the model's own stays as it was
    assert ddpm.config["net"]["base_channels"] == 8 and ddpm.config["T"] == 30
    rebuilt = DDPM(**ddpm.config)                                        # the same model, fresh weights
    assert rebuilt.config == ddpm.config and rebuilt.state_dict().keys() == ddpm.state_dict().keys()


def _train_steps(ddpm, optim, warmup, ema, batches, generator):
    return train_classconditional(ddpm, batches, 1, optim, "cpu", ema=ema, lr_scheduler=warmup, progress=False,
                                  generator=generator)


def _fresh(make_ddpm):
    ddpm = make_ddpm(image_size=8, num_classes=3, net=NET_8PX)
    optim = torch.optim.Adam(ddpm.parameters(), lr=1e-3)
    warmup = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / 10))
    return ddpm, optim, warmup, EMA(ddpm, 0.9)


def test_resumed_training_continues_identically(make_ddpm, tmp_path):
    batches = [_tiny_batch()] * 2
    # uninterrupted: 4 steps
    ddpm, optim, warmup, ema = _fresh(make_ddpm)
    g = torch.Generator().manual_seed(0)
    full = _train_steps(ddpm, optim, warmup, ema, batches, g) + _train_steps(ddpm, optim, warmup, ema, batches, g)

    # interrupted after 2 steps, saved, restored into new objects, 2 more steps
    ddpm1, optim1, warmup1, ema1 = _fresh(make_ddpm)
    g1 = torch.Generator().manual_seed(0)
    first = _train_steps(ddpm1, optim1, warmup1, ema1, batches, g1)
    save_training_state(tmp_path / "run", ddpm1, optim1, 2, ema=ema1, lr_scheduler=warmup1)
    ddpm2, optim2, warmup2, ema2 = _fresh(make_ddpm)
    with torch.no_grad():                               # make sure nothing carries over by accident
        for p in ddpm2.parameters():
            p.add_(1.0)
    step = load_training_state(tmp_path / "run", ddpm2, optim2, ema=ema2, lr_scheduler=warmup2)
    assert step == 2
    assert _state_equal(ddpm1, ddpm2) and _state_equal(ema1.model, ema2.model)
    second = _train_steps(ddpm2, optim2, warmup2, ema2, batches, g1)   # the data RNG is the caller's to keep

    assert first + second == full
    assert _state_equal(ddpm, ddpm2)
    assert _state_equal(ema.model, ema2.model)
    assert warmup2.last_epoch == warmup.last_epoch == 4


def test_training_folder_samples_from_ema(make_ddpm, tmp_path):
    ddpm, optim, warmup, ema = _fresh(make_ddpm)
    _train_steps(ddpm, optim, warmup, ema, [_tiny_batch()] * 2, torch.Generator().manual_seed(0))
    save_training_state(tmp_path, ddpm, optim, 2, ema=ema, lr_scheduler=warmup)
    loaded = load_model(str(tmp_path))
    assert _state_equal(loaded, ema.model)
    assert not _state_equal(loaded, ddpm)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_weights_raise_checkpoint_error(make_ddpm, tmp_path, damage):
    _, folder = _saved(make_ddpm, tmp_path)
    path = os.path.join(folder, "model.safetensors")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2] if damage == "truncate" else b"\x00\x01not a safetensors file" * 10)
    with pytest.raises(CheckpointError, match="model.safetensors.*not a readable safetensors file"):
        load_model(folder)
    assert issubclass(CheckpointError, ValueError)


def test_config_with_other_shapes_raises_checkpoint_error(make_ddpm, tmp_path):
    _, folder = _saved(make_ddpm, tmp_path)
    config_path = os.path.join(folder, "config.json")
    config = json.load(open(config_path))
    config["net"]["base_channels"] = 16
    json.dump(config, open(config_path, "w"))
    with pytest.raises(CheckpointError, match="does not fit.*wrong shapes"):
        load_model(folder)


def test_config_with_unknown_argument_raises_checkpoint_error(make_ddpm, tmp_path):
    _, folder = _saved(make_ddpm, tmp_path)
    config_path = os.path.join(folder, "config.json")
    config = json.load(open(config_path))
    config["n_layers"] = 3
    json.dump(config, open(config_path, "w"))
    with pytest.raises(CheckpointError, match="unknown keys.*n_layers"):
        load_model(folder)


def test_config_that_is_not_an_object_raises_checkpoint_error(make_ddpm, tmp_path):
    _, folder = _saved(make_ddpm, tmp_path)
    json.dump([1, 2, 3], open(os.path.join(folder, "config.json"), "w"))
    with pytest.raises(CheckpointError, match="not a DDPM config"):
        load_model(folder)


def test_invalid_json_config_raises_checkpoint_error(make_ddpm, tmp_path):
    _, folder = _saved(make_ddpm, tmp_path)
    open(os.path.join(folder, "config.json"), "w").write("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(folder)


def test_missing_config_raises_checkpoint_error(make_ddpm, tmp_path):
    _, folder = _saved(make_ddpm, tmp_path)
    os.remove(os.path.join(folder, "config.json"))
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(folder)


def test_missing_weights_raises_checkpoint_error(make_ddpm, tmp_path):
    _, folder = _saved(make_ddpm, tmp_path)
    os.remove(os.path.join(folder, "model.safetensors"))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model(folder)


def test_file_instead_of_folder_raises_checkpoint_error(make_ddpm, tmp_path):
    _, folder = _saved(make_ddpm, tmp_path)
    with pytest.raises(CheckpointError, match="is a file"):
        load_model(os.path.join(folder, "model.safetensors"))


def test_pickle_checkpoints_are_never_read(make_ddpm, tmp_path, monkeypatch):
    ddpm, folder = _saved(make_ddpm, tmp_path)
    os.remove(os.path.join(folder, "model.safetensors"))
    torch.save(ddpm.state_dict(), os.path.join(folder, "pytorch_model.bin"))

    def no_pickles(*args, **kwargs):
        raise AssertionError("torch.load (pickle) was called")

    monkeypatch.setattr(torch, "load", no_pickles)
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model(folder)


def test_save_pretrained_writes_a_real_model_card(make_ddpm, tmp_path):
    model = make_ddpm(dataset="mnist")
    model.save_pretrained(tmp_path / "m")
    card = ModelCard.load(tmp_path / "m" / "README.md")
    assert card.data.library_name == "ddpm" and "More Information Needed" not in card.text
    for field in ("| data |", "| network | UNet2D", "| parameters |", "| schedule | linear, T = 50", "ddpm.load_model("):
        assert field in card.text, field


def test_a_hand_written_card_is_kept_and_scores_go_into_ours(make_ddpm, tmp_path):
    model = make_ddpm()
    (tmp_path / "hand").mkdir()
    (tmp_path / "hand" / "README.md").write_text("# my own card\n")
    model.save_pretrained(tmp_path / "hand")
    assert (tmp_path / "hand" / "README.md").read_text() == "# my own card\n"
    model.save_pretrained(tmp_path / "ours")
    (tmp_path / "ours" / "evaluation.md").write_text("| sampler | accuracy |\n|---|---|\n| DDIM | 97.0% |\n")
    write_model_card(tmp_path / "ours", model)
    text = (tmp_path / "ours" / "README.md").read_text()
    assert "| DDIM | 97.0% |" in text and "Not measured yet" not in text
