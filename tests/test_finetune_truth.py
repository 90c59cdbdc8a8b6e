"""Fine-tuning tells the truth (issue 34, item 5), on tiny models: the judge can say "none of these" (calibrated on
real images, so a triangle is not a zero), a new class starts from a fresh embedding row and trains with rehearsal
(old labels held where the base model had them, on real examples and on the new images), the default run adds
ready-made triangles as a new class, shows progress at once and leaves the new class picked in the other tabs.
benchmarks/forgetting.py measures the forgetting itself on the bundled models."""
import copy
import time
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import torch

from app_fixtures import judged_registry, stroke
from ddpm.app import finetune, grid, reverse
from ddpm.data import to_unit_range
from ddpm.eval.judge import NONE, NONE_RATE, Judge, load_judge

V = SimpleNamespace(session_hash="truth")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    with judged_registry(tmp_path_factory.mktemp("models")) as root:
        yield root


def strokes(n):
    """n <= 50 different stroke images (app_fixtures.stroke: 10 angles, 5 shifts), uint8 [n, 28, 28]."""
    return torch.stack([stroke(k % 10, k // 10 - 2) for k in range(n)])


# ---------------------------------------------------------------------------------------------- the judge
def test_none_of_these_is_calibrated_on_the_remembered_real_images():
    judge = Judge(width=4).eval()
    with pytest.raises(ValueError, match="remembers no real images.*remember"):
        judge.classify(torch.zeros(1, 1, 28, 28), none_of_these=True)
    real = strokes(50)
    judge.remember(real)
    features = judge.features(to_unit_range(real)).detach()
    d = torch.cdist(features, features, compute_mode="donot_use_mm_for_euclid_dist").fill_diagonal_(float("inf")).min(1).values
    assert judge.none_beyond == pytest.approx(float(d.quantile(1 - NONE_RATE)))     # each against the others
    assert float((d > judge.none_beyond).float().mean()) <= NONE_RATE + 1 / len(d)        # a quantile: one image off
    x = to_unit_range(real)
    assert torch.equal(judge.classify(x, none_of_these=True), judge.classify(x))       # a remembered image: its label
    far = torch.full((3, 1, 28, 28), 1.0)                                              # white squares: like nothing seen
    assert (judge.classify(far, none_of_these=True) == NONE).all()
    assert (judge.classify(far) >= 0).all()                                            # without: an argmax as before


def test_load_judge_remembers_the_examples_beside_it(models):
    judge = load_judge(f"{models}/mnist")
    assert judge.reference is not None and judge.reference.shape == (30, 1, 28, 28)
    assert "none_beyond" not in judge.config                                           # data, not a setting: not saved


def test_the_bundled_judge_says_none_of_these_to_triangles_not_to_real_digits():
    """Measured on the bundled MNIST judge: 5% of the real test images beside it get NONE (the calibration), the
    ready-made triangles almost all do (benchmarks/forgetting.py prints the rates on held-out images too)."""
    judge = load_judge("mnist")
    triangles = to_unit_range(finetune.example_drawings(32, seed=1))
    assert float((judge.classify(triangles, none_of_these=True) == NONE).float().mean()) >= 0.9
    real = judge.reference[::4]
    assert float((judge.classify(real, none_of_these=True) == NONE).float().mean()) == 0.0   # remembered: distance 0


def test_the_grid_counts_none_of_these_as_not_recognised():
    judge = Judge(width=4).eval()
    judge.remember(strokes(50))
    x = torch.cat([to_unit_range(strokes(4)), torch.full((4, 1, 28, 28), 1.0)])
    labels = judge.classify(x)
    hits = grid.judged_hits(judge, x, [int(labels[0]), int(labels[4])], 4)
    assert hits[1] == 0 and hits[0] >= int((labels[:4] == labels[0]).sum())


# ---------------------------------------------------------------------------------------------- a new class
def test_a_new_class_gets_a_fresh_row_and_the_old_classes_are_untouched(make_ddpm):
    base = make_ddpm(T=20)
    model = finetune.with_new_class(copy.deepcopy(base), "triangle")
    old, new = base.net.class_emb.weight, model.net.class_emb.weight            # [K + 1, D], [K + 2, D]
    K = base.num_classes
    assert torch.equal(new[:K], old[:K]) and torch.equal(new[K + 1], old[K])       # old rows; null row one index up
    assert torch.allclose(new[K], old[:K].mean(0)) and not any(torch.equal(new[K], row) for row in old)
    x, t = torch.randn(4, 1, 28, 28), torch.tensor([3, 7, 11, 19])
    for y_base, y_model in ((torch.tensor([0, 3, 5, 9]), torch.tensor([0, 3, 5, 9])),
                            (torch.full((4,), K), torch.full((4,), K + 1))):        # classes, then the null class
        assert torch.allclose(base.eps(x, t, y_base), model.eps(x, t, y_model), atol=1e-6)


def rehearsal(make_ddpm, old_examples=True):
    base = make_ddpm(T=20)
    model = finetune.with_new_class(copy.deepcopy(base), "triangle")
    own = to_unit_range(finetune.example_drawings(4))
    old, labels = (to_unit_range(strokes(30)), torch.arange(30) % 10) if old_examples else (None, None)
    return base, model, finetune.Rehearsal(model, base, own, old, labels, torch.Generator().manual_seed(0))


def test_every_batch_rehearses_the_old_classes_on_real_examples_and_on_the_new_images(make_ddpm):
    base, model, train = rehearsal(make_ddpm)
    n, held, old_n, K = finetune.NEW_PER_BATCH, finetune.HELD_PER_BATCH, finetune.OLD_PER_BATCH, base.num_classes
    x_new, x_old, y_old = train.batch()
    assert len(x_new) == n and len(x_old) == len(y_old) == held + old_n and held + old_n >= 2 * n   # more held than learnt
    assert ((y_old >= 0) & (y_old < K) | (y_old == model.null_class)).all()          # old labels or the null class
    old = to_unit_range(strokes(30))
    assert all(any(torch.equal(x, o) for o in old) for x in x_old[held:])            # real examples of old classes
    assert not any(any(torch.equal(x, o) for o in old) for x in x_old[:held])        # the new images, old labels
    assert len(rehearsal(make_ddpm, old_examples=False)[2].batch()[1]) == held       # no examples: the new images


def test_the_old_labels_are_pulled_to_the_base_models_prediction(make_ddpm):
    """With no new images, the loss is the old labels' distance to the base model: zero before any step (the
    targets are the base's predictions, the null class mapped one index down), whatever the noise."""
    base, model, train = rehearsal(make_ddpm)
    _, x_old, y_old = train.batch()
    y_old[:3] = model.null_class
    loss = finetune.rehearsal_step(model, base, x_old[:0], x_old, y_old, train.optim, generator=torch.Generator())
    assert float(loss) == 0.0


def test_only_the_new_row_learns_at_first_then_the_shared_weights_warm_up(make_ddpm, monkeypatch):
    """The first ROW_FIRST steps change nothing but the new class's row: every old class is exactly as it was; the
    old rows and the null row never change."""
    monkeypatch.setattr(finetune, "ROW_FIRST", 3)
    base, model, train = rehearsal(make_ddpm)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    losses = train(3, 60, lambda: False)
    now, new = model.state_dict(), model.num_classes - 1
    rows, before = now["net.class_emb.weight"], start["net.class_emb.weight"]
    assert len(losses) == 3 and not torch.equal(rows[new], before[new])
    assert all(torch.equal(v, start[k]) for k, v in now.items() if k != "net.class_emb.weight")
    train(2, 60, lambda: False)
    assert any(not torch.equal(v, start[k]) for k, v in model.state_dict().items() if k != "net.class_emb.weight")
    rows = model.state_dict()["net.class_emb.weight"]
    assert torch.equal(rows[:new], before[:new]) and torch.equal(rows[new + 1:], before[new + 1:])
    assert not model.training                                                          # back in eval mode for previews


def test_the_ready_made_drawings_are_triangles_in_mnist_style():
    drawings = finetune.example_drawings()
    assert drawings.shape == (finetune.EXAMPLE_DRAWINGS, 28, 28) and drawings.dtype == np.uint8
    assert np.array_equal(drawings, finetune.example_drawings())                      # the same every time
    assert len({d.tobytes() for d in drawings}) == len(drawings)                       # all different
    assert drawings[:, :3].max() == 0 and drawings[:, :, :3].max() == 0 and drawings.max() > 200   # MNIST's border


# ---------------------------------------------------------------------------------------------- the default run
def test_the_default_run_adds_triangles_shows_progress_at_once_and_picks_the_new_class(models):
    start, times, outs = time.perf_counter(), [], []
    for out in finetune.finetune_run("mnist", "shapes", [], "triangle", None, "steps", 3, 5, request=V):
        times.append(time.perf_counter() - start)
        outs.append(out)
    assert times[0] < 2.0 and outs[0][2] is None and outs[0][3] is None               # at once, old pictures cleared
    assert "drawing the 'before' samples</b> — 1 / 10 sampling steps" in outs[1][0]     # the bar fills step by step
    assert "width:10.0%" in outs[1][0] and times[1] - times[0] < 3.0
    status, name = outs[-1][4], outs[-1][6]["value"]
    assert "Done after 3 steps" in status and "new class **triangle** picked" in status
    assert f"{finetune.EXAMPLE_DRAWINGS} ready-made drawings as the new class 'triangle'" in outs[0][4]
    assert "| triangle | none of these:" in status and "| 0 - zero |" in status          # the judge's table, all rows
    assert finetune.added_classes(name, V) == ["triangle"] and finetune.added_classes("mnist", V) == []
    assert reverse.reverse_class_choices(name, request=V)["value"] == "triangle"
    assert grid.grid_class_choices(name, request=V)["value"][0] == "triangle"
    assert reverse.reverse_class_choices("mnist", request=V)["value"] == "0 - zero"


def test_a_new_class_needs_a_trained_model(models):
    with pytest.raises(gr.Error, match="a new class is added to a trained model"):
        next(finetune.finetune_run("scratch:mnist", "shapes", [], "triangle", None, "steps", 3, 5, request=V))
    with pytest.raises(gr.Error, match=r"data source 'web' is unknown; choose one of \['shapes', 'own', 'classes'\]"):
        next(finetune.finetune_run("mnist", "web", [], "triangle", None, "steps", 3, 5, request=V))
