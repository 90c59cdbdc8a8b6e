"""Fine-tuning in the browser: Algorithm 1 on a copy of a model, streamed, stoppable, per session.

Drawings become a new class (the visitor's own, or the ready-made triangles of the default run): the class-embedding
table of the copied network grows by one row (started at the mean of the class rows; the null class of guidance moves
one index up). The network trains on the new images with rehearsal (rehearsal_step): half of every batch holds old
labels, on real examples of the old classes and on the new images, and is pulled to what the base model predicted
for them. Plain Algorithm 1 on the new images beside replayed examples turned the row of "0" into triangles within
30 s; held this way, every old class's judge score on the fixed-seed preview stays (benchmarks/forgetting.py).
`build()` lays the tab out and wires it.
"""
import copy
import os
import re
import shutil
import time

import gradio as gr
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..data import ImageDataset, make_loader, to_unit_range
from ..diffusion import DDPM, sample_xt
from ..eval.judge import NONE
from ..plots import image_grid
from ..sampling import sample_steps
from ..training import draw_t_eps, optimizer_step, train_classconditional, warmup_stable_decay
from .cores import shares_cores
from .explain import FINETUNE, LEADS, SOURCES
from .figures import loss_figure
from .images import CheckedSketchpad, image_to_x0, show_uint8
from .inputs import LIMITS, check_int, class_indices, class_names
from .jobs import holds_session, stopper
from .pickers import DEFAULT_GUIDANCE
from .registry import registry, session_id
from .widgets import Parts, by_name, code, go_button, go_row, image, intro, training_job

SCRATCH = "scratch:"        # base-model value prefix for "a tiny model from scratch", e.g. "scratch:mnist"
TINY_NET = dict(base_channels=16, channel_mults=(1, 2), attn_levels=(1,), emb_channels=64, groups=8)
BATCH, LR, PREVIEW_PER_CLASS = 32, 2e-4, 4
PREVIEW_SAMPLER, PREVIEW_STEPS = "dpmpp_2m", 10      # the preview: guided as the other tabs start, 10 quick steps
PREVIEW_ROWS = 11           # a new class and ten old ones: the preview shows whether any old class changed
NEW_PER_BATCH, HELD_PER_BATCH, OLD_PER_BATCH = 10, 20, 20   # a new class's batch (Rehearsal): 10 learn, 40 hold
NEW_ROW_LR, P_UNCOND = 1e-2, 0.1
ROW_FIRST, WARMUP = 30, 100     # a new class's run: steps with only the new row learning, then the shared weights' rise
EXAMPLE_DRAWINGS = 16       # the ready-made triangles of the default run
TICK_S = 1.0                # the longest a run trains between two progress updates
# The default budget: 300 steps, about a minute on two idle cores (0.15 s a step), longer on a busy machine (capped
# in wall time). In steps, every run of the default ends in the same model, and the new class is drawn by then.
BUDGET_KIND, BUDGET = "steps", 300
SOURCES_OF_DATA = ("shapes", "own", "classes")
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
    """A copy of `ddpm` with one more class `name`: embedding rows [old classes, new, null]. The new row starts at
    the mean of the class rows, no single class's own (a copy of the row of "0" made the new class start as zeros)."""
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


# Alg. 1 for a new class, with rehearsal: the old labels are held where the base model had them
def rehearsal_step(model, base, x_new, x_old, y_old, optim, *, generator=None):
    """One step of Algorithm 1 on the new class's images x_new [n, C, H, W] (the model's last class), rehearsing
    the old ones: x_old [m, C, H, W] under old labels y_old [m] (old classes or the null class; real examples,
    and the new images too) are pulled to what the base model predicts for them instead of to eps. So a label
    keeps its meaning even on images like the new class's, and the null class of guidance stays as it was.
    Only the new class's row of the class-embedding table learns. Returns the loss."""
    n, new = len(x_new), model.num_classes - 1
    x0 = torch.cat([x_new, x_old])                                                        # [n + m, C, H, W]
    y = torch.cat([torch.full((n,), new), y_old])
    t, eps, _ = draw_t_eps(model, x0.shape, x0.device, generator=generator)               # Alg. 1, lines 3-4
    x_t = sample_xt(x0, t, eps, model.schedule.alpha_bar)
    with torch.no_grad():                                         # the base's null class is one index lower
        held = base.eps(x_t[n:], t[n:], torch.where(y_old == model.null_class, base.null_class, y_old))
    optim.zero_grad(set_to_none=True)
    loss = F.mse_loss(model.eps(x_t, t, y), torch.cat([eps[:n], held]))                 # Alg. 1, line 5, rehearsed
    loss.backward()
    rows = model.net.class_emb.weight.grad
    rows[:new], rows[new + 1:] = 0, 0                              # the old classes' rows and the null row stay
    optimizer_step(model, optim)
    return loss.detach()


class Rehearsal:
    """The batches of a new class's training: NEW_PER_BATCH of the new images (shifted by up to 2 pixels), then
    HELD_PER_BATCH of them under old labels, then OLD_PER_BATCH real examples of the old classes under their own
    labels; a tenth of the old labels are the null class. With 10 + 10 + 10, 16 ready-made triangles still moved a
    "5" in 3 of 16 previews; with 10 + 20 + 20 at most one of 16 moved in any class (benchmarks/forgetting.py).
    The optimizer learns the new row at NEW_ROW_LR, the rest at LR."""

    def __init__(self, model, base, own, old, old_labels, generator):
        self.model, self.base, self.own, self.old, self.old_labels, self.g = model, base, own, old, old_labels, generator
        emb = model.net.class_emb.weight
        rest = [p for p in model.parameters() if p is not emb]
        self.optim = torch.optim.AdamW([dict(params=[emb], lr=NEW_ROW_LR, weight_decay=0.0), dict(params=rest, lr=LR)])
        # A fresh Adam moves every weight by about the learning rate at once, noise or not. The shared weights wait
        # ROW_FIRST steps (only the new row learns, Adam's moments fill), then warm up over WARMUP steps.
        rise = warmup_stable_decay(WARMUP)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optim, [lambda s: 1.0, lambda s: rise(s - ROW_FIRST) if s >= ROW_FIRST else 0.0])

    def batch(self):
        """(x_new, x_old, y_old) for rehearsal_step."""
        K, g, n, held = self.base.num_classes, self.g, NEW_PER_BATCH, HELD_PER_BATCH
        pick = self.own[torch.randint(0, len(self.own), (n + held,), generator=g)]
        dy, dx = torch.randint(-2, 3, (2,), generator=g).tolist()
        pick = pick.roll((dy, dx), dims=(2, 3))                   # the drawings sit inside a 4-pixel empty border
        x_old, y_old = pick[n:], torch.randint(0, K, (held,), generator=g)
        if self.old is not None:
            k = torch.randint(0, len(self.old), (OLD_PER_BATCH,), generator=g)
            x_old, y_old = torch.cat([x_old, self.old[k]]), torch.cat([y_old, self.old_labels[k]])
        y_old = torch.where(torch.rand(len(y_old), generator=g) < P_UNCOND, self.model.null_class, y_old)
        return pick[:n], x_old, y_old

    def __call__(self, max_steps, max_seconds, stop):
        """Train up to max_steps steps or max_seconds (at least one step); returns the losses."""
        losses, start = [], time.perf_counter()
        self.model.train()
        try:
            while not losses or (len(losses) < max_steps and time.perf_counter() - start < max_seconds and not stop()):
                losses.append(float(rehearsal_step(self.model, self.base, *self.batch(), self.optim, generator=self.g)))
                self.schedule.step()
        finally:
            self.model.eval()
        return losses


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


def example_drawings(n=EXAMPLE_DRAWINGS, seed=0):
    """Ready-made drawings for a new class, the default run's data: n triangles drawn as a visitor would on the
    sketchpad (280 x 280, black strokes of varied width; size, turn and corners at random) and made MNIST-style
    by image_to_x0, as drawings are: uint8 [n, 28, 28]."""
    rng = np.random.default_rng(seed)
    drawings = []
    for _ in range(n):
        canvas = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
        centre, turn = rng.uniform(120, 160, 2), rng.uniform(0, 2 * np.pi)
        angles = turn + 2 * np.pi * np.arange(3) / 3 + rng.uniform(-0.3, 0.3, 3)
        radii = rng.uniform(80, 120, 3)
        corners = [tuple(centre + r * np.array([np.cos(a), np.sin(a)])) for a, r in zip(angles, radii, strict=True)]
        ImageDraw.Draw(canvas).line(corners + corners[:1], fill=(0, 0, 0, 255), width=int(rng.integers(14, 24)),
                                    joint="curve")
        drawings.append(image_to_x0({"composite": canvas}))
    return np.stack(drawings)


def added_classes(model, request=None):
    """The class names of session model `model` that its bundled base lacks (the classes fine-tuning added), for the
    other tabs to pick; [] for any other model."""
    reg, sid = registry(), session_id(request)
    folder = reg.base_folder(model, sid)
    if not model or folder == model or folder not in reg.bundled():
        return []
    known = set(reg.config(folder).get("class_names") or [])
    return [name for name in class_names(reg.model(model, sid)) if name not in known]


def _new_class_name(model, new_name):
    name = (new_name or "").strip()
    if not re.fullmatch(r"[\w \-]{1,24}", name):
        raise gr.Error(f"class name {name!r}: use 1-24 letters, digits, spaces, '-' or '_'")
    if name in class_names(model):
        raise gr.Error(f"class name {name!r} exists already; the model's classes are {class_names(model)}")
    return name


def _prepare(base, source, classes, new_name, files, sid, seed):
    """What a run trains and how: (the model, a fresh copy; train(max_steps, max_seconds, stop) -> losses; the
    classes to preview; the examples folder; a line on the data)."""
    reg = registry()
    if not isinstance(base, str) or not base:
        raise gr.Error(f"start from = {base!r}: choose a model to start from, one of {[v for _, v in base_choices()]}")
    if source not in SOURCES_OF_DATA:
        raise gr.Error(f"data source {source!r} is unknown; choose one of {list(SOURCES_OF_DATA)}")
    g = torch.Generator().manual_seed(seed)
    if base.startswith(SCRATCH):
        if source != "classes":
            raise gr.Error("a new class is added to a trained model: choose one to start from, or train the tiny "
                           "model from scratch on classes of the dataset")
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
        data = ImageDataset(to_unit_range(images[keep]), labels[keep], folder, class_names(model))    # [N, 1, 28, 28]
        loader, optim = make_loader(data, BATCH, seed=seed), torch.optim.AdamW(model.parameters(), lr=LR)

        def train(max_steps, max_seconds, stop):
            return train_classconditional(model, loader, None, optim, "cpu", stop=stop, max_steps=max_steps,
                                          max_seconds=max_seconds, progress=False, generator=g)
        return model, train, idx[:PREVIEW_ROWS], folder, f"{len(data)} real examples of {len(idx)} classes"
    name = _new_class_name(model, new_name)
    if source == "shapes":
        own, what = example_drawings(), "ready-made drawings"
    else:
        own, what = images_from_uploads(files, reg.peek(sid).drawings if reg.peek(sid) else []), "of your images"
    old = reg.examples(folder) if folder in reg.datasets() else None
    x_old, y_old = (to_unit_range(old[0]), old[1]) if old else (None, None)
    teacher, model = reg.model(base, sid), with_new_class(model, name)
    train = Rehearsal(model, teacher, to_unit_range(own), x_old, y_old, g)
    old_classes = list(range(teacher.num_classes))
    rehearsed = f"{len(old[0])} real examples and " if old else ""
    return (model, train, [model.num_classes - 1] + old_classes[:PREVIEW_ROWS - 1], folder,
            f"{len(own)} {what} as the new class '{name}', rehearsing the {len(old_classes)} old classes on "
            f"{rehearsed}the new images")


def preview_walk(model, classes, seed=0, per_class=PREVIEW_PER_CLASS):
    """The fixed-seed samples of the preview (DPM-Solver++, 10 steps, guidance DEFAULT_GUIDANCE), per_class per
    class: yields (steps done, steps, x) after each step; x is the result after the last. Each class draws its x_T
    from its own seed, so its row is the same whichever rows are drawn with it (the new class's, the old ones')."""
    x = torch.cat([torch.randn((per_class, *model.sample_shape), generator=torch.Generator().manual_seed(
        seed * 1000 + c)) for c in classes])                                                  # Alg. 2, line 1
    y = torch.tensor(classes).repeat_interleave(per_class)
    steps = min(PREVIEW_STEPS, model.T)
    for step in sample_steps(model, x, y=y, sampler=PREVIEW_SAMPLER, steps=steps, guidance_scale=DEFAULT_GUIDANCE):
        yield step.i + 1, steps, step.x_prev.clamp(-1, 1)


def _picture(model, x, classes):
    return image_grid(x, PREVIEW_PER_CLASS, scale=5, row_labels=[class_names(model)[c] for c in classes],
                      label_width=170)


def _preview(model, classes, seed=0):
    """The fixed-seed preview grid, shown before and during training (same noise every time)."""
    *_, (_, _, x) = preview_walk(model, classes, seed)
    return _picture(model, x, classes)


def judge_rows(judge, x, classes, n_known):
    """Per preview row: (how many the judge recognises as its class, how many it finds none of its classes); for a
    class it never saw (c >= n_known, the judge's own classes), recognised is None. None without a judge."""
    if judge is None:
        return None
    verdicts = judge.classify(x, none_of_these=judge.reference is not None).view(len(classes), PREVIEW_PER_CLASS)
    return [(None if c >= n_known else int((v == c).sum()), int((v == NONE).sum())) for c, v in zip(classes, verdicts,
                                                                                                    strict=True)]


def judge_table(model, classes, before, now):
    """Markdown: the judge's verdicts on the preview rows, before and now (judge_rows of each)."""
    if before is None:
        return "*No judge classifier for this model: the rows are not checked.*"
    n = PREVIEW_PER_CLASS

    def cell(row):
        hits, none = row
        return f"none of these: {none} / {n}" if hits is None else f"{hits} / {n}" + (f" ({none} none)" if none else "")
    rows = [f"| {class_names(model)[c]} | {cell(b)} | {cell(a)} |" for c, b, a in zip(classes, before, now, strict=True)]
    return ("**Judge** (a classifier of the old classes that can also say *none of these*): images it recognises as "
            "their row's class\n\n| class | before | now |\n|---|---|---|\n" + "\n".join(rows))


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
    reverse-tab model picker, grid-tab model picker, this tab's "start from" picker): the first at once, then one
    per sampling step of each preview and one at least every TICK_S seconds of training.
    """
    sid, reg = session_id(request), registry()
    if budget_kind not in BUDGET_KINDS:
        raise gr.Error(f"budget kind {budget_kind!r} is unknown; choose one of {list(BUDGET_KINDS)}")
    budget = check_int(f"budget ({budget_kind})", budget, "train_" + budget_kind)
    refresh_every = check_int("refresh every (steps)", refresh_every, "refresh_every")
    seed = check_int("seed", seed)
    model, train, preview, folder, data = _prepare(base, source, classes or [], new_name, files, sid, seed)
    session = reg.session(sid)
    stop = session.stops["finetune"]
    judge = reg.judge(folder)
    n_known = judge.config["num_classes"] if judge is not None else None
    nothing = (gr.update(),) * 4            # checkpoint file and the three model pickers change only at the end
    losses, start, capped, table, drawn = [], None, False, "", None

    def bar(status):
        if start is None:
            return _bar(0, budget, budget_kind, None, status)
        done = len(losses) if budget_kind == "steps" else min(time.perf_counter() - start, budget)
        return _bar(done, budget, budget_kind, np.mean(losses[-20:]) if losses else None, status)

    def draw(what, shown):
        """One update per sampling step of the preview, returning its samples. Before training the bar fills with the
        preview's steps, so it moves from the first second on."""
        for i, n, x in preview_walk(model.eval(), preview):
            if i == n:
                return x
            progress = (_bar(i, n, "sampling steps", None, f"drawing the {what} samples") if start is None
                        else bar(f"drawing the {what} samples: step {i} / {n}"))
            yield (progress, loss_figure(losses), *shown, f"Training on {data}, batch {BATCH}.\n\n{table}") + nothing

    yield (bar("drawing the 'before' samples"), loss_figure([]), None, None, f"Training on {data}, batch {BATCH}.") + nothing
    x = yield from draw("'before'", (None, None))
    before, verdicts_before = _picture(model, x, preview), judge_rows(judge, x, preview, n_known)
    current, table = before, judge_table(model, preview, verdicts_before, verdicts_before)
    cap = LIMITS["train_seconds"][1]         # a budget in steps is capped in wall time as well
    start = time.perf_counter()
    while not stop.is_set():
        elapsed = time.perf_counter() - start
        if (len(losses) if budget_kind == "steps" else elapsed) >= budget:
            break
        if elapsed >= cap:
            capped = True
            break
        chunk = refresh_every - len(losses) % refresh_every
        if budget_kind == "steps":
            chunk = min(chunk, budget - len(losses))
        seconds = min(TICK_S, (budget if budget_kind == "seconds" else cap) - elapsed)
        losses += train(chunk, seconds, stop.is_set)
        yield (bar("training"), loss_figure(losses), before, current, f"step {len(losses)}\n\n{table}") + nothing
        if len(losses) % refresh_every == 0 and not stop.is_set():
            x, drawn = (yield from draw("'now'", (before, current))), len(losses)
            current = _picture(model, x, preview)
            table = judge_table(model, preview, verdicts_before, judge_rows(judge, x, preview, n_known))
    stopped = stop.is_set()
    if losses and drawn != len(losses):
        x = yield from draw("final", (before, current))
        current = _picture(model, x, preview)
        table = judge_table(model, preview, verdicts_before, judge_rows(judge, x, preview, n_known))
    session.n_finetuned += 1
    name = f"{folder}-finetuned-{session.n_finetuned}"
    reg.add_session_model(sid, name, model, folder)
    zip_path = save_zip(model, session.file(name))
    choices = reg.model_names(sid)
    added = added_classes(name, request)
    status = (f"**{'Stopped' if stopped else 'Done'} after {len(losses)} steps "
              f"({time.perf_counter() - start:.0f} s).** " + (f"Stopped because {stop.reason}. " if stopped else "")
              + (f"The time cap of {cap} s per run ended it before {budget} steps. " if capped else "")
              + f"The model is now **{name}** in the other tabs (for this browser session only)"
              + (f", with its new class **{added[-1]}** picked" if added else "")
              + f". Classes: {', '.join(class_names(model))}.\n\n{table}")
    yield (bar("stopped" if stopped else "done"), loss_figure(losses), before, current, status, zip_path,
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
                ui.source = gr.Radio([(f"{EXAMPLE_DRAWINGS} ready-made drawings of triangles, as a new class", "shapes"),
                                      ("my own images, as a new class", "own"),
                                      ("classes of the dataset (bundled examples)", "classes")],
                                     value="shapes", label="data")
                ui.classes = gr.Dropdown(label="classes to train on", multiselect=True, choices=[], allow_custom_value=True)
                ui.new_name = gr.Textbox(label="name of your new class", value="triangle", max_length=24)
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
                    ui.budget_kind = gr.Radio(list(BUDGET_KINDS), value=BUDGET_KIND, label="budget in", elem_id="ft_kind")
                    ui.budget = gr.Number(value=BUDGET, precision=0, label=f"budget (max {LIMITS['train_seconds'][1]} s "
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
        code(*SOURCES["finetune"], with_new_class, rehearsal_step)

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
