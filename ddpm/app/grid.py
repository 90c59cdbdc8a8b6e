"""Tab 3: class-conditional grids, exactly `ddpm.sample(ddpm, n_samples, classes)`, checked by the judge."""
import time

import gradio as gr
import torch

from ..plots import image_grid
from ..sampling import sample
from .cores import shares_cores
from .inputs import check_int, check_sampling, class_indices, class_names
from .jobs import Stopped, holds_session, step_check, stopper
from .registry import registry, session_id


def grid_class_choices(model, request: gr.Request = None, progress=gr.Progress(track_tqdm=True)):
    """The class picker for `model`: all class names, the first ten chosen."""
    names = class_names(registry().model(model, session_id(request))) if model else []
    return gr.update(choices=names, value=names[:10])


@shares_cores
@holds_session("grid")
def grid_run(model, classes, per_class, guidance, sampler, steps, seed, request: gr.Request = None,
             progress=gr.Progress(track_tqdm=True)):
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
    for k, (c, name) in enumerate(zip(idx, classes)):
        if n_known is not None and c >= n_known:
            lines.append(f"| {name} | not judged (a class the judge never saw) |")
            continue
        hits = int((pred[k] == c).sum())
        total, judged = total + hits, judged + per_class
        lines.append(f"| {name} | {hits} / {per_class} |")
    summary = f"\n\n**Total: {total} / {judged}** ({100 * total / judged:.0f}%)" if judged else ""
    return ("**Judge classifier** (a small CNN trained on the real dataset): how many images show the asked class\n\n"
            "| class | recognised |\n|---|---|\n" + "\n".join(lines) + summary)
