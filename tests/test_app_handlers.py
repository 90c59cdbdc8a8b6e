"""The app's handlers, called directly with tiny models (no bundled model, no server, no browser)."""
import os
import time
import zipfile
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from app_fixtures import make_models_dir
from ddpm.app import edit, explain, finetune, forward, grid, jobs, pickers, playground, registry, reverse
from ddpm.app.inputs import UNCONDITIONAL
from ddpm.app.settings import changed_settings
from ddpm.pretrained import BUNDLED_DIR

A, B = SimpleNamespace(session_hash="visitor-a"), SimpleNamespace(session_hash="visitor-b")


@pytest.fixture(scope="module", autouse=True)
def models(tmp_path_factory):
    root = make_models_dir(tmp_path_factory.mktemp("models"))
    registry.set_registry(root, use_judges=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # as conftest.py sets: far faster on 2 shared cores
    yield root
    torch.set_num_threads(threads)
    registry.set_registry(BUNDLED_DIR)


def drain(gen):
    """The last update a streaming handler yields."""
    *_, last = gen
    return last


def test_registry_lists_the_injected_models_and_examples():
    assert registry.registry().model_names() == ["mnist", "fashion_mnist"]
    images, labels = registry.registry().examples("mnist")
    assert images.dtype == torch.uint8 and images.shape == (30, 28, 28) and labels.dtype == torch.int64
    with pytest.raises(gr.Error, match="not available"):
        registry.registry().model("cifar10")
    with pytest.raises(gr.Error, match=r"dataset 'nope' is not available; choose one of \['mnist', 'fashion_mnist'\]"):
        registry.registry().examples("nope")


def test_forward_view_outputs_and_speed():
    x0, preview = forward.forward_example("mnist", 3)
    assert x0.shape == (28, 28) and preview.size == (224, 224)
    forward.forward_view(x0, "cosine", 1000, 10, 0)                       # warm the caches
    start = time.perf_counter()
    xt, eps, formula, strip, plot, hist, warning = forward.forward_view(x0, "cosine", 1000, 500, 0)
    assert time.perf_counter() - start < 1.0
    assert xt["value"].size == (280, 280) and eps.size == (280, 280)       # 28 x 28 upscaled 10x
    assert "t = 500 of T = 1000" in xt["alt_text"]                 # said for screen readers
    assert "\\bar\\alpha_t" in formula and "t = 500" in formula
    assert strip.width >= 10 * 28 * 4 and plot.width >= 800 and hist.width >= 500
    assert warning == ""                                           # T = 1000 reaches pure noise
    assert "far from pure noise" in forward.forward_view(x0, "linear", 20, 5, 0)[-1]
    a = np.asarray(forward.forward_view(x0, "linear", 1000, 1, 0)[0]["value"])
    b = np.asarray(forward.forward_view(x0, "linear", 1000, 900, 0)[0]["value"])
    assert not np.array_equal(a, b)


def test_forward_rejects_bad_inputs_and_accepts_drawings():
    with pytest.raises(gr.Error, match=r"T = 5 .*\[10, 2000\]"):
        forward.forward_view(None, "linear", 5, 0, 0)
    with pytest.raises(gr.Error, match=r"t = 100 .*\[0, 99\]"):
        forward.forward_view(None, "linear", 100, 100, 0)
    with pytest.raises(gr.Error, match="schedule 'quadratic'"):
        forward.forward_view(None, "quadratic", 100, 1, 0)
    drawing = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    drawing.paste((0, 0, 0, 255), (100, 40, 140, 240))              # a black bar on transparent white
    x0, _ = forward.forward_upload({"background": None, "layers": [], "composite": drawing})
    assert x0.shape == (28, 28) and x0.max() > 200 and x0[0, 0] == 0   # inverted: white stroke on black
    with pytest.raises(gr.Error, match="empty"):
        forward.forward_upload(Image.new("RGB", (100, 100), "white"))


def gif_frames(path):
    """(distinct frames, seconds they take without the held last one) of an animated GIF."""
    gif, frames, ms = Image.open(path), set(), []
    for k in range(gif.n_frames):
        gif.seek(k)
        frames.add(gif.convert("L").tobytes())
        ms.append(gif.info["duration"])
    return len(frames), sum(ms[:-1]) / 1000


def test_reverse_streams_records_and_plays_the_run_as_an_animation():
    gen = reverse.reverse_run("mnist", "3 - three", "ddpm", 50, 0.0, 2.0, 0, 4, request=A)
    start = time.perf_counter()
    first = next(gen)
    assert time.perf_counter() - start < 5.0
    picture, text, _, _ = first
    assert picture["value"].width >= 2 * 2 * 28 * 8               # x_t beside x0_hat, each a 2x2 grid 8x upscaled
    assert "step 1 / 100" in text and "Alg. 2, line 4" in text and "\\sigma_t" in text and "`mnist`" in text
    animation, text, scrub, gif = drain(gen)
    assert "step 100 / 100" in text and animation["value"] == gif and gif.endswith(".gif")
    frames, seconds = gif_frames(gif)
    assert frames == reverse.ANIMATION_FRAMES and 3.7 <= seconds <= 4.3        # of 101 recorded, in about 4 s, then held
    assert "the judge" not in animation["alt_text"] and "4 samples of class 3 - three" in animation["alt_text"]
    replayed, again = reverse.reverse_animate(2, request=A)
    frames, seconds = gif_frames(again)
    assert replayed["value"] == again != gif and frames == reverse.ANIMATION_FRAMES and 2 <= seconds <= 2.6
    n = scrub["maximum"] + 1
    frame, caption = reverse.reverse_scrub(n - 1, request=A)
    assert frame["value"].width == picture["value"].width and "result" in caption
    with pytest.raises(gr.Error, match="frame"):
        reverse.reverse_scrub(n + 5, request=A)
    with pytest.raises(gr.Error, match="nothing recorded"):
        reverse.reverse_scrub(0, request=B)
    with pytest.raises(gr.Error, match=r"animation length \(s\) = 9 is outside the allowed range \[2, 6\]"):
        reverse.reverse_animate(9, request=A)


def test_the_reverse_tab_opens_on_a_watchable_run_made_once():
    """Issue 34, items 1 and 2: a finished run of the default settings, at least WATCH_STEPS + 1 frames of x_t
    beside x0_hat played in 2-6 s, made once per model."""
    from ddpm.app import openers
    start = time.perf_counter()
    animation, text, scrub, gif = reverse.reverse_opening("mnist", request=A)
    frames, seconds = gif_frames(gif)
    assert frames >= 20 and 2 <= seconds <= 6 and scrub["interactive"] is False
    assert "step 50 / 50" in text and "opens on this run" in text               # the tiny models: DDIM-50
    made = time.perf_counter() - start
    start = time.perf_counter()
    again = reverse.reverse_opening("mnist", request=B)
    assert again[3] == gif and time.perf_counter() - start < min(0.5, made)
    assert reverse.watchable(("dpmpp_2m", 10)) == ("dpmpp_2m", reverse.WATCH_STEPS)
    assert reverse.watchable(("ddpm", 1)) == ("ddpm", 1)
    assert openers.shared_key("mnist", "someone") is not None and openers.shared_key("nope", "someone") is None


def test_the_finetune_tab_opens_on_the_shipped_example_or_on_the_model_as_it_is(tmp_path):
    """Issue 34, item 1: before and after of the tab's default run, shipped beside a bundled model; without them the
    fixed-seed preview of the model as it is, in both places."""
    from ddpm.app import openers
    before, now, note = openers.finetune_opening("mnist", request=A)
    assert before["value"] is now["value"] and "untrained" in note
    folder = os.path.join(registry.registry().models_dir, "fashion_mnist")
    shipped = [os.path.join(folder, name) for name in openers.FINETUNE_EXAMPLE]
    try:
        for path in shipped[:2]:
            Image.new("L", (28, 28)).save(path)
        with open(shipped[2], "w") as f:
            f.write("**Done after 99 steps.**")
        before, now, note = openers.finetune_opening("fashion_mnist", request=A)
        assert (before["value"], now["value"]) == tuple(shipped[:2]) and "Done after 99 steps" in note
    finally:
        for path in shipped:
            os.remove(path)


def test_the_shipped_example_is_the_tabs_default_run(monkeypatch):
    """`python -m ddpm.app.openers <model>` runs the tab's default run (its budget kind, a smaller budget here) and
    writes the files the tab then opens on."""
    from ddpm.app import finetune, openers
    monkeypatch.setattr(finetune, "BUDGET", 3)
    paths = openers.write_finetune_example("fashion_mnist")
    try:
        assert [os.path.basename(p) for p in paths] == list(openers.FINETUNE_EXAMPLE)
        assert Image.open(paths[0]).size == Image.open(paths[1]).size
        note = open(paths[2]).read()
        assert note.startswith("**Done after 3 steps") and "python -m ddpm.app.openers fashion_mnist" in note
        before, now, text = openers.finetune_opening("fashion_mnist", request=A)
        assert (before["value"], now["value"]) == tuple(paths[:2]) and "Done after 3 steps" in text
    finally:
        for path in paths:
            os.remove(path)


def test_reverse_ddim_formula_and_determinism():
    run = lambda: drain(reverse.reverse_run("mnist", UNCONDITIONAL, "ddim", 10, 0.0, 1.0, 7, 1, request=A))
    a, b = run(), run()
    assert open(a[3], "rb").read() == open(b[3], "rb").read()
    assert "DDIM" in a[1] and "step 10 / 10" in a[1]


def test_reverse_dpm_solver_streams_its_formula():
    out = drain(reverse.reverse_run("mnist", "3 - three", "dpmpp_2m", 6, 0.0, 2.0, 0, 1, request=A))
    assert "DPM-Solver++(2M)" in out[1] and "step 6 / 6" in out[1] and "order 1" in out[1]   # the last step: order 1
    img, _, _ = grid.grid_run("mnist", ["0 - zero"], "dpmpp_2m", 5, 2.0, 0, 2, request=A)
    assert img["value"].width > 0


def test_stop_ends_a_reverse_run():
    gen = reverse.reverse_run("mnist", "1 - one", "ddpm", 50, 0.0, 1.0, 0, 2, request=B)
    next(gen)
    reverse.reverse_stop(request=B)
    *_, text, scrub, gif = drain(gen)
    assert "stopped" in text and ("step 1 / 100" in text or "step 2 / 100" in text)
    assert os.path.isfile(gif)


def test_reverse_rejects_bad_inputs():
    with pytest.raises(gr.Error, match=r"batch = 17 .*\[1, 16\]"):
        next(reverse.reverse_run("mnist", "1 - one", "ddpm", 50, 0.0, 1.0, 0, 17, request=A))
    with pytest.raises(gr.Error, match=r"steps = 500 .*\[1, 100\]"):
        next(reverse.reverse_run("mnist", "1 - one", "ddim", 500, 0.0, 1.0, 0, 1, request=A))
    with pytest.raises(gr.Error, match="unknown classes"):
        next(reverse.reverse_run("mnist", "Trouser", "ddim", 5, 0.0, 1.0, 0, 1, request=A))


def test_grid_has_one_labelled_row_per_class():
    classes = ["0 - zero", "7 - seven", "3 - three"]
    img, judge, png = grid.grid_run("mnist", classes, "ddim", 5, 2.0, 0, 4, request=A)
    assert img["value"].height == (3 * 30 + 2) * 5 and img["value"].width > 200 + (4 * 30 + 2) * 5   # the labels' margin
    assert "No judge" in judge and os.path.isfile(png) and "one row per class (0 - zero, 7 - seven, 3 - three)" in \
        img["alt_text"]
    opening, report, path = grid.grid_opening("mnist", request=A)
    assert opening["value"].height == (10 * 30 + 2) * 5 and "opens on this grid" in report and os.path.isfile(path)
    with pytest.raises(gr.Error, match=r"samples per class = 11 .*\[1, 10\]"):
        grid.grid_run("mnist", classes, "ddim", 5, 2.0, 0, 11, request=A)
    with pytest.raises(gr.Error, match="at least one class"):
        grid.grid_run("mnist", [], "ddim", 5, 2.0, 0, 2, request=A)


def test_judge_report_counts_hits():
    judge = SimpleNamespace(classify=lambda x, none_of_these=False: torch.tensor([0, 0, 1, 2]), reference=None)
    hits = grid.judged_hits(judge, torch.zeros(4, 1, 28, 28), [0, 7], 2, n_known=10)
    text = grid.judge_report(["zero", "seven"], 2, hits)
    assert hits == [2, 0] and "| zero | 2 / 2 |" in text and "| seven | 0 / 2 |" in text and "2 / 4" in text
    assert grid.judged_hits(judge, torch.zeros(4, 1, 28, 28), [0, 10], 2, n_known=10) == [2, None]


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_finetune_changes_a_copy_and_registers_it_for_this_session_only():
    base = registry.registry().model("mnist")
    before = _weights(base)
    out = drain(finetune.finetune_run("mnist", "classes", ["0 - zero", "1 - one"], "", None, "steps", 6, 5, request=A))
    bar, loss, grid_before, grid_now, status, ckpt, rev_dd, grid_dd, _ = out
    assert "Done after 6 steps" in status and "done" in bar
    name = rev_dd["value"]
    assert name in registry.registry().model_names(A.session_hash) and name not in registry.registry().model_names(B.session_hash)
    tuned = registry.registry().model(name, "visitor-a")
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())      # the shared model is untouched
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items())
    with zipfile.ZipFile(ckpt) as z:
        assert {"model.safetensors", "config.json"} <= set(z.namelist())
    with pytest.raises(gr.Error, match="not available"):
        registry.registry().model(name, "visitor-b")
    img, _, _ = grid.grid_run(name, ["1 - one"], "ddim", 3, 1.0, 0, 2, request=A)        # usable in the other tabs
    assert img["value"].width > 0


def until_training(gen):
    """Advance a fine-tune run past its "before" preview (one update per sampling step) to its first training update."""
    return next(out for out in gen if out[4].startswith("step"))


def test_finetune_stop_keeps_the_trained_weights():
    gen = finetune.finetune_run("mnist", "classes", ["2 - two"], "", None, "seconds", 30, 5, request=B)
    until_training(gen)
    finetune.finetune_stop(request=B)
    *_, status, ckpt, rev_dd, _, _ = drain(gen)
    assert "Stopped after" in status
    steps = int(status.split("Stopped after ")[1].split()[0])
    assert 1 <= steps < 100
    base, tuned = registry.registry().model("mnist"), registry.registry().model(rev_dd["value"], "visitor-b")
    assert any(not torch.equal(v, tuned.state_dict()[k]) for k, v in base.state_dict().items())


def test_finetune_own_images_become_a_new_class(tmp_path):
    paths = []
    for k in range(3):
        path = tmp_path / f"mine{k}.png"
        img = Image.new("L", (64, 64), 255)
        img.paste(0, (10 + k, 10, 50, 20 + k))
        img.save(path)
        paths.append(str(path))
    finetune.clear_drawings(request=A)
    sketch = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    sketch.paste((0, 0, 0, 255), (50, 50, 230, 90))
    assert len(finetune.add_drawing({"composite": sketch}, request=A)) == 1
    out = drain(finetune.finetune_run("mnist", "own", [], "zigzag", paths, "steps", 5, 5, request=A))
    name = out[6]["value"]
    tuned = registry.registry().model(name, "visitor-a")
    assert tuned.num_classes == 11 and tuned.class_names[-1] == "zigzag"
    base_emb = registry.registry().model("mnist").net.class_emb.weight
    assert tuned.net.class_emb.weight.shape[0] == base_emb.shape[0] + 1
    img, _, _ = grid.grid_run(name, ["zigzag"], "ddim", 3, 2.0, 0, 2, request=A)
    assert img["value"].width > 0


def test_finetune_rejects_bad_inputs_and_stays_usable(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(gr.Error, match="notes.txt: file type not allowed"):
        drain(finetune.finetune_run("mnist", "own", [], "x", [str(bad)], "steps", 5, 5, request=B))
    fake = tmp_path / "broken.png"
    fake.write_bytes(b"garbage")
    with pytest.raises(gr.Error, match="broken.png is not a readable image"):
        drain(finetune.finetune_run("mnist", "own", [], "x", [str(fake)], "steps", 5, 5, request=B))
    with pytest.raises(gr.Error, match=r"budget \(seconds\) = 100000 .*\[5, "):
        drain(finetune.finetune_run("mnist", "classes", ["0 - zero"], "", None, "seconds", 100000, 5, request=B))
    with pytest.raises(gr.Error, match="exists already"):
        drain(finetune.finetune_run("mnist", "own", [], "3 - three", None, "steps", 5, 5, request=B))
    out = drain(finetune.finetune_run("scratch:fashion_mnist", "classes", ["Bag"], "", None, "steps", 5, 5, request=B))
    assert "Done after 5 steps" in out[4]


def test_every_tab_has_an_explanation_and_source():
    for key in ("forward", "reverse", "grid", "finetune"):
        assert "def " in explain.source(*explain.SOURCES[key])
    assert "Algorithm 2" in explain.REVERSE and "Eq. 4" in explain.FORWARD


# ------------------------------------------------------------------ tab 5: SDEdit and interpolation

def _sketch():
    img = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    img.paste((0, 0, 0, 255), (120, 40, 160, 240))                  # a black bar: a "1"
    return {"composite": img}


def test_sdedit_streams_from_the_noised_drawing_and_ends_with_a_strip():
    outs = list(edit.sdedit_run("mnist", "1 - one", _sketch(), 60, "ddim", 10, 2.0, 0, request=A))
    mine, noised, xt, x0_hat, text, strip = outs[-1]
    assert len(outs) >= 2 and "done: t_start = 60, 10 steps" in text
    assert strip["value"].width >= 6 * 28 * 6                       # yours + 5 values of t_start
    assert not np.array_equal(np.asarray(mine["value"]), np.asarray(noised["value"]))
    *_, note, opening = edit.sdedit_opening("mnist", request=A)        # the example sketch, its strip
    assert opening["value"].width >= 6 * 28 * 6 and "example sketch" in note
    ddim = list(edit.sdedit_run("mnist", "1 - one", _sketch(), 0, "ddim", 10, 1.0, 0, request=A))[-1]
    assert "1 steps" in ddim[4]                                     # t_start = 0: one step, the image cleaned up


def test_sdedit_rejects_bad_input_and_stays_usable():
    with pytest.raises(gr.Error, match="no image"):
        next(edit.sdedit_run("mnist", "1 - one", None, 50, "ddim", 10, 2.0, 0, request=B))
    with pytest.raises(gr.Error, match="empty"):
        next(edit.sdedit_run("mnist", "1 - one", Image.new("RGB", (64, 64), "white"), 50, "ddim", 10, 2.0, 0, request=B))
    with pytest.raises(gr.Error, match=r"t_start = 100 is outside the allowed range \[0, 99\]"):
        next(edit.sdedit_run("mnist", "1 - one", _sketch(), 100, "ddim", 10, 2.0, 0, request=B))
    assert "done" in list(edit.sdedit_run("mnist", UNCONDITIONAL, _sketch(), 30, "dpmpp_2m", 5, 2.0, 0, request=B))[-1][4]


def test_interpolation_strip_gif_and_class_mixing():
    strip, gif, text = edit.interpolate_run("mnist", "3 - three", "8 - eight", False, "ddim", 5, 2.0, 0, 1, 6, request=A)
    assert strip["value"].width >= 6 * 28 * 5 and Image.open(gif).n_frames == 10 and "seed 0 to seed 1" in text
    same = edit.interpolate_run("mnist", "3 - three", "8 - eight", False, "ddim", 5, 2.0, 0, 1, 6, request=A)[0]
    assert np.array_equal(np.asarray(strip["value"]), np.asarray(same["value"]))           # deterministic
    assert "press Interpolate" in edit.interpolate_opening("mnist", request=A)[2]
    mixed = edit.interpolate_run("mnist", "3 - three", "8 - eight", True, "ddim", 5, 2.0, 0, 1, 6, request=A)
    assert "mixed class embeddings" in mixed[2]            # (the tiny model predicts eps = 0: see test_sampling)
    with pytest.raises(gr.Error, match="deterministic sampler"):
        edit.interpolate_run("mnist", "3 - three", "8 - eight", False, "ddpm", 5, 2.0, 0, 1, 6, request=A)
    with pytest.raises(gr.Error, match="needs two classes"):
        edit.interpolate_run("mnist", UNCONDITIONAL, "8 - eight", True, "ddim", 5, 1.0, 0, 1, 6, request=A)


def test_slerp_keeps_the_ends_and_the_norm():
    from ddpm.sampling import slerp
    a, b = torch.randn(1, 28, 28), torch.randn(1, 28, 28)
    x = slerp(a, b, torch.linspace(0, 1, 5))
    torch.testing.assert_close(x[0], a)
    torch.testing.assert_close(x[-1], b)
    line = 0.5 * (a + b)
    assert abs(float(x[2].norm()) - float(a.norm())) < 0.05 * float(a.norm()) < float(a.norm() - line.norm())


# ------------------------------------------------------------------ tab 6: the 2-D playground

PG = dict(shape="two_moons", word="DDPM", drawing=None, schedule="linear", T=50, beta_start=2e-3, beta_end=0.4,
          width=32, depth=2, lr=3e-3, batch=128, seconds=2, t_view=25)


def _pg(request, **changes):
    args = dict(PG, **changes)
    return playground.playground_train(*args.values(), request=request)


def test_playground_trains_with_the_package_train_and_sample_and_keeps_the_model(monkeypatch):
    import ddpm
    assert playground.train is ddpm.train and playground.sample is ddpm.sample     # the package's own functions
    calls = {"train": 0, "sample": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper
    monkeypatch.setattr(playground, "train", counted("train", ddpm.train))
    monkeypatch.setattr(playground, "sample", counted("sample", ddpm.sample))
    outs = list(_pg(A))
    loss, pts, status, paths, _ = outs[-1]
    assert len(outs) >= 3 and "Done after" in status and "Sliced Wasserstein distance" in status
    assert calls["train"] >= 1 and calls["sample"] >= 2 and pts["value"].width >= 900 and loss.width > 0
    assert outs[0][3] is None and "press Draw trajectories" in outs[0][4]      # the old model's trajectories cleared
    run = registry.registry().session("visitor-a").playground
    assert run["model"].sample_shape == (2,) and len(run["losses"]) > 0
    fig, text = playground.playground_paths("ddim", 10, 5, 0, request=A)
    assert fig["value"].width > 400 and "5 trajectories, 10 steps" in text


def test_playground_stop_keeps_the_model_and_visitors_are_separate():
    gen = _pg(B, seconds=30)
    next(gen)
    next(gen)
    playground.playground_stop(request=B)
    status = list(gen)[-1][2]
    assert "Stopped after" in status
    assert registry.registry().session("visitor-b").playground["model"] is not None
    C = SimpleNamespace(session_hash="visitor-c")
    _, text = playground.playground_paths("ddpm", 10, 5, 0, request=C)    # C never trained: the shipped example's
    assert "(the example run: train your own above)" in text
    assert "example run" not in playground.playground_paths("ddpm", 10, 3, 0, request=B)[1]


def test_the_playground_opens_on_the_shipped_example_run():
    loss, cloud, text, paths, paths_text = playground.playground_opening()
    assert f"Done after {playground.EXAMPLE_STEPS} steps (the shipped example)" in text
    distance = float(text.split("to the data: **")[1].split("**")[0])
    assert distance < 0.1 and cloud["value"].width >= 900 and paths["value"].width > 400


@pytest.mark.parametrize("changes, shown", [
    (dict(T=1), r"T = 1 is outside the allowed range \[2, 1000\]"),
    (dict(seconds=1000), r"training seconds = 1000 is outside the allowed range \[1, "),
    (dict(shape="drawing"), "the sketch is empty"),
    (dict(shape="text", word=""), "1 to 12 characters"),
    (dict(beta_start=0.5, beta_end=0.1), "beta_start = 0.5 is above beta_end = 0.1"),
    (dict(width=4), r"width = 4 is outside the allowed range \[8, 512\]"),
])
def test_playground_rejects_bad_input_and_stays_usable(changes, shown):
    with pytest.raises(gr.Error, match=shown):
        next(_pg(A, **changes))
    assert "Done after" in list(_pg(A, seconds=1))[-1][2]


# ------------------------------------------------------------------ hardening (issue 17, items 3, 4, 8, 9)

def test_the_dataset_picker_accepts_only_the_listed_choices(models):
    for bad in (os.path.join(models, "mnist"), "mnist/../fashion_mnist", "../mnist", "/etc"):
        with pytest.raises(gr.Error, match="is not available; choose one of"):
            forward.forward_gallery(bad)
        with pytest.raises(gr.Error, match="is not available"):
            forward.forward_example(bad, 0)


def test_huge_and_fake_images_are_refused_without_server_paths(tmp_path):
    big, bomb = tmp_path / "big.png", tmp_path / "bomb.png"
    Image.new("L", (4100, 4096)).save(big)                      # just over the limit, a few KB of PNG
    with pytest.raises(gr.Error, match="big.png has more than 4096 x 4096 pixels; at most 4096 x 4096"):
        forward.forward_upload(str(big))
    ok = tmp_path / "ok.png"
    Image.new("L", (4096, 4096), 255).save(ok)                  # at the limit: read (and found empty)
    with pytest.raises(gr.Error, match="the image is empty"):
        forward.forward_upload(str(ok))
    with Image.new("L", (6000, 6000)) as huge:                  # over PIL's own limit: refused at the header
        huge.save(bomb)
    with pytest.raises(gr.Error, match="bomb.png has more than 4096 x 4096 pixels"):
        forward.forward_upload(str(bomb))
    fake = tmp_path / "notes.png"
    fake.write_text("not an image at all")
    with pytest.raises(gr.Error) as err:
        forward.forward_upload(str(fake))
    assert "notes.png is not a readable image" in str(err.value) and str(tmp_path) not in str(err.value)


def test_nan_t_an_empty_base_duplicate_classes_and_a_blank_image_get_clear_errors():
    with pytest.raises(gr.Error, match=r"t = nan is outside the allowed range \[0, 99\]"):
        forward.forward_view(None, "linear", 100, float("nan"), 0)
    with pytest.raises(gr.Error, match="start from = None: choose a model to start from"):
        next(finetune.finetune_run(None, "classes", ["0 - zero"], "", None, "steps", 5, 5, request=A))
    with pytest.raises(gr.Error, match=r"classes \['0 - zero'\] are chosen more than once"):
        grid.grid_run("mnist", ["0 - zero", "0 - zero"], "ddim", 3, 2.0, 0, 2, request=A)
    with pytest.raises(gr.Error, match="the image is empty"):
        forward.forward_upload(Image.new("L", (28, 28), 255))         # all white: nothing to learn from


def test_two_reverse_runs_at_once_in_one_session_keep_their_own_frames():
    first = reverse.reverse_run("mnist", "1 - one", "ddim", 10, 0.0, 1.0, 0, 1, request=A)
    next(first)
    second = reverse.reverse_run("mnist", "1 - one", "ddim", 20, 0.0, 1.0, 0, 2, request=A)
    out_second = drain(second)
    out_first = drain(first)
    assert "stopped** (a reverse run (tab 2) of this visitor started" in out_first[1]   # the second job replaced the first
    n_first = out_first[2]["maximum"] + 1
    assert n_first < 11 and Image.open(out_first[3]).n_frames == n_first          # its own frames, no mix-up
    assert out_second[2]["maximum"] == 20 and Image.open(out_second[3]).n_frames == 21


def test_cheap_calls_with_made_up_session_ids_create_nothing_and_evict_nobody(monkeypatch):
    """Issue 17, item 2: 70 Stops with made-up ids used to evict a visitor's fine-tuned model."""
    reg = registry.registry()
    out = drain(finetune.finetune_run("mnist", "classes", ["0 - zero"], "", None, "steps", 2, 5, request=A))
    name, held = out[6]["value"], len(reg._sessions)
    for k in range(300):
        fake = SimpleNamespace(session_hash=f"attacker-{k}")
        reverse.reverse_stop(request=fake)
        finetune.finetune_stop(request=fake)
        playground.playground_stop(request=fake)
        edit.sdedit_stop(request=fake)
        finetune.clear_drawings(request=fake)
        with pytest.raises(gr.Error, match="nothing recorded"):
            reverse.reverse_scrub(0, request=fake)
    assert len(reg._sessions) == held and reg.model(name, "visitor-a") is not None


def test_eviction_takes_sessions_without_models_first_and_removes_their_files(monkeypatch):
    reg = registry.registry()
    out = drain(finetune.finetune_run("mnist", "classes", ["1 - one"], "", None, "steps", 2, 5, request=B))
    name = out[6]["value"]
    monkeypatch.setattr(reg, "max_sessions", len(reg._sessions) + 2)
    light = [reg.session(f"light-{k}") for k in range(10)]              # sessions that hold no model
    assert reg.model(name, "visitor-b") is not None                     # B's model survives them all
    gone = [s for s in light[:-2] if not os.path.isdir(s.workdir)]
    assert len(gone) == 8 and len(reg._sessions) == reg.max_sessions     # evicted: their folders removed too
    monkeypatch.setattr(reg, "max_held_models", 0)                       # past the model bound, B (unused longest) goes
    reg.session("visitor-c")
    with pytest.raises(gr.Error, match="not available"):
        reg.model(name, "visitor-b")


# ------------------------------------------------------------------ Hub models in the app (issue 16, item 2)

def test_a_listed_hub_model_downloads_on_first_pick_and_works_in_the_reverse_tab(tmp_path, monkeypatch, models):
    from test_diffusers_models import tiny_pipeline
    tiny_pipeline(tmp_path / "hub" / "tiny-ddpm")                        # stands in for a Hub repo (no network here)
    calls = []

    def fake_download(repo_id, allow_patterns=None):
        calls.append((repo_id, allow_patterns))
        if repo_id != "test/tiny-ddpm":
            raise OSError("no network")
        return str(tmp_path / "hub" / "tiny-ddpm")
    monkeypatch.setattr(registry, "snapshot_download", fake_download)
    reg = registry.set_registry(models, use_judges=False, hub_models=["test/tiny-ddpm", "test/offline"])
    try:
        assert reg.model_names()[-2:] == ["test/tiny-ddpm", "test/offline"] and calls == []   # listed, not fetched
        choices = reverse.reverse_class_choices("test/tiny-ddpm", request=A)
        assert choices["choices"] == [UNCONDITIONAL] and len(calls) == 1
        assert calls[0][1] == ["*.json", "*.safetensors", "*.md"]                             # never a pickle
        out = drain(reverse.reverse_run("test/tiny-ddpm", UNCONDITIONAL, "ddim", 5, 0.0, 2.0, 0, 2, request=A))
        assert "step 5 / 5" in out[1] and len(calls) == 1                                     # downloaded once
        with pytest.raises(gr.Error, match="unconditional: it has no classes"):
            grid.grid_run("test/tiny-ddpm", ["0"], "ddim", 3, 2.0, 0, 2, request=A)
        with pytest.raises(gr.Error, match="'test/offline' could not be downloaded .*OSError.*work offline"):
            reg.model("test/offline")
        with pytest.raises(gr.Error, match="'evil/model' is not available"):
            reg.model("evil/model")
    finally:
        registry.set_registry(models, use_judges=False)


def test_a_session_with_a_job_running_is_never_evicted(models, monkeypatch):
    """Review finding: eviction took a session whose reverse run was still streaming, and its GIF failed."""
    reg = registry.registry()
    run = reverse.reverse_run("mnist", "1 - one", "ddim", 6, 0.0, 1.0, 0, 1, request=SimpleNamespace(session_hash="busy"))
    next(run)
    monkeypatch.setattr(reg, "max_sessions", 1)
    for k in range(5):
        reg.session(f"other-{k}")
    assert reg.peek("busy") is not None
    out = drain(run)
    assert out[3].endswith(".gif") and os.path.isfile(out[3])


def test_playground_text_must_be_printable_ascii_and_cosine_ignores_the_betas():
    with pytest.raises(gr.Error, match="has characters \\['é'\\] that the font cannot draw"):
        next(_pg(A, shape="text", word="café"))
    assert "Done after" in list(_pg(A, schedule="cosine", beta_start=0.5, beta_end=0.1, seconds=1))[-1][2]


def test_a_budget_in_steps_is_capped_in_wall_time_too(monkeypatch):
    """Issue 17, item 6: a 5000-step fine-tune ran 13-22 minutes; now the seconds cap ends it as well."""
    monkeypatch.setitem(finetune.LIMITS, "train_seconds", (1, 2))
    start = time.perf_counter()
    *_, status, ckpt, _, _, _ = drain(finetune.finetune_run("mnist", "classes", ["0 - zero"], "", None, "steps", 5000,
                                                            5, request=A))
    assert "time cap of 2 s per run ended it before 5000 steps" in status and ckpt.endswith(".zip")
    assert time.perf_counter() - start < 30


def test_a_new_job_of_a_session_stops_its_running_one():
    """Issue 17, item 6: one session held both training slots; a new job now replaces the running one."""
    D = SimpleNamespace(session_hash="visitor-d")
    first = finetune.finetune_run("mnist", "classes", ["0 - zero"], "", None, "seconds", 30, 5, request=D)
    until_training(first)
    out = list(_pg(D, seconds=1))[-1]                                  # a new job of the same visitor
    assert "Done after" in out[2]
    *_, status, _, _, _, _ = drain(first)
    assert "Stopped after" in status                                   # the fine-tune ended, its weights kept


# ------------------------------------------------------------------ stopping jobs, the time cap, the sweep (issue 17)

def _grid_in_thread(request, sampler="ddpm"):
    """A 10 x 10 DDPM grid (100 steps) in a thread; returns (thread, result box) once the job has started."""
    import threading
    box = {}

    def run():
        try:
            box["out"] = grid.grid_run("mnist", registry.registry().model("mnist").class_names[:10], sampler, 20, 2.0,
                                       0, 10, request=request)
        except gr.Error as err:
            box["error"] = err.message
    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 30
    while "grid" not in getattr(registry.registry().peek(request.session_hash), "stops", {}) and time.time() < deadline:
        time.sleep(0.01)
    return thread, box


@pytest.mark.parametrize("how, reason", [
    (lambda req: grid.grid_stop(request=req), "Stop was pressed"),
    (lambda req: pickers.end_session(request=req), "its visitor left"),
    (lambda req: jobs.cancel(req.session_hash, "the connection of this session closed"),
     "the connection of this session closed"),
])
def test_a_class_grid_stops_on_stop_when_its_visitor_leaves_and_when_the_connection_closes(how, reason):
    """Issue 17, item 1: a 200-image DDPM grid ran 395 s after its client was killed; grids had no Stop."""
    req = SimpleNamespace(session_hash=f"grid-{reason}")
    thread, box = _grid_in_thread(req)
    start = time.perf_counter()
    how(req)
    thread.join(timeout=60)
    assert box["out"][1] == f"**Stopped** before the grid was done: {reason}. Press Generate to make it again."
    assert time.perf_counter() - start < 5                        # ended after its current step


def test_every_job_has_a_wall_time_cap():
    with changed_settings(max_job_seconds=0.3):
        thread, box = _grid_in_thread(SimpleNamespace(session_hash="capped"))
        thread.join(timeout=60)
        assert "before the grid was done: the time cap of 0.3 s per job" in box["out"][1]
        run = reverse.reverse_run("mnist", "1 - one", "ddpm", 0, 0.0, 1.0, 0, 16, request=SimpleNamespace(session_hash="capped"))
        assert "**stopped** (the time cap of 0.3 s per job)" in drain(run)[1]


def test_the_sweep_removes_dead_servers_orphans_and_the_oldest_files_past_the_bound(tmp_path, monkeypatch):
    from ddpm.app import guard
    cache = tmp_path / "gradio"
    cache.mkdir()
    monkeypatch.setattr(guard, "get_upload_folder", lambda: str(cache))
    now = time.time()
    for k in range(6):                                           # 6 files of 1 MB, 1 to 6 hours old
        path = cache / f"old{k}.png"
        path.write_bytes(b"x" * 2**20)
        os.utime(path, (now - 3600 * (k + 1),) * 2)
    young = cache / "young.png"
    young.write_bytes(b"x" * 3 * 2**20)                          # 3 MB, just written: never swept
    root = tmp_path / "ddpm_app"                                 # the servers' temp folders, by pid
    mine = root / str(os.getpid())
    monkeypatch.setattr(guard, "TMP_ROOT", str(root))
    monkeypatch.setattr(guard, "server_tmp", lambda: str(mine))
    dead, orphan = root / "999999999", mine / "orphan"           # a server that is gone; a folder no session owns
    dead.mkdir(parents=True)
    orphan.mkdir(parents=True)
    session = registry.registry().session("sweep-visitor")
    session.workdir = str(mine / "live")
    live = session.file("kept.png")
    open(live, "wb").write(b"png")
    left = guard.sweep(max_mb=5)
    assert not os.path.exists(dead) and not os.path.exists(orphan) and os.path.isfile(live)
    kept = sorted(p.name for p in cache.iterdir())
    assert kept == ["old0.png", "young.png"] and left <= 5 * 2**20   # the oldest went first, to 4 MB (+ 3 bytes)


def test_upload_components_refuse_bad_files_before_gradio_decodes_them(tmp_path):
    """Issue 17, item 8: through the server, Gradio decoded uploads itself and a bad file showed its developer
    message with the server's temp path. The app's image inputs check the header first."""
    from gradio.data_classes import ImageData
    from ddpm.app import images
    fake, bomb, cut, ok = (tmp_path / n for n in ("notes.png", "bomb.png", "cut.png", "ok.png"))
    fake.write_text("not an image")
    Image.new("L", (5000, 5000)).save(bomb)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(ok)
    cut.write_bytes(ok.read_bytes()[:300])                      # a valid header, the pixels cut short
    upload = images.CheckedImage(type="pil")
    for path, message in ((fake, "notes.png is not a readable image"), (bomb, "bomb.png has more than 4096 x 4096"),
                          (cut, "cut.png is not a readable image (it may be truncated)")):
        with pytest.raises(gr.Error) as err:
            upload.preprocess(ImageData(path=str(path), orig_name=path.name))
        assert message in err.value.message and str(tmp_path) not in err.value.message
    assert upload.preprocess(ImageData(path=str(ok), orig_name="ok.png")).size == (64, 64)
    assert upload.get_block_name() == "image" and images.CheckedSketchpad().get_block_name() == "imageeditor"
