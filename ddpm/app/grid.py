"""Tab 3: class-conditional grids, exactly `ddpm.sample(ddpm, n_samples, classes)`, checked by the judge.
`build()` lays the tab out and wires it."""
import time

import gradio as gr
import torch

from ..plots import image_grid
from ..sampling import sample
from .cores import shares_cores
from .explain import GRID, LATEX, SOURCES
from .inputs import LIMITS, check_int, check_sampling, class_indices, class_names
from .jobs import Stopped, holds_session, step_check, stopper
from .pickers import sampler_for
from .registry import registry, session_id
from .widgets import (TQDM_PROGRESS, Parts, by_name, code, guidance_input, image, model_input, sampler_inputs, sampling_job,
                      seed_input)

OWN = ("ddim", 25)         # the tab's (sampler, steps) where no quality-per-cost table is at hand


def grid_class_choices(model, request: gr.Request = None, progress=TQDM_PROGRESS):
    """The class picker for `model`: all class names, the first ten chosen."""
    names = class_names(registry().model(model, session_id(request))) if model else []
    return gr.update(choices=names, value=names[:10])


@shares_cores
@holds_session("grid")
def grid_run(model, classes, sampler, steps, guidance, seed, per_class, request: gr.Request = None,
             progress=TQDM_PROGRESS):
    """`sample(ddpm, per_class, classes)` as a grid with one labelled row per class.

    Returns (grid image, judge markdown, PNG path).
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
    idx = class_indices(ddpm, classes)
    per_class = check_int("samples per class", per_class, "per_class")
    steps, _, guidance, seed = check_sampling(ddpm, sampler, steps, 0.0, guidance, seed)
    stop = reg.session(sid).stops["grid"]
    try:
        x = sample(ddpm, per_class, idx, sampler=sampler, steps=steps, guidance_scale=guidance,
                   generator=torch.Generator().manual_seed(seed), progress=True,    # tqdm, shown by gr.Progress
                   callback=step_check(stop))       # per step: this job's share of the cores, and Stop
    except Stopped as why:
        raise gr.Error(f"the grid was stopped before it was done: {why}") from None
    grid = image_grid(x, per_class, scale=5, row_labels=classes, label_width=190)
    path = reg.session(sid).file(f"grid_{int(time.time() * 1000)}.png")
    grid.save(path)
    base = reg.base_folder(model, sid)
    n_known = reg.config(base).get("num_classes") if base in reg.bundled() else None
    return grid, judge_report(reg.judge(base), x, idx, classes, per_class, n_known), path


grid_stop = stopper("grid")


def judge_report(judge, x, idx, classes, per_class, n_known=None):
    """A markdown table: per asked class, how many images the judge classifier assigns to that class."""
    if judge is None:
        return "*No judge classifier is available for this model, so the images are not checked.*"
    with torch.no_grad():
        pred = judge.classify(x).view(len(idx), per_class)
    lines, total, judged = [], 0, 0
    for k, (c, name) in enumerate(zip(idx, classes, strict=True)):
        if n_known is not None and c >= n_known:
            lines.append(f"| {name} | not judged (a class the judge never saw) |")
            continue
        hits = int((pred[k] == c).sum())
        total, judged = total + hits, judged + per_class
        lines.append(f"| {name} | {hits} / {per_class} |")
    summary = f"\n\n**Total: {total} / {judged}** ({100 * total / judged:.0f}%)" if judged else ""
    return ("**Judge classifier** (a small CNN trained on the real dataset): how many images show the asked class\n\n"
            "| class | recognised |\n|---|---|\n" + "\n".join(lines) + summary)


def build():
    """The tab in the current Blocks, its events wired; returns its Parts (`model`, the picker)."""
    ui = Parts()
    with gr.Tab("3. Class-conditional generation", id="grid"):
        gr.Markdown(GRID, latex_delimiters=LATEX)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                ui.model = model_input()
                ui.classes = gr.Dropdown(label="classes (one row each)", multiselect=True, choices=[],
                                         allow_custom_value=True)
                ui.per_class = gr.Slider(*LIMITS["per_class"], value=8, step=1, label="samples per class", elem_id="grid_n")
                ui.guidance = guidance_input()
                ui.sampler, ui.steps = sampler_inputs("grid", OWN)
                ui.seed = seed_input()
                with gr.Row():
                    ui.go = gr.Button("Generate", variant="primary", elem_id="grid_go")
                    ui.stop = gr.Button("Stop", variant="stop", elem_id="grid_stop")
            with gr.Column(scale=3):
                ui.grid = image("samples: one row per class", elem_id="grid_img")
                ui.judge = gr.Markdown()
                ui.png = gr.File(label="download the grid (PNG)")
        code(*SOURCES["grid"])

    ui.model.change(grid_class_choices, inputs_kwargs=by_name(grid_class_choices, ui.model), outputs=[ui.classes],
                    api_name="grid_classes")
    pick = sampler_for(OWN)
    ui.model.change(pick, inputs_kwargs=by_name(pick, ui.model, ui.guidance), outputs=[ui.sampler, ui.steps],
                    api_name=False, show_progress="hidden")
    ui.go.click(grid_run, inputs_kwargs=by_name(grid_run, ui.model, ui.classes, ui.sampler, ui.steps, ui.guidance, ui.seed,
                                                ui.per_class),
                outputs=[ui.grid, ui.judge, ui.png], api_name="grid", **sampling_job())
    ui.stop.click(grid_stop, api_name="grid_stop", queue=False)
    return ui
