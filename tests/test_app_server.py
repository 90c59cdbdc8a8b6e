"""`python app.py` in a subprocess with tiny models, driven through every tab's endpoint with gradio_client."""
import json
import os
import threading
import time

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from app_fixtures import make_models_dir, start_app, stop_app
from ddpm.data import ImageDataset, to_unit_range
from ddpm.eval.judge import load_judge
from ddpm.eval.neighbours import build_index, save_index
from ddpm.pretrained import load_examples


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    models = make_models_dir(root / "models", judges=("mnist",))
    # a quality-per-cost table for one model: its rule picks DPM-Solver++ with 12 steps at guidance 2
    rows = [dict(sampler=s, steps=k, guidance=2.0, n=1000, seed=0, fd=fd, fd_floor=1.0, accuracy=1.0, worst_class=0,
                 worst_accuracy=1.0, seconds=1.0) for s, k, fd in (("ddim", 50, 10.0), ("dpmpp_2m", 12, 10.3),
                                                                    ("dpmpp_2m", 6, 12.0))]
    with open(os.path.join(models, "mnist", "quality_cost.json"), "w") as f:
        json.dump(rows, f)
    # the nearest-neighbour index of the tiny MNIST model: its examples, seen by its (random) judge
    folder = os.path.join(models, "mnist")
    images, labels = load_examples(folder)
    save_index(folder, build_index(ImageDataset(to_unit_range(images), labels, "mnist", [str(k) for k in range(10)]),
                                   load_judge(folder)))
    proc, url = start_app(models, root / "app.log", env={"DDPM_APP_JUDGE": "1"})
    yield url
    stop_app(proc)


def client(url):
    return Client(url, verbose=False)


def file_of(output):
    """The file path of an output given as a path or as the update that carries it (with its alt text)."""
    return output.get("value") if isinstance(output, dict) else output


def is_png(path, min_width):
    """A picture's file, given as a path or as the update that carries it with its alt text."""
    path = path.get("value") if isinstance(path, dict) else path
    return isinstance(path, str) and os.path.isfile(path) and Image.open(path).width >= min_width


def test_sampling_tabs_start_at_the_quality_per_cost_default(url):
    """The reverse and grid tabs start where the bundled tables' rule lands (DPM-Solver++-12 here), the reverse tab
    with at least 25 steps, a run a room can watch; SDEdit keeps its own DDIM-20 (the tables measure sampling from
    pure noise)."""
    components = httpx.get(url + "config").json()["components"]
    value = {c["props"].get("elem_id"): c["props"].get("value") for c in components if c["props"].get("elem_id")}
    assert value["rev_steps"] == 25 and value["grid_steps"] == 12 and value["sd_steps"] == 20 and value["cv_steps"] == 12
    assert value["rev_sampler"] == value["grid_sampler"] == value["cv_sampler"] == "dpmpp_2m"
    assert value["sd_sampler"] == "ddim"


def test_forward_endpoints(url):
    c = client(url)
    gallery = c.predict("mnist", api_name="/forward_gallery")
    assert len(gallery) == 10 and gallery[3]["caption"].startswith("#3: 3 - three")
    assert is_png(c.predict("mnist", 4, api_name="/forward_example"), 224)
    xt, eps, formula, strip, plot, hist, warning = c.predict("cosine", 1000, 300, 0, api_name="/forward")
    assert is_png(xt, 280) and is_png(strip, 1000) and is_png(plot, 800) and is_png(hist, 500)
    assert "t = 300" in formula and warning == ""
    assert "far from pure noise" in c.predict("linear", 20, 3, 0, api_name="/forward")[-1]
    with pytest.raises(Exception, match=r"3 is less than minimum value 10"):   # Gradio checks slider bounds
        c.predict("linear", 3, 1, 0, api_name="/forward")


def test_reverse_streams_and_records(url):
    c = client(url)
    assert "7 - seven" in c.predict("mnist", api_name="/reverse_classes")["choices"][8]
    job = c.submit("mnist", "7 - seven", "ddim", 20, 0.0, 2.0, 1, 4, api_name="/reverse")
    outputs = job.result(timeout=120) and job.outputs()
    assert len(outputs) >= 2                                   # streamed frames, then the final one
    animation, text, scrub, gif = outputs[-1]
    assert is_png(outputs[0][0], 2 * 2 * 28 * 8) and file_of(animation).endswith(".gif") and file_of(gif).endswith(".gif")
    assert Image.open(file_of(animation)).n_frames == 21 and "step 20 / 20" in text       # x_t beside x0_hat, each step
    frame, caption = c.predict(0, api_name="/reverse_scrub")
    assert is_png(frame, 2 * 2 * 28 * 8) and "frame 0" in caption
    with pytest.raises(Exception, match=r"40 is greater than maximum value 16"):
        c.predict("mnist", "7 - seven", "ddim", 20, 0.0, 2.0, 1, 40, api_name="/reverse")
    with pytest.raises(Exception, match=r"steps = 500 is outside the allowed range \[1, 100\]"):  # the handler's
        c.predict("mnist", "7 - seven", "ddim", 500, 0.0, 2.0, 1, 2, api_name="/reverse")                # own check


def test_reverse_stop_button(url):
    c = client(url)
    job = c.submit("mnist", "unconditional", "ddpm", 50, 0.0, 1.0, 0, 16, api_name="/reverse")
    while not job.outputs() and not job.done():
        time.sleep(0.05)
    c.predict(api_name="/reverse_stop")
    *_, text, _, gif = job.result(timeout=120)
    assert "stopped" in text or "step 100 / 100" in text        # a run that already ended is fine too
    assert file_of(gif).endswith(".gif")


def test_grid(url):
    c = client(url)
    img, judge, png = c.predict(model="fashion_mnist", classes=["Trouser", "Bag"], sampler="ddim", steps=5, guidance=2.0,
                                seed=0, per_class=3, api_name="/grid")              # by name, as the page feeds it
    assert is_png(img, 190 + (3 * 30 + 2) * 5) and "No judge" in judge and file_of(png).endswith(".png")
    with pytest.raises(Exception, match="unknown classes"):
        c.predict("fashion_mnist", ["Bagel"], "ddim", 5, 2.0, 0, 3, api_name="/grid")


def test_two_visitors_finetune_at_once_without_interfering(url, tmp_path):
    mine = tmp_path / "mine.png"
    img = Image.new("L", (56, 56), 255)
    img.paste(0, (10, 20, 46, 36))
    img.save(mine)
    a, b = client(url), client(url)
    results = {}

    def run(key, c, args):
        results[key] = c.predict(*args, api_name="/finetune")

    threads = [
        threading.Thread(target=run, args=("a", a, ("mnist", "classes", ["0 - zero"], "", None, "steps", 10, 5))),
        threading.Thread(target=run, args=("b", b, ("mnist", "own", [], "dash", [handle_file(str(mine))],
                                                    "steps", 10, 5))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    for key in "ab":
        status, ckpt = results[key][4], results[key][5]
        assert "Done after 10 steps" in status and file_of(ckpt).endswith(".zip")
    name_a, name_b = results["a"][6]["value"], results["b"][6]["value"]
    grid_b = b.predict(name_b, ["dash"], "ddim", 3, 2.0, 0, 2, api_name="/grid")    # B's new class exists for B ...
    assert is_png(grid_b[0], 100)
    with pytest.raises(Exception, match="unknown classes"):                           # ... but not in A's model
        a.predict(name_a, ["dash"], "ddim", 3, 2.0, 0, 2, api_name="/grid")
    assert "dash" not in a.predict("mnist", api_name="/grid_classes")["choices"].__repr__()
    c = client(url)                                                                    # a third visitor sees neither
    with pytest.raises(Exception, match="not available"):
        c.predict(name_a, ["0 - zero"], "ddim", 3, 2.0, 0, 2, api_name="/grid")


def _sketch_file(tmp_path):
    path = tmp_path / "one.png"
    img = Image.new("RGB", (280, 280), "white")
    img.paste((0, 0, 0), (120, 40, 160, 240))
    img.save(path)
    f = handle_file(str(path))
    return {"background": f, "layers": [], "composite": f}


def test_sdedit_and_interpolate_endpoints(url, tmp_path):
    c = client(url)
    job = c.submit("mnist", "1 - one", _sketch_file(tmp_path), 60, "ddim", 8, 2.0, 0, api_name="/sdedit")
    *_, text, strip = job.result(timeout=120)
    assert "done: t_start = 60, 8 steps" in text and is_png(strip, 6 * 28 * 6)
    with pytest.raises(Exception, match=r"t_start = 500 is outside the allowed range \[0, 99\]"):
        c.predict("mnist", "1 - one", _sketch_file(tmp_path), 500, "ddim", 8, 2.0, 0, api_name="/sdedit")
    strip, gif, text = c.predict("mnist", "3 - three", "8 - eight", True, "dpmpp_2m", 4, 2.0, 0, 1, 5,
                                 api_name="/interpolate")
    assert is_png(strip, 5 * 28 * 5) and file_of(gif).endswith(".gif") and "mixed class embeddings" in text


def test_playground_endpoints_train_stop_and_draw(url):
    c = client(url)
    job = c.submit("two_moons", "DDPM", None, "linear", 50, 2e-3, 0.4, 32, 2, 3e-3, 128, 20, 25,
                   api_name="/playground_train")
    while len(job.outputs()) < 2 and not job.done():
        time.sleep(0.1)
    c.predict(api_name="/playground_stop")
    loss, pts, status, _, _ = job.result(timeout=120)
    assert "Stopped after" in status and is_png(pts, 900)
    fig, text = c.predict("ddim", 10, 4, api_name="/playground_paths")
    assert is_png(fig, 400) and "4 trajectories" in text and "example" not in text
    fig, text = client(url).predict("ddim", 10, 4, api_name="/playground_paths")    # another visitor: the example's
    assert is_png(fig, 400) and "(the example run: train your own above)" in text


def test_explore_endpoints_compare_scene_curves_and_neighbours(url):
    """The Explore tab's named endpoints: a scene's values feed /compare, whose columns stream and end judged;
    /scene restores a link; /sweep_steps and /sweep_guidance stream a curve; /neighbours searches an index."""
    c = client(url)
    model, n, seed, *settings = c.predict("?tab=explore&n=3&seed=5&a_sampler=ddim&a_steps=4&c_on=0", api_name="/scene")
    assert (n, seed) == (3, 5) and settings[1:3] == ["ddim", 4] and settings[18] is False
    job = c.submit("mnist", n, seed, *settings, api_name="/compare")
    outputs = [o for o in job]
    a_img, a_text, b_img, b_text, c_img, c_text, scrub, status = job.outputs()[-1]
    assert len(outputs) >= 2 and is_png(a_img, 100) and is_png(b_img, 100) and c_img is None
    assert "judge:" in a_text and "/ 3 show the asked class" in a_text and "Done" in status
    link = c.predict("mnist", n, seed, *settings, api_name="/scene_link")
    assert link.startswith("?tab=explore&model=mnist&n=3&seed=5")
    plot, text = c.predict(model="mnist", guidance=2.0, seed=0, per_class=1, api_name="/sweep_steps")
    assert is_png(plot, 600) and "n = 10 images per point" in text
    plot, text = c.predict("mnist", "dpmpp_2m", 4, 0, 1, api_name="/sweep_guidance")
    assert is_png(plot, 600) and "cached for the next visitor" in text
    with pytest.raises(Exception, match="judge"):          # the tiny FashionMNIST model has no judge
        c.predict("fashion_mnist", 2.0, 0, 1, api_name="/sweep_steps")
    sheet, report = c.predict("mnist", "ddim", 4, 2.0, 0, 1, api_name="/neighbours")
    assert is_png(sheet, 400) and "the bundled index: 30 of 30 training images" in report
