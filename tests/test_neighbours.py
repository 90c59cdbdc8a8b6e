"""Nearest training neighbours (ddpm/eval/neighbours.py) and the app's search (ddpm/app/neighbours.py), with a tiny
random judge, tiny synthetic training sets and the tiny models of app_fixtures."""
import os
from types import SimpleNamespace

import gradio as gr
import pytest
import torch
from safetensors.torch import save_file

from app_fixtures import make_models_dir, stroke
from ddpm.app import neighbours as app_nb
from ddpm.app import registry
from ddpm.checkpoint import CheckpointError
from ddpm.data import ImageDataset, to_unit_range
from ddpm.eval.judge import Judge
from ddpm.eval.neighbours import (INDEX, SPACES, build_index, held_out_distances, index_images, judge_fingerprint,
                                  load_index, nearest, save_index, typical_distance)
from ddpm.pretrained import BUNDLED_DIR
from ddpm.tools.cli import main as cli

A = SimpleNamespace(session_hash="neighbour-visitor")


def tiny_judge(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Judge(1, 10, 28, width=4, dataset="mnist").eval()


def stroke_set(per_class=4, name="mnist"):
    """10 * per_class distinct stroke images (the class sets the angle, k shifts it), labels 0..9."""
    n = 10 * per_class
    images = torch.stack([stroke(i % 10, i // 10) for i in range(n)])
    return ImageDataset(to_unit_range(images), torch.arange(n) % 10, name, [str(c) for c in range(10)])


@pytest.fixture(scope="module")
def judge():
    return tiny_judge()


@pytest.fixture(scope="module")
def train_set():
    return stroke_set()


@pytest.fixture(scope="module")
def index(train_set, judge):
    return build_index(train_set, judge)


def brute_force(index, images, judge, space):
    """Every distance, the plain way: [B, N]."""
    if space == "pixels":
        q, keys = images.flatten(1), index_images(index, slice(None)).flatten(1)
    else:
        with torch.no_grad():
            q = judge.features(images).half().float()
        keys = index["features"].float()
    return torch.cdist(q.double(), keys.double())


@pytest.mark.parametrize("space", SPACES)
def test_a_training_image_finds_itself_at_distance_0(index, train_set, judge, space):
    rows = torch.tensor([3, 17, 38])
    positions, distances = nearest(index, train_set.images[rows], judge, k=3, space=space)
    assert positions.shape == distances.shape == (3, 3)
    assert torch.equal(positions[:, 0], rows)
    assert distances[:, 0].abs().max() < 1e-3 < distances[:, 1].min()
    assert torch.all(distances[:, 1:] >= distances[:, :-1])                            # nearest first


@pytest.mark.parametrize("space", SPACES)
def test_chunked_distances_equal_unchunked_and_brute_force(index, judge, space):
    queries = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    whole = nearest(index, queries, judge, k=4, space=space, chunk=10_000)
    chunked = nearest(index, queries, judge, k=4, space=space, chunk=7)             # 40 rows in 6 blocks
    assert torch.equal(whole[0], chunked[0]) and torch.allclose(whole[1], chunked[1])
    every = brute_force(index, queries, judge, space)
    best = every.sort(dim=1)
    assert torch.equal(whole[0], best.indices[:, :4])
    assert torch.allclose(whole[1].double(), best.values[:, :4], rtol=1e-4, atol=1e-4)


def test_nearest_refuses_bad_arguments(index, judge, train_set):
    x = train_set.images[:2]
    with pytest.raises(ValueError, match="space 'cosine'"):
        nearest(index, x, judge, space="cosine")
    with pytest.raises(ValueError, match=r"k = 41 must be in \[1, 40\]"):
        nearest(index, x, judge, k=41, space="pixels")
    with pytest.raises(ValueError, match="judge=None"):
        nearest(index, x, None, space="features")
    assert nearest(index, x, None, k=1, space="pixels")[0][:, 0].tolist() == [0, 1]   # pixels need no judge
    other = tiny_judge(seed=1)
    with pytest.raises(ValueError, match=f"come from judge {judge_fingerprint(judge)}, this judge is "
                                         f"{judge_fingerprint(other)}"):
        nearest(index, x, other, space="features")
    with pytest.raises(ValueError, match=r"shape \(1, 32, 32\)"):
        nearest(index, torch.zeros(1, 1, 32, 32), judge, space="pixels")


def test_a_stratified_subset_holds_per_class_of_each_class_and_follows_its_seed(train_set, judge):
    a, again = build_index(train_set, judge, per_class=2, seed=3), build_index(train_set, judge, per_class=2, seed=3)
    other = build_index(train_set, judge, per_class=2, seed=4)
    assert torch.bincount(a["labels"]).tolist() == [2] * 10
    assert (a["n"], a["n_total"], a["per_class"], a["seed"], a["dataset"], a["split"]) == (20, 40, 2, 3, "mnist", "train")
    assert torch.equal(a["images"], again["images"]) and torch.equal(a["features"], again["features"])
    assert not torch.equal(a["images"], other["images"])
    # every image of the subset is a training image of its label
    whole = torch.from_numpy(((train_set.images[:, 0] + 1) * 127.5).round().numpy().astype("uint8"))
    for image, label in zip(a["images"], a["labels"], strict=True):
        match = (whole == image).flatten(1).all(1).nonzero()[:, 0]
        assert len(match) == 1 and train_set.labels[match[0]] == label
    assert a["images"].dtype == torch.uint8 and a["images"].shape == (20, 28, 28)
    assert a["features"].dtype == torch.float16 and a["features"].shape == (20, 128)
    with pytest.raises(ValueError, match="per_class=5, but class 0 has only 4 images"):
        build_index(train_set, judge, per_class=5)


def test_save_and_load_round_trip_and_bad_files(tmp_path, train_set, judge):
    assert load_index(tmp_path) is None
    for per_class in (None, 3):
        index = build_index(train_set, judge, per_class=per_class, seed=2)
        path = save_index(tmp_path / str(per_class), index)
        back = load_index(os.path.dirname(path))
        assert set(back) == set(index)
        for key, value in index.items():
            assert torch.equal(back[key], value) if torch.is_tensor(value) else back[key] == value, key
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / INDEX).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_index(tmp_path / "bad")
    save_file({"images": index["images"]}, str(tmp_path / "bad" / INDEX), metadata={"dataset": "mnist"})
    with pytest.raises(CheckpointError, match=r"lacks \['labels', 'features', 'split'"):
        load_index(tmp_path / "bad")
    save_file({k: index[k].float() for k in ("images", "labels", "features")}, str(tmp_path / "bad" / INDEX),
              metadata={k: str(index[k]) for k in ("dataset", "split", "n", "n_total", "per_class", "seed", "judge")})
    with pytest.raises(CheckpointError, match="images uint8"):
        load_index(tmp_path / "bad")


def test_typical_distance_is_the_median_nearest_distance_of_held_out_images():
    # an index of one black and one white 4x4 image; held-out grey images at values v lie at
    # min(|v + 1|, |1 - v|) * sqrt(16) from it in pixel space
    index = dict(images=torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1).expand(2, 4, 4).contiguous(),
                 labels=torch.tensor([0, 1]), features=torch.zeros(2, 128, dtype=torch.float16), judge="-")
    values = [-0.5, 0.2, 0.9, -0.95, 0.6]
    held = torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)
    expected = sorted(min(abs(v + 1), abs(1 - v)) * 4 for v in values)
    assert torch.allclose(held_out_distances(index, held, None, space="pixels"),
                          torch.tensor([min(abs(v + 1), abs(1 - v)) * 4 for v in values]), atol=1e-5)
    assert typical_distance(index, held, None, space="pixels") == pytest.approx(expected[2], abs=1e-5)


def test_class_thresholds_read_each_class_against_its_own_held_out_images():
    held_labels = torch.tensor([0] * 40 + [1] * 40 + [2] * 3)
    distances = torch.cat([torch.linspace(1, 2, 40), torch.linspace(5, 9, 40), torch.tensor([0.5, 7.0, 8.0])])
    got = app_nb.class_thresholds(distances, held_labels, torch.tensor([0, 1, 2, 1]))
    own = [distances[held_labels == c].quantile(app_nb.LOW) for c in (0, 1)]
    assert torch.allclose(got, torch.stack([own[0], own[1], distances.quantile(app_nb.LOW), own[1]]))


def test_the_report_says_copying_only_for_samples_closer_than_held_out_images():
    reference = {"labels": torch.zeros(50, dtype=torch.long), "features": torch.linspace(4, 8, 50),
                 "pixels": torch.linspace(5, 9, 50)}
    threshold = {s: torch.full((3,), float(reference[s].quantile(app_nb.LOW))) for s in SPACES}
    far = {s: (torch.zeros(3, 3, dtype=torch.long), torch.full((3, 3), 10.0)) for s in SPACES}
    text = app_nb.neighbours_report("the bundled index", reference, far, threshold, ["a", "b", "c"])
    assert "no sign of copying" in text and "| samples closer than that | 0 / 3 | 0 / 3 |" in text
    copied = dict(far, pixels=(far["pixels"][0], torch.tensor([[10.0] * 3, [0.0, 9, 9], [10.0] * 3])))
    text = app_nb.neighbours_report("the bundled index", reference, copied, threshold, ["a", "b", "c"])
    assert "no sign of copying" not in text and "by pixels: #2 (b)" in text and "| 0 / 3 | 1 / 3 |" in text


# ---------------------------------------------------------------------------------------------
# The app's handler and the CLI, with the tiny models of app_fixtures
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory, judge):
    """Tiny models; mnist with a judge and an index (2 per class of 40 strokes) beside it, fashion_mnist with a
    judge but no index."""
    root = make_models_dir(tmp_path_factory.mktemp("models"))
    judge.save(os.path.join(root, "mnist"))
    save_index(os.path.join(root, "mnist"), build_index(stroke_set(), judge, per_class=2))
    tiny_judge(seed=2).save(os.path.join(root, "fashion_mnist"))
    registry.set_registry(root, use_judges=True)
    yield root
    registry.set_registry(BUNDLED_DIR)


@pytest.fixture
def no_data(monkeypatch):
    monkeypatch.delenv("DDPM_DATA", raising=False)


@pytest.mark.parametrize("per_class", [1, 2])
def test_the_handler_shows_one_row_per_sample_and_names_the_set(models, no_data, per_class):
    sheet, text = app_nb.neighbours_run("mnist", "ddim", 3, 2.0, 0, per_class, request=A)
    assert sheet.height == app_nb.HEADER + 10 * per_class * app_nb.row_height(28)
    assert sheet.width > (1 + 2 * app_nb.K) * 28 * app_nb.SCALE
    assert "the bundled index: 20 of 40 training images, 2 per class, seed 0" in text
    assert "the 30 real test images" in text                            # make_models_dir: 3 examples per class
    assert text.count("/ " + str(10 * per_class)) == 2                  # samples closer, per space


def test_the_handler_searches_the_full_training_set_from_ddpm_data(models, fake_data, monkeypatch):
    root, expected = fake_data
    monkeypatch.setenv("DDPM_DATA", str(root))
    sheet, text = app_nb.neighbours_run("mnist", "ddim", 3, 2.0, 0, 1, request=A)
    n = len(expected["mnist"]["train"][0])
    assert f"the full training set from DDPM_DATA={root}: {n:,} images" in text
    assert sheet.height == app_nb.HEADER + 10 * app_nb.row_height(28)
    monkeypatch.setenv("DDPM_DATA", str(root / "nothing here"))       # no dataset there: the bundled index
    _, text = app_nb.neighbours_run("mnist", "ddim", 3, 2.0, 0, 1, request=A)
    assert "the bundled index: 20 of 40" in text and "does not hold it" in text


def test_the_handler_names_what_is_missing(models, no_data):
    with pytest.raises(gr.Error, match=f"'fashion_mnist' cannot be searched .* no index of its training set \\({INDEX}"):
        app_nb.neighbours_run("fashion_mnist", "ddim", 3, 2.0, 0, 1, request=A)
    registry.set_registry(models, use_judges=False)
    try:
        with pytest.raises(gr.Error, match="no judge classifier .*DDPM_APP_JUDGE=0") as err:
            app_nb.neighbours_run("mnist", "ddim", 3, 2.0, 0, 1, request=A)
        assert "index" not in str(err.value)                         # the index is there
    finally:
        registry.set_registry(models, use_judges=True)


def test_an_index_of_another_judge_is_refused(tmp_path, no_data, judge):
    root = make_models_dir(tmp_path, per_class=2)
    folder = os.path.join(root, "mnist")
    tiny_judge(seed=5).save(folder)
    save_index(folder, build_index(stroke_set(), judge, per_class=1))
    registry.set_registry(root, use_judges=True)
    try:
        with pytest.raises(gr.Error, match="build the index again with this judge"):
            app_nb.neighbours_run("mnist", "ddim", 3, 2.0, 0, 1, request=A)
    finally:
        registry.set_registry(BUNDLED_DIR)


@pytest.mark.parametrize("bad", [0, 5, 2.5])
def test_a_bad_per_class_is_named(models, no_data, bad):
    with pytest.raises(gr.Error, match=f"samples per class = {bad}"):
        app_nb.neighbours_run("mnist", "ddim", 3, 2.0, 0, bad, request=A)


def test_the_cli_writes_an_index_that_load_index_reads(tmp_path, fake_data, judge, capsys):
    root, expected = fake_data
    models = make_models_dir(tmp_path / "models", per_class=1)
    judge.save(os.path.join(models, "mnist"))
    cli(["neighbours", "--model", os.path.join(models, "mnist"), "--data", str(root), "--per-class", "1",
         "--out", str(tmp_path / "out")])
    index = load_index(tmp_path / "out")
    images, labels = expected["mnist"]["train"]
    assert (index["n"], index["n_total"], index["per_class"], index["dataset"]) == (len(set(labels)), len(labels), 1,
                                                                                    "mnist")
    assert torch.equal(index["labels"].sort().values, torch.as_tensor(sorted(set(labels))))
    assert index["judge"] == judge_fingerprint(judge)
    assert "wrote" in capsys.readouterr().out
    cli(["neighbours", "--model", os.path.join(models, "mnist"), "--data", str(root), "--per-class", "0"])
    whole = load_index(os.path.join(models, "mnist"))                  # beside the model, the whole set
    assert whole["per_class"] is None and torch.equal(whole["images"][:, None], torch.as_tensor(images))
