"""The Paper tab (ddpm/app/paper.py) with the tiny test models: every panel gives a figure, the panels with images a
strip, errors are plain text, and a bundled model opens on the results kept beside it."""
import os
import re

import gradio as gr
import pytest
import torch
from PIL import Image

from app_fixtures import make_models_dir
from ddpm.app import openers, paper, registry
from ddpm.pretrained import BUNDLED_DIR


@pytest.fixture(scope="module", autouse=True)
def models(tmp_path_factory):
    root = make_models_dir(tmp_path_factory.mktemp("models"), judges=("mnist",))
    registry.set_registry(root, use_judges=True)
    budgets = paper.TABLE2
    paper.TABLE2 = {"quick": dict(seeds=1, steps=3, n_samples=40), "full": dict(seeds=2, steps=3, n_samples=40)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    openers.clear()
    yield root
    torch.set_num_threads(threads)
    paper.TABLE2 = budgets
    openers.clear()
    registry.set_registry(BUNDLED_DIR)


@pytest.mark.parametrize("panel", list(paper.PANELS))
def test_every_panel_draws_a_figure(panel):
    picture, strip, report = paper.paper_run("mnist", panel, 2, False, 2, 2.0, 0)
    assert isinstance(picture, Image.Image) and picture.width > 400
    assert ("strip" in str(strip)) or strip is None or isinstance(strip, (Image.Image, dict))
    assert "computed in" in report and paper.PANELS[panel] in report


def test_exact_bound_stops_and_says_so():
    sid = "paper-stop"
    registry.registry().session(sid)
    request = type("R", (), {"session_hash": sid})()
    calls = []

    def progress(fraction, desc=None):
        calls.append(fraction)
        registry.registry().session(sid).stops["paper"].stop("Stop was pressed")

    picture, _, report = paper.paper_run("mnist", "bits", 16, True, 2, 1.0, 0, request=request, progress=progress)
    assert calls and "Stopped early" in report and isinstance(picture, Image.Image)


def test_errors_are_plain_text():
    for args, said in ((("mnist", "nope", 2), "unknown panel 'nope'"), (("mnist", "bits", 99), "test images must be 1..16"),
                       (("fashion_mnist", "decide", 2), "needs the model's judge")):    # that fixture has no judge
        with pytest.raises(gr.Error) as err:
            paper.paper_run(*args, False, 4, 1.0, 0)
        assert said in err.value.message and "<" not in err.value.message


def test_opening_is_made_once_and_a_kept_result_is_shown(models):
    first = paper.paper_opening("mnist", "flow")
    assert isinstance(first[0], Image.Image) and "opens on this panel" in first[2]
    again = paper.paper_opening("mnist", "flow")
    assert again[2] == first[2]
    folder = os.path.join(models, "fashion_mnist")
    Image.new("RGB", (20, 10)).save(os.path.join(folder, "paper_bits.png"))
    with open(os.path.join(folder, "paper_bits.md"), "w") as f:
        f.write("kept bound")
    picture, _, report = paper.paper_opening("fashion_mnist", "bits")
    assert picture.size == (20, 10) and report.startswith("kept bound")


def test_table2_panel_tables_every_cell_and_stops():
    picture, strip, report = paper.paper_run("mnist", "table2", 2, True, 2, 1.0, 0)
    assert isinstance(picture, Image.Image) and report.count("| eps |") == 1 and "Stopped" not in report
    assert re.search(r"\| eps \| \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", report)             # the full budget: seed bands
    sid = "paper-table2-stop"
    registry.registry().session(sid)
    request = type("R", (), {"session_hash": sid})()
    seen = []

    def progress(fraction, desc=None):
        seen.append(desc)
        registry.registry().session(sid).stops["paper"].stop("Stop was pressed")

    _, _, report = paper.paper_run("mnist", "table2", 2, False, 2, 1.0, 0, request=request, progress=progress)
    assert seen == ["Table 2: 1 of 10 runs"] and "Stopped after 1 of 10 runs" in report and "not run" in report


def test_the_table2_opening_is_made_once_for_every_model(monkeypatch):
    """Panel 7 is the same for every model: without a kept table, opening it on a second model computes nothing."""
    openers.clear()
    made = []
    real = paper.compute
    monkeypatch.setattr(paper, "compute", lambda *a, **k: made.append(a[0]) or real(*a, **k))
    first = paper.paper_opening("mnist", "table2")
    second = paper.paper_opening("fashion_mnist", "table2")
    assert made == ["mnist"] and first[2] == second[2]
