"""Fine-tuning in the browser: Algorithm 1 on a copy of a model, streamed, stoppable, per session.

The visitor's own images become a new class: the class-embedding table of the copied network grows
by one row (initialised at the mean of the existing class rows; the null class of guidance moves one
index up), then the whole network trains on the new images mixed with bundled examples of the old
classes, so it learns the new class without forgetting the others. `build()` lays the tab out and wires it.
"""
import copy
import os
import re
import shutil
import time

import gradio as gr
import numpy as np
import torch

from ..data import ImageDataset, make_loader, to_unit_range
from ..diffusion import DDPM
from ..plots import image_grid
from ..sampling import sample
from ..training import train_classconditional
from .cores import shares_cores
from .explain import FINETUNE, LEADS, SOURCES
from .figures import loss_figure
from .images import CheckedSketchpad, image_to_x0, show_uint8
from .inputs import LIMITS, check_int, class_indices, class_names
from .jobs import holds_session, stopper
from .registry import registry, session_id
from .widgets import Parts, by_name, code, go_button, go_row, image, intro, training_job

SCRATCH = "scratch:"        # base-model value prefix for "a tiny model from scratch", e.g. "scratch:mnist"
TINY_NET = dict(base_channels=16, channel_mults=(1, 2), attn_levels=(1,), emb_channels=64, groups=8)
BATCH, LR, PREVIEW_PER_CLASS, PREVIEW_STEPS = 32, 2e-4, 4, 20
ALLOWED_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
BUDGET_KINDS = ("seconds", "steps")


def base_choices(request=None):
    """(label, value) pairs: every model of this session, plus tiny from-scratch models per dataset."""
    reg = registry()
    return ([(name, name) for name in reg.model_names(session_id(request))]
            + [(f"{d}: from scratch (tiny)", SCRATCH + d) for d in reg.datasets()])


def base_choices_update(request: gr.Request = None):
    choices = base_choices(request)
    return gr.update(choices=choices, value=choices[0][1] if choices else None)


def _scratch_names(folder):
    """Class names for a from-scratch model on `folder`'s examples: the bundled config's, else 0..K-1."""
    reg = registry()
    if folder not in reg.datasets():
        raise gr.Error(f"no examples for {folder!r}; datasets with examples: {reg.datasets()}")
    names = reg.config(folder).get("class_names") if folder in reg.bundled() else None
    return names or [str(i) for i in range(int(reg.examples(folder)[1].max()) + 1)]


def finetune_class_choices(base, request: gr.Request = None):
    """Class names a fine-tuning run on `base` can use (all of them chosen), for the class picker."""
    reg = registry()
    if not base:
        names = []
    elif base.startswith(SCRATCH):
        names = _scratch_names(base[len(SCRATCH):])
    else:
        names = class_names(reg.model(base, session_id(request)))
    return gr.update(choices=names, value=names)


def with_new_class(ddpm, name):
    """A copy of `ddpm` with one more class `name`: embedding rows [old classes, new (mean), null]."""
    if ddpm.num_classes is None:
        raise gr.Error("this base model is unconditional; fine-tuning a new class needs a class-conditional model")
    config = ddpm.config
    K = ddpm.num_classes
    config.update(num_classes=K + 1, class_names=class_names(ddpm) + [name])
    new = DDPM(**config)
    state = ddpm.state_dict()
    emb = state["net.class_emb.weight"]                                                   # [K + 1, D]
    state["net.class_emb.weight"] = torch.cat([emb[:K], emb[:K].mean(0, keepdim=True), emb[K:]])   # [K + 2, D]
    new.load_state_dict(state)
    return new


def images_from_uploads(files, drawings):
    """Uploaded files (paths) and collected drawings -> uint8 [N, 28, 28], with clear errors for bad files."""
    files = [f if isinstance(f, str) else getattr(f, "name", f) for f in (files or [])]
    lo, hi = LIMITS["uploads"]
    if len(files) + len(drawings) > hi:
        raise gr.Error(f"{len(files) + len(drawings)} images given; at most {hi} are allowed")
    images = []
    for path in files:
        base = os.path.basename(str(path))
        if not str(path).lower().endswith(ALLOWED_EXT):
            raise gr.Error(f"{base}: file type not allowed; use one of {', '.join(ALLOWED_EXT)}")
        size_mb = os.path.getsize(path) / 2**20
        if size_mb > LIMITS["upload_mb"][1]:
            raise gr.Error(f"{base} is {size_mb:.1f} MB; at most {LIMITS['upload_mb'][1]} MB per image are allowed")
        images.append(image_to_x0(path))
    images += list(drawings)
    if len(images) < lo:
        raise gr.Error("no images of your own yet: upload some, or draw and press 'Add drawing'")
    return np.stack(images)


def add_drawing(sketch, request: gr.Request = None):
    """Store one sketch (as a 28x28 image) in this session; returns the gallery of all drawings so far."""
    drawing = image_to_x0(sketch)                     # checked before any session is made for it
    session = registry().session(session_id(request))
    if len(session.drawings) >= LIMITS["uploads"][1]:
        raise gr.Error(f"at most {LIMITS['uploads'][1]} drawings are allowed")
    session.drawings.append(drawing)
    return drawings_gallery(session.drawings)


def clear_drawings(request: gr.Request = None):
    session = registry().peek(session_id(request))
    if session is not None:
        session.drawings.clear()
    return []


def drawings_gallery(drawings):
    return [show_uint8(d[None], 4) for d in drawings]


def _prepare(base, source, classes, new_name, files, sid):
    """The model to train (a fresh copy), its training set, the classes to preview and the examples folder."""
    reg = registry()
    if not isinstance(base, str) or not base:
        raise gr.Error(f"start from = {base!r}: choose a model to start from, one of {[v for _, v in base_choices()]}")
    if base.startswith(SCRATCH):
        folder = base[len(SCRATCH):]
        names = _scratch_names(folder)
        with torch.random.fork_rng():         # a repeatable initialisation that leaves the global RNG alone
            torch.manual_seed(0)
            model = DDPM(num_classes=len(names), class_names=names, net=TINY_NET, dataset=folder)
    else:
        folder = reg.base_folder(base, sid)
        model = copy.deepcopy(reg.model(base, sid))           # never train the shared (or the visitor's old) model
    if source == "classes":
        if not classes:
            raise gr.Error("choose at least one class to fine-tune on")
        idx = class_indices(model, classes)
        images, labels = reg.examples(folder)
        keep = torch.isin(labels, torch.tensor(idx))
        x = to_unit_range(images[keep])                                                   # [N, 1, 28, 28]
        return model, ImageDataset(x, labels[keep], folder, class_names(model)), idx[:4], folder
    if source != "own":
        raise gr.Error(f"data source {source!r} is unknown; choose 'classes' or 'own'")
    name = (new_name or "").strip()
    if not re.fullmatch(r"[\w \-]{1,24}", name):
        raise gr.Error(f"class name {name!r}: use 1-24 letters, digits, spaces, '-' or '_'")
    if name in class_names(model):
        raise gr.Error(f"class name {name!r} exists already; the model's classes are {class_names(model)}")
    own = to_unit_range(images_from_uploads(files, reg.peek(sid).drawings if reg.peek(sid) else []))           # [N, 1, 28, 28]
    model = with_new_class(model, name)
    new = model.num_classes - 1
    x, y = own, torch.full((len(own),), new)
    if folder in reg.datasets():                              # replay old classes so they are not forgotten
        images, labels = reg.examples(folder)
        old = to_unit_range(images)
        reps = max(1, len(old) // len(own))                   # new class ~ half of every batch
        x, y = torch.cat([own.repeat(reps, 1, 1, 1), old]), torch.cat([y.repeat(reps), labels])
        preview = [new] + sorted(labels.unique().tolist())[:3]
    else:
        preview = [new]
    return model, ImageDataset(x, y, folder, class_names(model)), preview, folder


def _preview(model, classes, seed=0):
    """The fixed-seed DDIM grid shown before and during training (same noise every time)."""
    x = sample(model, PREVIEW_PER_CLASS, classes, sampler="ddim", steps=min(PREVIEW_STEPS, model.T),
               generator=torch.Generator().manual_seed(seed))
    return image_grid(x, PREVIEW_PER_CLASS, scale=5, row_labels=[class_names(model)[c] for c in classes], label_width=170)


def _bar(done, total, unit, loss, status):
    pct = 100 * min(done / total, 1.0) if total else 0
    return (f"<div style='font-size:1.1em'><b>{status}</b> — {done:.0f} / {total} {unit}"
            + (f", loss {loss:.4f}" if loss is not None else "") + "</div>"
            f"<div style='background:#ddd;border-radius:6px;height:22px;width:100%'>"
            f"<div style='background:#f97316;height:22px;border-radius:6px;width:{pct:.1f}%'></div></div>")


@shares_cores
@holds_session("finetune")
def finetune_run(base, source, classes, new_name, files, budget_kind, budget, refresh_every, seed=0,
                 request: gr.Request = None):
    """Fine-tune a copy of `base` (Algorithm 1), streaming progress; the result joins this session's models.

    Yields (progress html, loss plot, "before" grid, "now" grid, status markdown, checkpoint zip,
    reverse-tab model picker, grid-tab model picker, this tab's "start from" picker).
    """
    sid, reg = session_id(request), registry()
    if budget_kind not in BUDGET_KINDS:
        raise gr.Error(f"budget kind {budget_kind!r} is unknown; choose one of {list(BUDGET_KINDS)}")
    budget = check_int(f"budget ({budget_kind})", budget, "train_" + budget_kind)
    refresh_every = check_int("refresh every (steps)", refresh_every, "refresh_every")
    seed = check_int("seed", seed)
    model, dataset, preview, folder = _prepare(base, source, classes or [], new_name, files, sid)
    session = reg.session(sid)
    stop = session.stops["finetune"]
    before = _preview(model.eval(), preview)
    nothing = (gr.update(),) * 4            # checkpoint file and the three model pickers change only at the end
    yield (_bar(0, budget, budget_kind, None, "starting"), loss_figure([]), before, before,
           f"Training on {len(dataset)} images, batch {min(BATCH, len(dataset))}.") + nothing
    optim = torch.optim.AdamW(model.parameters(), lr=LR)
    loader = make_loader(dataset, BATCH, seed=seed)
    g = torch.Generator().manual_seed(seed)
    losses, start, current = [], time.perf_counter(), before
    cap = LIMITS["train_seconds"][1]         # a budget in steps is capped in wall time as well
    capped = False
    while not stop.is_set():
        elapsed = time.perf_counter() - start
        done = len(losses) if budget_kind == "steps" else elapsed
        if done >= budget:
            break
        if elapsed >= cap:
            capped = True
            break
        chunk = refresh_every - len(losses) % refresh_every
        if budget_kind == "steps":
            chunk = min(chunk, budget - len(losses))
        seconds_left = (budget if budget_kind == "seconds" else cap) - elapsed
        losses += train_classconditional(model, loader, None, optim, "cpu", stop=stop.is_set, max_steps=chunk,
                                         max_seconds=seconds_left, progress=False, generator=g)
        if len(losses) % refresh_every == 0:
            current = _preview(model, preview)
        done = len(losses) if budget_kind == "steps" else time.perf_counter() - start
        yield (_bar(done, budget, budget_kind, np.mean(losses[-20:]), "training"), loss_figure(losses),
               before, current, f"step {len(losses)}") + nothing
    stopped = stop.is_set()
    model.eval()
    current = _preview(model, preview)
    session.n_finetuned += 1
    name = f"{folder}-finetuned-{session.n_finetuned}"
    reg.add_session_model(sid, name, model, folder)
    zip_path = save_zip(model, session.file(name))
    choices = reg.model_names(sid)
    status = (f"**{'Stopped' if stopped else 'Done'} after {len(losses)} steps "
              f"({time.perf_counter() - start:.0f} s).** " + (f"Stopped because {stop.reason}. " if stopped else "")
              + (f"The time cap of {cap} s per run ended it before {budget} steps. " if capped else "")
              + f"The model is now **{name}** in the other tabs "
              f"(for this browser session only). Classes: {', '.join(class_names(model))}.")
    done = len(losses) if budget_kind == "steps" else min(time.perf_counter() - start, budget)
    yield (_bar(done, budget, budget_kind, np.mean(losses[-20:]) if losses else None, "stopped" if stopped else "done"),
           loss_figure(losses), before, current, status, zip_path,
           gr.update(choices=choices, value=name), gr.update(choices=choices, value=name),
           gr.update(choices=base_choices(request)))


finetune_stop = stopper("finetune")


def save_zip(model, folder):
    """save_pretrained's folder (model.safetensors + config.json), zipped for download."""
    model.save_pretrained(folder)
    return shutil.make_archive(folder, "zip", folder)


def build(reverse_model, grid_model):
    """The tab in the current Blocks, its events wired; a fine-tuned model is picked at once in `reverse_model` and
    `grid_model`, the model pickers of tabs 2 and 3. Returns its Parts (`base`, the picker of the model to start
    from, and `trained`, the training event, after which the other tabs' pickers learn of the new model)."""
    ui = Parts()
    with gr.Tab("4. Fine-tune", id="finetune"):
        intro(LEADS["finetune"], FINETUNE)
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                with go_row():
                    ui.start = go_button("finetune", "▶ Start training")
                    ui.stop = gr.Button("Stop (keeps the weights)", variant="stop", min_width=80)
                ui.base = gr.Dropdown(label="start from", choices=[], allow_custom_value=True)
                ui.source = gr.Radio([("classes of the dataset (bundled examples)", "classes"),
                                      ("my own images, as a new class", "own")], value="classes", label="data")
                ui.classes = gr.Dropdown(label="classes to train on", multiselect=True, choices=[], allow_custom_value=True)
                ui.new_name = gr.Textbox(label="name of your new class", value="my class", max_length=24)
                ui.files = gr.File(label=f"upload images (png/jpg, up to {LIMITS['uploads'][1]}, "
                                         f"{LIMITS['upload_mb'][1]} MB each)",
                                   file_count="multiple", file_types=list(ALLOWED_EXT))
                with gr.Accordion("... or draw them", open=False):
                    ui.sketch = CheckedSketchpad(label="draw one image", type="pil", height=260, canvas_size=(280, 280))
                    with gr.Row():
                        ui.add = gr.Button("Add drawing")
                        ui.clear = gr.Button("Clear drawings")
                    ui.drawings = gr.Gallery(label="your drawings", columns=8, height=120, elem_classes="pixel")
                with gr.Row():
                    ui.budget_kind = gr.Radio(list(BUDGET_KINDS), value="seconds", label="budget in", elem_id="ft_kind")
                    ui.budget = gr.Number(value=60, precision=0, label=f"budget (max {LIMITS['train_seconds'][1]} s "
                                                                       f"or {LIMITS['train_steps'][1]} steps)",
                                          elem_id="ft_budget")
                ui.refresh_every = gr.Slider(*LIMITS["refresh_every"], value=50, step=5,
                                             label="refresh the samples every N steps")
            with gr.Column(scale=3):
                ui.bar = gr.HTML()
                with gr.Row():
                    ui.before = image("before (fixed seed)", height=380)
                    ui.now = image("now (same seed)", main=True, height=380, elem_id="finetune-main")
                ui.loss = image("loss", show_label=False)
                ui.status = gr.Markdown()
                ui.ckpt = gr.File(label="download the fine-tuned checkpoint (safetensors + config.json, zipped)")
        code(*SOURCES["finetune"], with_new_class)

    ui.base.change(finetune_class_choices, inputs_kwargs=by_name(finetune_class_choices, ui.base), outputs=[ui.classes],
                   api_name="finetune_classes")
    ui.add.click(add_drawing, inputs_kwargs=by_name(add_drawing, ui.sketch), outputs=[ui.drawings], api_name="add_drawing")
    ui.clear.click(clear_drawings, outputs=[ui.drawings], api_name="clear_drawings")
    ui.trained = ui.start.click(
        finetune_run, inputs_kwargs=by_name(finetune_run, ui.base, ui.source, ui.classes, ui.new_name, ui.files,
                                            ui.budget_kind, ui.budget, ui.refresh_every),
        outputs=[ui.bar, ui.loss, ui.before, ui.now, ui.status, ui.ckpt, reverse_model, grid_model, ui.base],
        api_name="finetune", show_progress="minimal", **training_job())
    ui.stop.click(finetune_stop, api_name="finetune_stop", queue=False)
    return ui
