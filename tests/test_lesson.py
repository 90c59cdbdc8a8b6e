"""The Lesson (ddpm/app/lesson.py): its steps follow Sheet 3 and point at real tabs and controls, each answer is a
pure, quick measurement that picks one of its step's choices, answers are kept per model, the reveal needs a guess,
using the control after the reveal moves on, and the lecture poll keeps counts only, within its bounds."""
import os
import re
import time
from types import SimpleNamespace

import gradio as gr
import pytest
import torch

import app
from app_fixtures import CHROMIUM, app_in_chromium, judged_registry
from ddpm.app import lesson, registry
from ddpm.eval.judge import load_judge
from ddpm.pretrained import load_examples, load_pretrained
from ddpm.schedule import NoiseSchedule

A = SimpleNamespace(session_hash="lesson-a", query_params={"room": "hall-1"})
B = SimpleNamespace(session_hash="lesson-b", query_params={})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    with judged_registry(tmp_path_factory.mktemp("models")) as root:
        yield root


def test_the_steps_follow_the_sheet_and_name_real_tabs_and_controls(models):
    assert 6 <= len(lesson.STEPS) <= 10
    assert [s.sheet for s in lesson.STEPS][:6] == ["3.3a", "3.3b", "3.3c", "3.4a", "3.4b", "3.5"]
    assert lesson.STEPS[-1].sheet.startswith("Fig.")                          # then the paper's figures
    demo = app.build_demo()
    tabs = {block.id for block in demo.blocks.values() if isinstance(block, gr.Tab)}
    ids = {block.elem_id for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    for s in lesson.STEPS:
        assert s.tab in tabs and s.control in ids, s
        assert len(set(s.choices)) == len(s.choices) >= 3
    assert "lesson" in ids


class Oracle:
    """A judge that reads the class of x_t exactly while sqrt(alpha_bar_t) > 1/2 of it survives: it knows x0."""

    def __init__(self, x0, y, alpha_bar):
        self.x0, self.y, self.alpha_bar = x0, y, alpha_bar

    def classify(self, x, **_):
        signal = (x * self.x0).flatten(1).sum(1) / (self.x0 * self.x0).flatten(1).sum(1)    # ~ sqrt(alpha_bar_t)
        return torch.where(signal > 0.5, self.y, -1)


def test_readable_until_finds_the_first_t_where_the_judge_fails():
    schedule = NoiseSchedule("linear", 1000)
    x0 = torch.rand(64, 1, 28, 28) * 2 - 1
    y = torch.arange(64) % 10
    ts = list(range(0, 1000, 50))
    accuracy, lost = lesson.readable_until(Oracle(x0, y, schedule.alpha_bar), x0, y, schedule.alpha_bar, ts,
                                           generator=torch.Generator().manual_seed(0))
    first = next(t for t in ts if schedule.alpha_bar[t].sqrt() < 0.5)
    assert abs(lost - first) <= 50 and accuracy[0] == 1.0 and accuracy[-1] == 0.0


def test_every_answer_picks_one_of_its_choices_quickly_and_is_kept_per_model(models):
    reg = registry.registry()
    ddpm, judge = reg.model("mnist"), reg.judge("mnist")
    images, labels = reg.examples("mnist")
    for s in lesson.STEPS:
        start = time.perf_counter()
        answer = s.answer(ddpm, judge=judge, images=images, labels=labels)
        assert answer.choice in s.choices and answer.text, s
        assert time.perf_counter() - start < 20, s            # tiny model; the bundled ones: docs in the report
        assert answer == s.answer(ddpm, judge=judge, images=images, labels=labels)          # one seed: the same answer
    first = lesson.measured("mnist", 2, B)
    assert lesson.measured("mnist", 2, A) is first                              # kept for the model, not the visitor
    with pytest.raises(gr.Error, match="no judge.*pick one of"):
        lesson.measured("fashion_mnist", 0, B)                                  # the fixture gives it no judge


def test_the_reveal_opens_only_after_a_guess_and_use_moves_on(models):
    state, tabs, header, guess, reveal, answer, poll, focus = lesson.lesson_open(None)
    assert tabs["selected"] == "forward" and focus == "fwd_t" and "Step 1 of" in header
    assert reveal["interactive"] is False and answer == ""
    with pytest.raises(gr.Error, match="make a guess first"):
        lesson.lesson_reveal(state, "mnist", request=B)
    assert lesson.lesson_used(state)[0]["step"] == 0                            # no answer yet: it stays
    state, reveal, poll = lesson.lesson_guess(state, lesson.STEPS[0].choices[2], request=B)
    assert reveal["interactive"] is True and poll == ""                          # no room: no poll
    state, text, guess, reveal, poll = lesson.lesson_reveal(state, "mnist", request=B)
    assert "Measured on `mnist`" in text and reveal["interactive"] is False and guess["interactive"] is False
    state, header, *_, focus = lesson.lesson_used(state)
    assert state["step"] == 1 and focus == lesson.STEPS[1].control and "Step 2 of" in header
    state, tabs, header, *_ = lesson.lesson_back(state)
    assert tabs["selected"] == "forward" and state["answers"]["0"] == text      # the answer stays with its step
    for _ in range(20):
        state = lesson.lesson_next(state)[0]
    assert state["step"] == len(lesson.STEPS) - 1


def test_the_poll_counts_guesses_per_room_and_moves_a_changed_guess(models):
    room = "hall-poll"
    request = SimpleNamespace(session_hash="p", query_params={"room": room})
    choices = lesson.STEPS[0].choices
    state = lesson.lesson_go(None)[0]
    state, _, poll = lesson.lesson_guess(state, choices[0], request=request)
    state, _, poll = lesson.lesson_guess(state, choices[1], request=request)          # changed: moved, not added
    assert lesson.POLLS.counts(room, 0) == {choices[1]: 1} and "(1)" in poll
    assert lesson.room_of(SimpleNamespace(query_params={"room": "../x"})) is None
    assert lesson.room_of(SimpleNamespace(query_params={"room": "x" * 33})) is None
    assert lesson.room_of(None) is None


def test_the_polls_are_bounded_in_rooms_and_in_time():
    now = [0.0]
    polls = lesson.Polls(max_rooms=3, ttl_s=60, clock=lambda: now[0])
    choice = lesson.STEPS[1].choices[0]
    for k in range(5):
        polls.vote(f"room-{k}", 1, choice)
    assert len(polls) == 3 and polls.counts("room-0", 1) == {} and polls.counts("room-4", 1) == {choice: 1}
    now[0] = 61.0
    assert polls.counts("room-4", 1) == {} and len(polls) == 0                       # forgotten after ttl_s
    with pytest.raises(ValueError, match="not a choice of step 2; its choices are"):
        polls.vote("room", 1, "maybe")


def test_the_histogram_marks_the_measured_answer():
    choices = lesson.STEPS[0].choices
    answer = lesson.Answer(choices[1], "")
    text = lesson.histogram(0, {choices[0]: 3, choices[1]: 1}, answer)
    assert f"{choices[1]} ✔</span>" in text and "(4)" in text and "width:75%" in text and lesson.histogram(0, {}) == ""
    assert "t &lt; 100" in text                                                     # choices are escaped


def test_the_answers_cache_is_bounded(models, monkeypatch):
    monkeypatch.setattr(lesson, "MAX_CACHED", 2)
    lesson._answers.clear()
    for k in (2, 4, 2):
        lesson.measured("mnist", k, B)
    assert len(lesson._answers) <= 2


def test_the_bundled_mnist_model_loses_the_digit_sooner_with_the_linear_schedule():
    """The first step's answer on the bundled model, measured on its real examples: the linear schedule (the model's)
    drowns the digit between t = 100 and 300, the cosine schedule later."""
    ddpm, judge = load_pretrained("mnist"), load_judge("mnist")
    images, labels = load_examples("mnist")
    answer = lesson.answer_forward(ddpm, judge=judge, images=images, labels=labels)
    linear, cosine = map(int, re.findall(r"\*\*t = (\d+)\*\*", answer.text))
    assert linear < cosine and answer.choice == lesson.FORWARD_CHOICES[1] == "100 to 300"


def test_in_a_browser_a_step_highlights_its_control_and_using_it_after_the_reveal_moves_on(tmp_path):
    """Headless chromium, tiny models: opening the lesson opens the forward tab with its t slider highlighted; the
    reveal opens after a guess, with the room's poll; moving the slider then moves the lesson to step 2, whose tab
    opens with the reverse tab's Start highlighted."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} does not exist (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    with app_in_chromium(tmp_path) as (browser, url):
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.set_default_timeout(60_000)
        page.goto(url + "?room=hall")
        page.locator("#lesson").get_by_text("Lesson:").first.click()
        page.wait_for_selector("#fwd_t.lesson-focus")
        assert page.locator("button[role=tab][aria-selected=true]").inner_text().startswith("1.")
        assert page.locator("#lesson_reveal").is_disabled()
        page.locator("#lesson_guess").get_by_text("100 to 300").click()
        page.wait_for_function("() => !document.querySelector('#lesson_reveal').disabled")
        page.locator("#lesson_reveal").click()
        page.wait_for_function("() => document.querySelector('#lesson').innerText.includes('Measured on')")
        assert "The room's guesses" in page.locator("#lesson_poll").inner_text()
        page.locator("#fwd_t input[type=range]").first.focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_function("() => document.querySelector('#lesson').innerText.includes('Step 2 of')")
        page.locator("#lesson").get_by_text("Open its tab").click()
        page.wait_for_selector("#reverse-go.lesson-focus")
        assert page.locator("button[role=tab][aria-selected=true]").inner_text().startswith("2.")


def test_without_judges_the_reveal_says_why(models):
    registry.set_registry(models, use_judges=False)
    try:
        with pytest.raises(gr.Error, match=r"switched off here \(DDPM_APP_JUDGE=0\)"):
            lesson.measured("mnist", 0, B)
    finally:
        registry.set_registry(models, use_judges=True)
