"""The "Check my code" tab (ddpm/app/check.py): its handlers called directly (a right upload passes, a catalogued
mistake is named, a pickle, an object array and an over-size file are refused by name), and in a real browser (a
wrong upload's mistake is read on the page, the tab opens on a picture, its button and picture are in view).

Screenshots land in artifacts/screenshots/ (git-ignored) for a human to look at."""
import os
import pickle
import re

import gradio as gr
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from app_fixtures import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port
from ddpm.app import check
from ddpm.exercise import MISTAKES, solution_outputs

SHOTS = os.path.join(ROOT, "artifacts", "screenshots")


def no_sqrt_upload(path):
    """sample_xt as a student who forgot both square roots of Eq. (4) writes it, run on the challenge, saved as .npz."""
    c = load_file(check.challenge_path("sample_xt"))

    def my_sample_xt(x0, t, epsilon, alphaBars):
        a = alphaBars[t].reshape(-1, 1, 1, 1)
        return a * x0 + (1 - a) * epsilon

    np.savez(path, **{f"x_t_{T}": my_sample_xt(c[f"x0_{T}"], c[f"t_{T}"], c[f"epsilon_{T}"], c[f"alphaBars_{T}"])
                      for T in (1000, 100)})
    return str(path)


def test_every_item_opens_with_its_steps_and_upload_items_on_an_example_verdict():
    for item in ("sample_xt", "sample"):
        download, how, picture, verdict, upload, go = check.check_item(item)
        assert os.path.isfile(download["value"]) and load_file(download["value"])       # the challenge, readable
        assert picture["value"].width > 400 and picture["alt_text"].startswith("Your ")
        assert f"mistake `{check.EXAMPLES[item][0]}`" in verdict and go["interactive"] and upload["visible"]
        assert "np.savez" in how and "5 MB" in how
    for item in ("train", "train_classconditional"):
        download, how, picture, verdict, upload, go = check.check_item(item)
        assert f'check_function("{item}", {item})' in how and not download["visible"] and not upload["visible"]
        assert go["interactive"] is False and all(f"`{m.id}`" in how for m in MISTAKES.values() if m.item == item)
    with pytest.raises(gr.Error, match="item 'sample_x' is unknown"):
        check.check_item("sample_x")


@pytest.mark.parametrize("item", ["sample_xt", "sample"])
@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_a_right_upload_passes(tmp_path, item, fmt):
    path = tmp_path / f"outputs.{fmt}"
    arrays = solution_outputs(item)
    np.savez(path, **arrays) if fmt == "npz" else save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                                                            str(path))
    picture, verdict = check.check_upload(item, str(path))
    assert verdict.startswith(f"### {item}: passed") and picture["value"].height > 100


def test_a_catalogued_mistake_is_named(tmp_path):
    picture, verdict = check.check_upload("sample_xt", no_sqrt_upload(tmp_path / "mine.npz"))
    assert verdict.startswith("### sample_xt: mistake `xt_no_sqrt`") and "Fix:" in verdict
    assert "mistake xt_no_sqrt" in picture["alt_text"]
    # Algorithm 2 with noise added at the last step too (t = 0): a change of 0.01 in a few pixels, still named
    arrays, c = solution_outputs("sample"), load_file(check.challenge_path("sample"))
    for T in (1000, 100):
        last = c[f"t_{T}"] == 0
        arrays[f"x_prev_{T}"][last] += np.sqrt(c[f"betas_{T}"][0]) * c[f"z_{T}"][last]
    np.savez(tmp_path / "step.npz", **arrays)
    _, verdict = check.check_upload("sample", str(tmp_path / "step.npz"))
    assert "mistake `sample_noise_at_last_step`" in verdict.splitlines()[0]


def test_the_example_mistakes_are_named_as_catalogued():
    for item, (mistake, _) in check.EXAMPLES.items():
        assert MISTAKES[mistake].item == item


@pytest.mark.parametrize("make, said", [
    (lambda p: p.write_bytes(pickle.dumps({"x_t_1000": np.zeros((16, 1, 8, 8))})), "is a Python pickle"),
    (lambda p: np.savez(p, x_t_1000=np.array([{"a": 1}] * 16, dtype=object), x_t_100=np.zeros((16, 1, 8, 8))),
     "holds Python objects (dtype=object)"),
    (lambda p: p.write_bytes(b"PK\x03\x04" + bytes(6 * 2**20)), "the file is 6.0 MB; uploads are limited to 5 MB"),
    (lambda p: np.savez(p, x_t_1000=np.zeros((16, 1, 8, 8))), "missing ['x_t_100']"),
])
def test_a_bad_upload_is_refused_by_name(tmp_path, make, said):
    path = tmp_path / "outputs.npz"
    make(path)
    with pytest.raises(gr.Error) as refused:
        check.check_upload("sample_xt", str(path))
    assert said in refused.value.message and refused.value.message.startswith("Upload refused:")


def test_no_upload_and_a_training_item_are_refused_in_words(tmp_path):
    with pytest.raises(gr.Error, match="no file uploaded yet"):
        check.check_upload("sample_xt", None)
    with pytest.raises(gr.Error, match="train is checked by running it in a notebook"):
        check.check_upload("train", no_sqrt_upload(tmp_path / "mine.npz"))


def test_the_verdict_shows_report_text_as_text():
    shown = check.plain_markdown("<img src=x onerror=alert(1)> *bold* [link](javascript:x)")
    assert re.search(r"(?<!\\)[<*\[]", shown) is None and "\\<img" in shown and "\\*bold\\*" in shown


# ------------------------------------------------------------------ in a browser

@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    """The tab alone, served in this process as app.py serves it (its CSS, a 5 MB upload bound): the whole app with
    its model tabs takes a minute to start on a test machine; test_app_build.py checks the tab's wiring inside it."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} does not exist (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    import app
    with gr.Blocks(title=app.TITLE) as demo:
        with gr.Tabs():
            check.build()
    demo.queue()
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, css=app.CSS,
                max_file_size="5mb", quiet=True)
    os.makedirs(SHOTS, exist_ok=True)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.set_default_timeout(30_000)
            page.goto(demo.local_url)
            yield page, tmp_path_factory.mktemp("check_browser")
            browser.close()
    finally:
        demo.close()


def in_view(page, selector):
    box = page.locator(selector).first.bounding_box()
    size = page.viewport_size
    return (box is not None and box["y"] >= 0 and box["y"] + min(box["height"], 40) <= size["height"]
            and box["x"] + box["width"] <= size["width"] + 1)


def upload(page, path):
    page.locator("#check_upload input[type=file]").set_input_files(str(path))
    page.locator("#check_upload").get_by_text(os.path.basename(path)).first.wait_for()


def test_in_the_browser_a_wrong_upload_is_named(browser_page):
    page, root = browser_page
    page.locator("#check-main img").first.wait_for(state="visible")          # an example verdict, without a click
    page.locator("#check_verdict").get_by_text("xt_swapped").first.wait_for()
    assert in_view(page, "#check-go") and in_view(page, "#check-main")
    page.screenshot(path=os.path.join(SHOTS, "8_check_1280.png"))
    with page.expect_download() as challenge:
        page.locator("#check_download").click()
    assert set(load_file(challenge.value.path())) >= {"x0_1000", "t_1000", "epsilon_1000", "alphaBars_100"}
    before = page.locator("#check-main img").first.get_attribute("src")
    upload(page, no_sqrt_upload(root / "mine.npz"))
    page.locator("#check-go").click()
    page.locator("#check_verdict").get_by_text("mistake xt_no_sqrt").first.wait_for()
    assert "Fix:" in page.locator("#check_verdict").inner_text()
    assert page.locator("#check-main img").first.get_attribute("src") != before
    page.screenshot(path=os.path.join(SHOTS, "8_check_verdict.png"), full_page=True)
    # a pickle under an .npz name is refused by name, in a toast
    pickled = root / "sneaky.npz"
    pickled.write_bytes(pickle.dumps({"x_t_1000": [0.0]}))
    page.locator("#check_upload button[aria-label='Clear']").first.click()
    upload(page, pickled)
    page.locator("#check-go").click()
    page.get_by_text("is a Python pickle").first.wait_for()
    page.set_viewport_size({"width": 420, "height": 900})
    page.wait_for_timeout(500)
    page.screenshot(path=os.path.join(SHOTS, "8_check_420.png"), full_page=True)
