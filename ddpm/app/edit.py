"""Tab 5: the reverse process on structure that is already there.

Sketch to image (SDEdit, Meng et al. 2022): noise your drawing to step t_start with `sample_xt` (Eq. 4) and run
the reverse process from there (`sample_steps(t_start=...)`): small t_start keeps your strokes, large t_start
keeps only their rough layout. Interpolation: the same deterministic sampler from start noises on the great
circle between two seeds (`slerp`), and optionally a mixture of two class embeddings (labelled as such).
The tab opens on an example sketch and its strip, and on an interpolation, made once per model (openers.py).
`build()` lays the tab out and wires it.
"""
import time
from collections import deque

import gradio as gr
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..data import to_uint8
from ..diffusion import sample_xt
from ..sampling import SAMPLERS, sample_steps, slerp
from . import openers
from .cores import shares_cores
from .explain import EDIT, LEADS, SOURCES
from .images import CheckedSketchpad, image_to_x0, labelled_strip, show, strip_gif, to_unit
from .inputs import LIMITS, UNCONDITIONAL, check_int, check_range, check_steps, class_labels, class_names, sampler_row
from .jobs import JobStop, Stopped, holds_session, step_check, stopper
from .registry import registry, session_id
from .reverse import reverse_class_choices
from .pickers import DEFAULT_GUIDANCE
from .widgets import (DEFAULT_T, Parts, by_name, code, go_button, go_row, guidance_input, image, intro, model_input, openers_job,
                      pictured, sampler_inputs, sampling_job, seed_input)

SDEDIT_OWN = ("ddim", 20)     # SDEdit's (sampler, steps): the quality-per-cost tables measure sampling from pure noise
INTERPOLATE_OWN = ("dpmpp_2m", 10)            # interpolation's (sampler, steps) to start with
# the strip's (sampler, steps) after a run of all T steps: five more such runs would take five times as long
STRIP_RUN = ("ddim", 20)
STRIP_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)     # t_start / T of the SDEdit strip
STREAM_EVERY_S = 0.25
DETERMINISTIC = [row.name for row in SAMPLERS.values() if row.deterministic(0)]    # the samplers interpolation can use
SDEDIT_DEFAULTS = dict(class_name=UNCONDITIONAL, t_fraction=0.5, guidance=DEFAULT_GUIDANCE, seed=0)  # the tab's start
INTERPOLATE_DEFAULTS = dict(mix_classes=False, seed_a=0, seed_b=1, n_frames=10, guidance=DEFAULT_GUIDANCE)


def example_sketch():
    """The drawing the tab opens with: a hand-drawn looking "2" (dark strokes on white, as a visitor draws)."""
    canvas = Image.new("RGB", (280, 280), "white")
    stroke = [(88, 92), (110, 62), (150, 52), (186, 72), (192, 110), (170, 150), (128, 190), (86, 228), (140, 224),
              (200, 226)]
    ImageDraw.Draw(canvas).line(stroke, fill="black", width=22, joint="curve")
    return canvas


def _model_28(model, sid):
    ddpm = registry().model(model, sid)
    if ddpm.sample_shape != (1, 28, 28):
        raise gr.Error(f"model {model!r} makes images of shape {ddpm.sample_shape}; this tab works on 28x28 "
                       "grey-scale models (mnist, fashion_mnist)")
    return ddpm


def sdedit_choices(model, t_start, request: gr.Request = None):
    """On a new model: the class picker (its classes, unconditional chosen: the strokes lead) and t_start kept
    below its T."""
    T = registry().model(model, session_id(request)).T if model else 1000
    classes = reverse_class_choices(model, request)
    return (gr.update(choices=classes["choices"], value=SDEDIT_DEFAULTS["class_name"]),
            gr.update(maximum=T - 1, value=min(int(t_start or 0), T - 1)))


def interpolate_class_choices(model, request: gr.Request = None):
    """Class pickers A and B for `model`: its class names, the first and the second chosen."""
    names = class_names(registry().model(model, session_id(request))) if model else []
    return (gr.update(choices=names, value=names[0] if names else None),
            gr.update(choices=names, value=names[1] if len(names) > 1 else None))


def _run_to_end(ddpm, x, stop, **kwargs):
    check = step_check(stop)
    for step in sample_steps(ddpm, x, **kwargs):
        check(step)
    return step.x_prev.clamp(-1, 1)


@shares_cores
@holds_session("sdedit")
def sdedit_run(model, class_name, image, t_start, sampler, steps, guidance, seed, request: gr.Request = None):
    """SDEdit, streamed: yields (your x_0, x_{t_start}, current x_t, predicted x0_hat, markdown, strip image).

    At the end the strip shows the result for several t_start (the same noise), from faithful to realistic.
    """
    sid = session_id(request)
    ddpm = _model_28(model, sid)
    x0 = to_unit(image_to_x0(image))                                                     # [1, 1, 28, 28]
    t_start = check_int("t_start", t_start, bounds=(0, ddpm.T - 1))
    steps = check_steps(sampler, steps)
    guidance = check_range("guidance scale", guidance, "guidance")
    seed = check_int("seed", seed)
    yield from sdedit_walk(ddpm, x0, class_name, t_start, sampler, steps, guidance, seed,
                           registry().session(sid).stops["sdedit"])


def sdedit_walk(ddpm, x0, class_name, t_start, sampler, steps, guidance, seed, stop):
    """The SDEdit run of checked settings from x0 [1, 1, 28, 28], streamed as `sdedit_run` yields it."""
    steps = None if steps is None else min(steps, t_start + 1)          # no more steps than are left
    y = class_labels(ddpm, class_name, 1)
    guidance = guidance if y is not None else 1.0
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    kw = dict(y=y, sampler=sampler, guidance_scale=guidance, generator=torch.Generator().manual_seed(seed + 1))
    x_start = sample_xt(x0, t_start, eps, ddpm.schedule.alpha_bar)                       # Eq. (4): noise to t_start
    mine = pictured(show(x0, 8), "your drawing as the 28 x 28 image x_0")
    noised = pictured(show(x_start.clamp(-1, 1), 8), f"your drawing noised to t_start = {t_start} with Eq. 4")
    last, step = 0.0, None
    for step in sample_steps(ddpm, x_start, steps=steps, t_start=t_start, **kw):
        final = step.i == step.n_steps - 1 or stop.is_set()
        if step.i == 0 or final or time.perf_counter() - last > STREAM_EVERY_S:
            last = time.perf_counter()
            yield (mine, noised, show(step.x_prev.clamp(-1, 1), 8), show(step.x0_hat, 8),
                   f"### step {step.i + 1} / {step.n_steps} &nbsp; t = {step.t} → "
                   f"{'the clean image' if step.t_prev < 0 else step.t_prev}", gr.update())
        if stop.is_set():
            break
    strip, note = gr.update(), f"stopped ({stop.reason}): no strip"
    if not stop.is_set():
        ts = [max(0, round(f * ddpm.T) - 1) for f in STRIP_FRACTIONS]
        results = [x0]
        all_T = sampler_row(sampler).all_steps
        strip_sampler, strip_steps = STRIP_RUN if all_T else (sampler, steps)
        strip_kw = dict(kw, sampler=strip_sampler)
        try:
            for ts_k in ts:
                start = sample_xt(x0, ts_k, eps, ddpm.schedule.alpha_bar)
                strip_kw["generator"] = torch.Generator().manual_seed(seed + 1)
                results.append(_run_to_end(ddpm, start, stop, steps=min(strip_steps, ts_k + 1), t_start=ts_k, **strip_kw))
            strip = pictured(labelled_strip(torch.cat(results), ["yours"] + [f"t={t}" for t in ts], scale=6),
                             "the drawing, then the result from the same noise for t_start = " + ", ".join(map(str, ts))
                             + ": from faithful to the strokes to realistic")
            note = ("The strip: your drawing, then the result from the same noise for growing t_start (left: faithful "
                    "to your strokes, right: realistic but your own no longer)"
                    + (f", each with {sampler_row(strip_sampler).title(strip_steps, ddpm.T)}." if all_T else "."))
        except Stopped as why:
            note = f"stopped ({why}) while drawing the strip: no strip"
    result = pictured(show(step.x_prev.clamp(-1, 1), 8), f"the result from t_start = {t_start}")
    yield (mine, noised, result, show(step.x0_hat, 8),
           f"### {'stopped' if stop.is_set() else 'done'}: t_start = {t_start}, {step.n_steps} steps\n\n{note}", strip)


def sdedit_opening(model, request: gr.Request = None):
    """What the SDEdit half opens on for `model`: the example sketch, its run at the tab's default settings and its
    strip, made once per model (openers.py)."""
    sid = session_id(request)
    if not model:
        return (gr.update(),) * 6
    ddpm = registry().model(model, sid)
    if ddpm.sample_shape != (1, 28, 28):
        return (*[gr.update()] * 4, f"*{model} makes images of shape {ddpm.sample_shape}; this tab works on 28x28 "
                                    "grey-scale models.*", gr.update())
    d, (sampler, steps) = SDEDIT_DEFAULTS, SDEDIT_OWN
    t_start = min(ddpm.T - 1, round(d["t_fraction"] * DEFAULT_T))

    def make():
        *shown, text, strip = deque(sdedit_walk(ddpm, to_unit(image_to_x0(example_sketch())), d["class_name"], t_start,
                                                sampler, steps, d["guidance"], d["seed"], JobStop()), maxlen=1)[0]
        return (*shown, text + "\n\n*The tab opens on this example sketch with its default settings; draw your own "
                               "(clear the example first) and press the button.*", strip)

    return openers.cached(openers.shared_key(model, sid, "sdedit", t_start, tuple(d.items())), make)


sdedit_stop = stopper("sdedit")
interpolate_stop = stopper("interpolate")


@shares_cores
@holds_session("interpolate")
def interpolate_run(model, class_a, class_b, mix_classes, sampler, steps, guidance, seed_a, seed_b, n_frames,
                    request: gr.Request = None):
    """Images from start noises on the great circle between two seeds: (strip image, GIF path, markdown).

    mix_classes: the class embedding moves from class_a to class_b as well (a mixture of two embeddings,
    something the model never saw in training); otherwise every image is of class_a.
    """
    sid = session_id(request)
    ddpm = _model_28(model, sid)
    row = sampler_row(sampler)
    if not row.deterministic(0):
        raise gr.Error(f"sampler {sampler!r}: interpolation needs a deterministic sampler (at eta = 0), one of "
                       f"{DETERMINISTIC}")
    steps = min(check_steps(sampler, steps), ddpm.T)
    n = check_int("frames", n_frames, "frames")
    guidance = check_range("guidance scale", guidance, "guidance")
    seed_a, seed_b = check_int("seed A", seed_a, "seed"), check_int("seed B", seed_b, "seed")
    session = registry().session(sid)
    try:
        return interpolation(ddpm, class_a, class_b, mix_classes, sampler, steps, guidance, seed_a, seed_b, n,
                             session.stops["interpolate"], session.file(f"interp_{int(time.time() * 1000)}.gif"))
    except Stopped as why:
        return gr.update(), gr.update(), f"**Stopped** before the interpolation was done: {why}."


def interpolation(ddpm, class_a, class_b, mix_classes, sampler, steps, guidance, seed_a, seed_b, n, stop, gif_path):
    """The interpolation of checked settings, as `interpolate_run` returns it; raises Stopped once `stop` is set."""
    z_a = torch.randn(ddpm.sample_shape, generator=torch.Generator().manual_seed(seed_a))
    z_b = torch.randn(ddpm.sample_shape, generator=torch.Generator().manual_seed(seed_b))
    w = torch.linspace(0, 1, n)
    x = slerp(z_a, z_b, w)                                                               # [n, 1, 28, 28]
    y, label = class_labels(ddpm, class_a, n), class_a
    if mix_classes:
        y_b = class_labels(ddpm, class_b, 1)
        if y is None or y_b is None:
            raise gr.Error("mixing classes needs two classes, A and B (not 'unconditional')")
        a, b = (F.one_hot(labels, ddpm.num_classes + 1).float() for labels in (y[:1], y_b))
        y = (1 - w)[:, None] * a + w[:, None] * b                                      # [n, K + 1] class weights
        label = f"{class_a} → {class_b} (mixed class embeddings)"
    images = _run_to_end(ddpm, x, stop, y=y, sampler=sampler, steps=steps, guidance_scale=guidance if y is not None else 1.0)
    strip = labelled_strip(images, [f"{v:.2f}" for v in w.tolist()], scale=5)
    gif = strip_gif(to_uint8(images), gif_path)
    what = f"{n} images from seed {seed_a} to seed {seed_b} along the great circle (slerp), class: {label or 'unconditional'}"
    return (pictured(strip, what), gif,
            f"**{what}**, {sampler_row(sampler).short} with {steps} steps. Under each image: the weight w of B "
            "(of seed B, and of class B when the classes are mixed).")


def interpolate_opening(model, request: gr.Request = None):
    """What the interpolation half opens on for `model`: the walk of its default settings (the first two classes),
    made once per model (openers.py): (strip, GIF path, markdown)."""
    sid = session_id(request)
    if not model:
        return gr.update(), gr.update(), gr.update()
    ddpm = registry().model(model, sid)
    names = class_names(ddpm)
    if ddpm.sample_shape != (1, 28, 28):
        return gr.update(), gr.update(), gr.update()
    d, (sampler, steps) = INTERPOLATE_DEFAULTS, INTERPOLATE_OWN
    class_a = names[0] if names else UNCONDITIONAL

    def make():
        strip, gif, text = interpolation(ddpm, class_a, None, d["mix_classes"], sampler, min(steps, ddpm.T), d["guidance"],
                                         d["seed_a"], d["seed_b"], d["n_frames"], JobStop(),
                                         openers.path(f"interp_{abs(hash((model, sid, time.time()))):x}.gif"))
        return strip, gif, text + " *The tab opens on this walk; press Interpolate to make your own.*"

    return openers.cached(openers.shared_key(model, sid, "interpolate", class_a, tuple(d.items())), make)


def build():
    """The tab in the current Blocks, its events wired; returns its Parts: `sd` (SDEdit) and `ip` (interpolation),
    each with its model picker `model`."""
    ui, sd, ip = Parts(), Parts(), Parts()
    ui.sd, ui.ip = sd, ip
    with gr.Tab("5. Sketch & interpolate", id="edit"):
        intro(LEADS["edit"], EDIT)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                with go_row():
                    sd.go = go_button("edit", "▶ Denoise my drawing")
                    sd.stop = gr.Button("Stop", variant="stop", min_width=80)
                sd.model = model_input()
                sd.class_name = gr.Dropdown(label="class", choices=[UNCONDITIONAL], value=UNCONDITIONAL,
                                            allow_custom_value=True)
                sd.image = CheckedSketchpad(value=example_sketch(), label="draw (or upload / paste) an image", type="pil",
                                            height=280, elem_id="sd_sketch", canvas_size=(280, 280),
                                            sources=["upload", "clipboard"])
                sd.t_start = gr.Slider(0, DEFAULT_T - 1, value=round(SDEDIT_DEFAULTS["t_fraction"] * DEFAULT_T), step=1,
                                       label="strength t_start (0 = keep my image, T-1 = ignore it)", elem_id="sd_t")
                with gr.Accordion("sampler, guidance, seed", open=False):
                    sd.sampler, sd.steps = sampler_inputs("sd", SDEDIT_OWN, from_table=False)
                    sd.guidance = guidance_input()
                    sd.seed = seed_input("noise seed")
            with gr.Column(scale=3):
                sd.strip = image("the same noise, growing t_start: faithful → realistic", main=True, height=260,
                                 elem_id="edit-main")
                with gr.Row():
                    sd.mine = image("your x_0", height=200)
                    sd.noised = image("x_{t_start}: noised with Eq. 4", height=200)
                    sd.xt = image("x_t now", height=200, elem_id="sd_xt")
                    sd.x0 = image("predicted x̂_0", height=200)
                sd.text = gr.Markdown("*Opening the example sketch ...*")
        gr.Markdown("#### Interpolation between two seeds")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                ip.go = gr.Button("▶ Interpolate", variant="primary", elem_id="ip_go")
                ip.model = model_input()
                with gr.Row():
                    ip.class_a = gr.Dropdown(label="class A", choices=[], allow_custom_value=True)
                    ip.class_b = gr.Dropdown(label="class B", choices=[], allow_custom_value=True)
                ip.mix_classes = gr.Checkbox(value=INTERPOLATE_DEFAULTS["mix_classes"],
                                             label="also mix the class embeddings from A to B")
                with gr.Row():
                    ip.seed_a = seed_input("seed A", value=INTERPOLATE_DEFAULTS["seed_a"])
                    ip.seed_b = seed_input("seed B", value=INTERPOLATE_DEFAULTS["seed_b"])
                ip.n_frames = gr.Slider(*LIMITS["frames"], value=INTERPOLATE_DEFAULTS["n_frames"], step=1, label="images")
                ip.sampler = gr.Radio([(SAMPLERS[name].label, name) for name in DETERMINISTIC], value=INTERPOLATE_OWN[0],
                                      label="deterministic sampler")
                ip.steps = gr.Slider(*LIMITS["steps"], value=INTERPOLATE_OWN[1], step=1, label="steps", elem_id="ip_steps")
                ip.guidance = guidance_input()
            with gr.Column(scale=3):
                ip.strip = image("from seed A (left) to seed B (right)", elem_id="ip_strip")
                ip.text = gr.Markdown()
                ip.gif = gr.File(label="the walk as an animated GIF")
        code(*SOURCES["edit"])

    sd_shown = [sd.mine, sd.noised, sd.xt, sd.x0, sd.text, sd.strip]
    sd.run = sd.go.click(sdedit_run, inputs_kwargs=by_name(sdedit_run, sd.model, sd.class_name, sd.image, sd.t_start,
                                                           sd.sampler, sd.steps, sd.guidance, sd.seed),
                         outputs=sd_shown, api_name="sdedit", show_progress="minimal", **sampling_job())
    # a new model stops the run of the old one and shows the new model's opening pictures in their place
    sd.model.change(sdedit_stop, api_name=False, queue=False, cancels=[sd.run]).then(
        sdedit_opening, inputs_kwargs=by_name(sdedit_opening, sd.model), outputs=sd_shown, api_name="sdedit_opening",
        show_progress="minimal", **openers_job())
    sd.model.change(sdedit_choices, inputs_kwargs=by_name(sdedit_choices, sd.model, sd.t_start),
                    outputs=[sd.class_name, sd.t_start], api_name=False)
    sd.stop.click(sdedit_stop, api_name="sdedit_stop", queue=False)
    ip_shown = [ip.strip, ip.gif, ip.text]
    ip.run = ip.go.click(interpolate_run, inputs_kwargs=by_name(interpolate_run, ip.model, ip.class_a, ip.class_b,
                                                                ip.mix_classes, ip.sampler, ip.steps, ip.guidance,
                                                                ip.seed_a, ip.seed_b, ip.n_frames),
                         outputs=ip_shown, api_name="interpolate", **sampling_job())
    ip.model.change(interpolate_stop, api_name=False, queue=False, cancels=[ip.run]).then(
        interpolate_opening, inputs_kwargs=by_name(interpolate_opening, ip.model), outputs=ip_shown,
        api_name="interpolate_opening", **openers_job())
    ip.model.change(interpolate_class_choices, inputs_kwargs=by_name(interpolate_class_choices, ip.model),
                    outputs=[ip.class_a, ip.class_b], api_name=False)
    return ui
