"""Tab 3: class-conditional grids, exactly `ddpm.sample(ddpm, n_samples, classes)`, checked by the judge. The tab
opens on the grid of its default settings (openers.py). `build()` lays the tab out and wires it."""
import time

import gradio as gr
import torch
from PIL import Image, ImageDraw

from ..plots import image_grid
from ..sampling import sample
from . import openers
from .cores import shares_cores
from .explain import GRID, LEADS, SOURCES
from .finetune import added_classes
from .inputs import LIMITS, check_int, check_sampling, class_indices, class_names
from .jobs import Stopped, holds_session, step_check, stopper
from .pickers import DEFAULT_GUIDANCE, sampler_for
from .registry import registry, session_id
from .widgets import (TQDM_PROGRESS, Parts, by_name, code, go_button, go_row, guidance_input, image, intro, model_input,
                      openers_job, pictured, sampler_inputs, sampling_job, seed_input)

OWN = ("ddim", 25)         # the tab's (sampler, steps) where no quality-per-cost table is at hand
DEFAULTS = dict(n_classes=10, per_class=8, guidance=DEFAULT_GUIDANCE, seed=0)     # the tab's settings at the start
SCALE, PAD = 5, 2          # each 28 x 28 image 140 px in the picture, 2 (x 5) px apart
LABEL_FONT = 48            # the row labels' size in the picture: a grid of ten rows is shown at about a third of it


def labelled_rows(grid, labels):
    """The grid picture with a margin on the left naming each row, large enough to read where the grid is shrunk to
    fit a screen."""
    draw = ImageDraw.Draw(grid)
    width = int(max(draw.textlength(str(label), font_size=LABEL_FONT) for label in labels)) + 2 * LABEL_FONT // 3
    canvas = Image.new("RGB", (grid.width + width, grid.height), "white")
    canvas.paste(grid, (width, 0))
    draw, row = ImageDraw.Draw(canvas), (grid.height - PAD * SCALE) / len(labels)
    for r, label in enumerate(labels):
        draw.text((LABEL_FONT // 3, PAD * SCALE + (r + 0.5) * row), str(label), fill="black", font_size=LABEL_FONT,
                  anchor="lm")
    return canvas


def grid_class_choices(model, request: gr.Request = None, progress=TQDM_PROGRESS):
    """The class picker for `model`: all class names, ten chosen (a fine-tune's new classes first)."""
    names = class_names(registry().model(model, session_id(request))) if model else []
    added = added_classes(model, request)                         # a fine-tune's new classes come first
    return gr.update(choices=names, value=(added + [n for n in names if n not in added])[:DEFAULTS["n_classes"]])


def make_grid(model, sid, classes, sampler, steps, guidance, seed, per_class, *, callback=None, bars=True):
    """`sample(ddpm, per_class, classes)` as a picture with one labelled row per class and its alt text, and the
    judge's report: (picture update, judge markdown, the picture). bars: tqdm's (a handler's gr.Progress shows them)."""
    reg = registry()
    ddpm = reg.model(model, sid)
    idx = class_indices(ddpm, classes)
    x = sample(ddpm, per_class, idx, sampler=sampler, steps=steps, guidance_scale=guidance,
               generator=torch.Generator().manual_seed(seed), progress=bars, callback=callback)
    grid = labelled_rows(image_grid(x, per_class, scale=SCALE, pad=PAD), classes)
    base = reg.base_folder(model, sid)
    n_known = reg.config(base).get("num_classes") if base in reg.bundled() else None
    hits = judged_hits(reg.judge(base), x, idx, per_class, n_known)
    read = "" if hits is None else (f"; the judge classifier recognises the asked class in "
                                    f"{sum(h for h in hits if h is not None)} of "
                                    f"{per_class * sum(h is not None for h in hits)}")
    alt = (f"A grid of generated images by {model}: one row per class ({', '.join(classes)}), {per_class} images "
           f"each{read}.")
    return pictured(grid, alt), judge_report(classes, per_class, hits), grid


@shares_cores
@holds_session("grid")
def grid_run(model, classes, sampler, steps, guidance, seed, per_class, request: gr.Request = None,
             progress=TQDM_PROGRESS):
    """`sample(ddpm, per_class, classes)` as a grid with one labelled row per class.

    Returns (grid image, judge markdown, PNG path); a grid stopped before it was done keeps the picture shown
    and says why in the judge's place.
    """
    sid, reg = session_id(request), registry()
    ddpm = reg.model(model, sid)
    if not classes:
        raise gr.Error("choose at least one class")
    classes = [classes] if isinstance(classes, str) else list(classes)
    twice = sorted({c for c in classes if classes.count(c) > 1})
    if twice:
        raise gr.Error(f"classes {twice} are chosen more than once; choose each class once (one row each)")
    check_int("number of classes", len(classes), "n_classes")
    class_indices(ddpm, classes)
    per_class = check_int("samples per class", per_class, "per_class")
    steps, _, guidance, seed = check_sampling(ddpm, sampler, steps, 0.0, guidance, seed)
    stop = reg.session(sid).stops["grid"]
    try:
        picture, report, grid = make_grid(model, sid, classes, sampler, steps, guidance, seed, per_class,
                                          callback=step_check(stop))   # per step: this job's share of the cores, and Stop
    except Stopped as why:
        return gr.update(), f"**Stopped** before the grid was done: {why}. Press Generate to make it again.", gr.update()
    path = reg.session(sid).file(f"grid_{int(time.time() * 1000)}.png")
    grid.save(path)
    return picture, report, path


grid_stop = stopper("grid")


def grid_opening(model, request: gr.Request = None):
    """What the tab opens on for `model`: the grid of the tab's default settings (the first ten classes, the model's
    measured sampler), made once per model (openers.py): (picture, judge markdown, PNG path)."""
    sid = session_id(request)
    if not model:
        return gr.update(), gr.update(), gr.update()
    names = class_names(registry().model(model, sid))
    if not names:
        return gr.update(), "*An unconditional model: this tab needs classes to choose.*", gr.update()
    sampler, steps = registry().sampler_default(model, DEFAULTS["guidance"]) or OWN
    classes = names[:DEFAULTS["n_classes"]]

    def make():
        picture, report, grid = make_grid(model, sid, classes, sampler, steps, DEFAULTS["guidance"], DEFAULTS["seed"],
                                          DEFAULTS["per_class"], bars=False)
        path = openers.path(f"grid_{abs(hash((model, sid, time.time()))):x}.png")
        grid.save(path)
        return picture, report + f"\n\n*The tab opens on this grid of `{model}` with its default settings; press " \
                                 "Generate to make your own.*", path

    return openers.cached(openers.shared_key(model, sid, "grid", sampler, steps, tuple(DEFAULTS.items())), make)


def judged_hits(judge, x, idx, per_class, n_known=None):
    """Per asked class, how many of its images the judge classifier assigns to it; None for a class the judge never
    saw (a fine-tuned new class). None without a judge."""
    if judge is None:
        return None
    with torch.no_grad():             # "none of these" (a triangle asked to be a zero) counts as not recognised
        pred = judge.classify(x, none_of_these=judge.reference is not None).view(len(idx), per_class)
    return [None if n_known is not None and c >= n_known else int((pred[k] == c).sum()) for k, c in enumerate(idx)]


def judge_report(classes, per_class, hits):
    """A markdown table: per asked class, how many images the judge classifier assigns to that class."""
    if hits is None:
        return "*No judge classifier is available for this model, so the images are not checked.*"
    lines = [f"| {name} | not judged (a class the judge never saw) |" if h is None else f"| {name} | {h} / {per_class} |"
             for name, h in zip(classes, hits, strict=True)]
    judged = per_class * sum(h is not None for h in hits)
    total = sum(h for h in hits if h is not None)
    summary = f"\n\n**Total: {total} / {judged}** ({100 * total / judged:.0f}%)" if judged else ""
    return ("**Judge classifier** (a small CNN trained on the real dataset): how many images show the asked class\n\n"
            "| class | recognised |\n|---|---|\n" + "\n".join(lines) + summary)


def build():
    """The tab in the current Blocks, its events wired; returns its Parts (`model`, the picker)."""
    ui = Parts()
    with gr.Tab("3. Classes", id="grid"):
        intro(LEADS["grid"], GRID)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                with go_row():
                    ui.go = go_button("grid", "▶ Generate")
                    ui.stop = gr.Button("Stop", variant="stop", elem_id="grid_stop", min_width=80)
                ui.model = model_input()
                ui.classes = gr.Dropdown(label="classes (one row each)", multiselect=True, choices=[],
                                         allow_custom_value=True)
                ui.per_class = gr.Slider(*LIMITS["per_class"], value=DEFAULTS["per_class"], step=1,
                                         label="samples per class", elem_id="grid_n")
                with gr.Accordion("guidance, sampler, seed", open=False):
                    ui.guidance = guidance_input()
                    ui.sampler, ui.steps = sampler_inputs("grid", OWN)
                    ui.seed = seed_input()
            with gr.Column(scale=3):
                ui.grid = image("samples: one row per class", main=True, height=420, elem_id="grid-main")
                with gr.Row():
                    ui.judge = gr.Markdown("*Opening a grid of this model ...*")
                    ui.png = gr.File(label="download the grid (PNG)", height=90)
        code(*SOURCES["grid"])

    shown = [ui.grid, ui.judge, ui.png]
    ui.run = ui.go.click(grid_run, inputs_kwargs=by_name(grid_run, ui.model, ui.classes, ui.sampler, ui.steps, ui.guidance,
                                                         ui.seed, ui.per_class),
                         outputs=shown, api_name="grid", **sampling_job())
    # a new model stops the grid of the old one and shows the new model's opening grid in its place
    ui.model.change(grid_stop, api_name=False, queue=False, cancels=[ui.run]).then(
        grid_opening, inputs_kwargs=by_name(grid_opening, ui.model), outputs=shown, api_name="grid_opening",
        **openers_job())
    ui.model.change(grid_class_choices, inputs_kwargs=by_name(grid_class_choices, ui.model), outputs=[ui.classes],
                    api_name="grid_classes")
    pick = sampler_for(OWN)
    ui.model.change(pick, inputs_kwargs=by_name(pick, ui.model, ui.guidance), outputs=[ui.sampler, ui.steps],
                    api_name=False, show_progress="hidden")
    ui.stop.click(grid_stop, api_name="grid_stop", queue=False)
    return ui
