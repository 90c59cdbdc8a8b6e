"""The app in a real browser (headless Debian chromium): every tab works and is screenshotted.

Screenshots land in artifacts/screenshots/ (git-ignored) for a human to look at.
"""
import os

import pytest

from app_fixtures import CHROMIUM, ROOT, app_in_chromium

SHOTS = os.path.join(ROOT, "artifacts", "screenshots")

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} does not exist (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    os.makedirs(SHOTS, exist_ok=True)
    with app_in_chromium(tmp_path_factory.mktemp("browser")) as (browser, url):
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(url)
        yield page


def src(page, selector):
    """The src of the first <img> inside `selector`, once there is one."""
    img = page.locator(f"{selector} img").first
    img.wait_for(state="visible")
    return img.get_attribute("src")


def wait_src_change(page, selector, old):
    page.wait_for_function(
        "([sel, old]) => { const i = document.querySelector(sel + ' img'); return i && i.src && i.src !== old; }",
        arg=[selector, old])
    return src(page, selector)


def shoot(page, name):
    """A full-page screenshot for a human to look at, once the last update has painted."""
    page.wait_for_timeout(500)
    page.screenshot(path=os.path.join(SHOTS, name), full_page=True)


def tab(page, name):
    page.get_by_role("tab", name=name).click()


def test_forward_slider_updates_the_image(page):
    before = src(page, "#forward-main")
    page.locator("#fwd_t input[type=range]").fill("800")
    after = wait_src_change(page, "#forward-main", before)
    assert after != before
    page.locator("#forward-go").click()                                 # Play: t walks from 0 to T-1
    page.wait_for_function("() => document.querySelector('#fwd_t input[type=number]').value === '999'")
    shoot(page, "1_forward.png")


def test_reverse_sampling_streams_to_the_end(page):
    tab(page, "2. Reverse")
    opening = src(page, "#reverse-main")                     # the tab opens on a run of its default settings
    page.locator("#reverse-go").click()
    first = wait_src_change(page, "#reverse-main", opening)
    page.wait_for_function("() => document.querySelector('#reverse-main img').src.endsWith('.gif')")
    page.get_by_text("step 50 / 50").first.wait_for()
    first = src(page, "#reverse-main")
    page.locator("#reverse-go").click()                      # same seed again: a new run, new files
    wait_src_change(page, "#reverse-main", first)
    page.get_by_text("step 50 / 50").first.wait_for()
    shoot(page, "2_reverse.png")


def test_class_grid_appears(page):
    tab(page, "3. Classes")
    opening = src(page, "#grid-main")
    page.get_by_text("guidance, sampler, seed").click()
    for slider, value in (("#grid_n", "3"), ("#grid_steps", "10")):   # a small grid: the test machine is slow
        box = page.locator(f"{slider} input[type=number]")
        box.fill(value)
        box.press("Enter")
    page.locator("#grid-go").click()
    wait_src_change(page, "#grid-main", opening)
    shoot(page, "3_grid.png")


def test_finetune_tab_runs_a_short_training(page):
    tab(page, "4. Fine-tune")
    page.locator("#ft_kind").get_by_label("steps").check()
    budget = page.locator("#ft_budget input")
    budget.fill("10")
    budget.press("Enter")
    page.locator("#finetune-go").click()
    page.get_by_text("Done after 10 steps").wait_for()
    shoot(page, "4_finetune.png")


def _draw_stroke(page, container):
    """Draw one vertical stroke on the canvas of the sketchpad inside `container` with the mouse."""
    canvas = page.locator(f"{container} canvas").first
    canvas.wait_for(state="visible")
    page.locator(f"{container} button[aria-label='Brush']").click()       # Gradio's sketchpad starts with no tool
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.2
    page.mouse.move(x, y)
    page.mouse.down()
    for k in range(1, 21):
        page.mouse.move(x, y + k * box["height"] * 0.03)
    page.mouse.up()


def test_sketch_to_image_and_interpolation(page):
    tab(page, "5. Sketch & interpolate")
    _draw_stroke(page, "#sd_sketch")
    box = page.locator("#sd_t input[type=number]")
    box.fill("50")
    box.press("Enter")
    page.locator("#edit-go").click()
    page.get_by_text("done: t_start = 50").first.wait_for()
    page.locator("#edit-main img").first.wait_for(state="visible")
    page.locator("#ip_go").click()
    page.locator("#ip_strip img").first.wait_for(state="visible")
    shoot(page, "5_edit.png")


def test_playground_trains_from_scratch(page):
    tab(page, "6. 2-D playground")
    box = page.locator("#pg_seconds input[type=number]")
    box.fill("2")
    box.press("Enter")
    page.locator("#playground-go").click()
    page.locator("#pg_status").get_by_text("Done after").wait_for()
    page.locator("#pg_draw").click()
    page.locator("#pg_paths img").first.wait_for(state="visible")
    shoot(page, "6_playground.png")


def test_explore_compares_three_columns_and_a_link_reopens_the_scene(page):
    tab(page, "7. Explore")
    page.locator("#ex_status").get_by_text("the tab opens on the default scene").wait_for()
    page.locator("#explore-go").click()
    page.wait_for_function("() => { const s = document.querySelector('#ex_status').innerText; "
                           "return s.startsWith('Done') && !s.includes('opens on'); }")
    for column, image in zip("abc", ("#explore-main", "#ex_img_b", "#ex_img_c"), strict=True):
        page.locator(f"{image} img").first.wait_for(state="visible")
        assert "network calls per image" in page.locator(f"#ex_text_{column}").inner_text()
    shoot(page, "7_explore.png")
    page.locator("#ex_link_go").click()
    page.wait_for_function("() => document.querySelector('#ex_link textarea').value.startsWith('http')")
    link = page.locator("#ex_link textarea").input_value()
    assert "tab=explore" in link and "seed=0" in link
    other = page.context.browser.new_page(viewport={"width": 1500, "height": 1000})
    other.set_default_timeout(60_000)
    other.goto(link.replace("seed=0", "seed=7"))
    other.locator("#ex_status").get_by_text("Done: 3 columns from one x_T (seed 7)").wait_for()   # opened and ran
    other.close()


def test_explore_measures_a_curve_point_by_point(page):
    tab(page, "7. Explore")
    box = page.locator("#cv_per_class input[type=number]")
    box.fill("1")
    box.press("Enter")
    page.locator("#cv_guid_go").click()
    page.locator("#cv_guid_text").get_by_text("cached for the next visitor").wait_for()
    page.locator("#cv_guid_img img").first.wait_for(state="visible")
    assert "n = 10 images per point" in page.locator("#cv_guid_text").inner_text()
    page.locator("#cv_guid_img").scroll_into_view_if_needed()
    shoot(page, "7_explore_curve.png")
