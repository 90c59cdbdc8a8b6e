"""Tab 5: the reverse process on structure that is already there.

Sketch to image (SDEdit, Meng et al. 2022): noise your drawing to step t_start with `sample_xt` (Eq. 4) and run
the reverse process from there (`sample_steps(t_start=...)`): small t_start keeps your strokes, large t_start
keeps only their rough layout. Interpolation: the same deterministic sampler from start noises on the great
circle between two seeds (`slerp`), and optionally a mixture of two class embeddings (labelled as such).
`build()` lays the tab out and wires it.
"""
import time

import gradio as gr
import torch
import torch.nn.functional as F

from ..data import to_uint8
from ..diffusion import sample_xt
from ..sampling import SAMPLERS, sample_steps, slerp
from .cores import shares_cores
from .explain import EDIT, LATEX, SOURCES
from .images import CheckedSketchpad, image_to_x0, labelled_strip, show, strip_gif, to_unit
from .inputs import LIMITS, UNCONDITIONAL, check_int, check_range, check_steps, class_labels, class_names, sampler_row
from .jobs import Stopped, holds_session, step_check, stopper
from .registry import registry, session_id
from .reverse import reverse_class_choices
from .widgets import (DEFAULT_T, Parts, by_name, code, guidance_input, image, model_input, sampler_inputs, sampling_job,
                      seed_input)

SDEDIT_OWN = ("ddim", 20)     # SDEdit's (sampler, steps): the quality-per-cost tables measure sampling from pure noise
INTERPOLATE_OWN = ("dpmpp_2m", 10)            # interpolation's (sampler, steps) to start with
# the strip's (sampler, steps) after a run of all T steps: five more such runs would take five times as long
STRIP_RUN = ("ddim", 20)
STRIP_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)     # t_start / T of the SDEdit strip
STREAM_EVERY_S = 0.25
DETERMINISTIC = [row.name for row in SAMPLERS.values() if row.deterministic(0)]    # the samplers interpolation can use


def _model_28(model, sid):
    ddpm = registry().model(model, sid)
    if ddpm.sample_shape != (1, 28, 28):
        raise gr.Error(f"model {model!r} makes images of shape {ddpm.sample_shape}; this tab works on 28x28 "
                       "grey-scale models (mnist, fashion_mnist)")
    return ddpm


def sdedit_choices(model, t_start, request: gr.Request = None):
    """On a new model: the class picker (as the reverse tab's) and t_start kept below its T."""
    T = registry().model(model, session_id(request)).T if model else 1000
    return reverse_class_choices(model, request), gr.update(maximum=T - 1, value=min(int(t_start or 0), T - 1))


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
    steps = None if steps is None else min(steps, t_start + 1)          # no more steps than are left
    guidance = check_range("guidance scale", guidance, "guidance")
    seed = check_int("seed", seed)
    y = class_labels(ddpm, class_name, 1)
    guidance = guidance if y is not None else 1.0
    session = registry().session(sid)
    stop = session.stops["sdedit"]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    kw = dict(y=y, sampler=sampler, guidance_scale=guidance, generator=torch.Generator().manual_seed(seed + 1))
    x_start = sample_xt(x0, t_start, eps, ddpm.schedule.alpha_bar)                       # Eq. (4): noise to t_start
    mine, noised = show(x0, 8), show(x_start.clamp(-1, 1), 8)
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
            strip = labelled_strip(torch.cat(results), ["yours"] + [f"t={t}" for t in ts], scale=6)
            note = ("The strip: your drawing, then the result from the same noise for growing t_start (left: faithful "
                    "to your strokes, right: realistic but your own no longer)"
                    + (f", each with {sampler_row(strip_sampler).title(strip_steps, ddpm.T)}." if all_T else "."))
        except Stopped as why:
            note = f"stopped ({why}) while drawing the strip: no strip"
    yield (mine, noised, show(step.x_prev.clamp(-1, 1), 8), show(step.x0_hat, 8),
           f"### {'stopped' if stop.is_set() else 'done'}: t_start = {t_start}, {step.n_steps} steps\n\n{note}", strip)


sdedit_stop = stopper("sdedit")


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
    try:
        images = _run_to_end(ddpm, x, registry().session(sid).stops["interpolate"], y=y, sampler=sampler, steps=steps,
                             guidance_scale=guidance if y is not None else 1.0)
    except Stopped as why:
        raise gr.Error(f"the interpolation was stopped before it was done: {why}") from None
    strip = labelled_strip(images, [f"{v:.2f}" for v in w.tolist()], scale=5)
    gif = strip_gif(to_uint8(images), registry().session(sid).file(f"interp_{int(time.time() * 1000)}.gif"))
    return (strip, gif, f"**{n} images** from seed {seed_a} to seed {seed_b} along the great circle (slerp), "
                        f"{row.short} with {steps} steps, class: {label or 'unconditional'}. Under each image: the weight w of B "
                        "(of seed B, and of class B when the classes are mixed).")


def build():
    """The tab in the current Blocks, its events wired; returns its Parts: `sd` (SDEdit) and `ip` (interpolation),
    each with its model picker `model`."""
    ui, sd, ip = Parts(), Parts(), Parts()
    ui.sd, ui.ip = sd, ip
    with gr.Tab("5. Sketch to image & interpolation", id="edit"):
        gr.Markdown(EDIT, latex_delimiters=LATEX)
        gr.Markdown("#### Sketch to image (SDEdit)")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                sd.model = model_input()
                sd.class_name = gr.Dropdown(label="class", choices=[UNCONDITIONAL], value=UNCONDITIONAL,
                                            allow_custom_value=True)
                sd.image = CheckedSketchpad(label="draw (or upload / paste) an image", type="pil", height=280,
                                            elem_id="sd_sketch", canvas_size=(280, 280), sources=["upload", "clipboard"])
                sd.t_start = gr.Slider(0, DEFAULT_T - 1, value=500, step=1,
                                       label="strength t_start (0 = keep my image, T-1 = ignore it)", elem_id="sd_t")
                sd.sampler, sd.steps = sampler_inputs("sd", SDEDIT_OWN, from_table=False)
                sd.guidance = guidance_input()
                sd.seed = seed_input("noise seed")
                with gr.Row():
                    sd.go = gr.Button("Denoise my image", variant="primary", elem_id="sd_go")
                    sd.stop = gr.Button("Stop", variant="stop")
            with gr.Column(scale=3):
                sd.text = gr.Markdown("*Draw, then press the button.*")
                with gr.Row():
                    sd.mine = image("your x_0", height=230)
                    sd.noised = image("x_{t_start}: noised with Eq. 4", height=230)
                    sd.xt = image("x_t now", height=230, elem_id="sd_xt")
                    sd.x0 = image("predicted x̂_0", height=230)
                sd.strip = image("the same noise, growing t_start: faithful → realistic", elem_id="sd_strip")
        gr.Markdown("#### Interpolation between two seeds")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                ip.model = model_input()
                with gr.Row():
                    ip.class_a = gr.Dropdown(label="class A", choices=[], allow_custom_value=True)
                    ip.class_b = gr.Dropdown(label="class B", choices=[], allow_custom_value=True)
                ip.mix_classes = gr.Checkbox(value=False, label="also mix the class embeddings from A to B")
                with gr.Row():
                    ip.seed_a = seed_input("seed A")
                    ip.seed_b = seed_input("seed B", value=1)
                ip.n_frames = gr.Slider(*LIMITS["frames"], value=10, step=1, label="images")
                ip.sampler = gr.Radio([(SAMPLERS[name].label, name) for name in DETERMINISTIC], value=INTERPOLATE_OWN[0],
                                      label="deterministic sampler")
                ip.steps = gr.Slider(*LIMITS["steps"], value=INTERPOLATE_OWN[1], step=1, label="steps", elem_id="ip_steps")
                ip.guidance = guidance_input()
                ip.go = gr.Button("Interpolate", variant="primary", elem_id="ip_go")
            with gr.Column(scale=3):
                ip.strip = image("from seed A (left) to seed B (right)", elem_id="ip_strip")
                ip.text = gr.Markdown()
                ip.gif = gr.File(label="the walk as an animated GIF")
        code(*SOURCES["edit"])

    sd.model.change(sdedit_choices, inputs_kwargs=by_name(sdedit_choices, sd.model, sd.t_start),
                    outputs=[sd.class_name, sd.t_start], api_name=False)
    sd.go.click(sdedit_run, inputs_kwargs=by_name(sdedit_run, sd.model, sd.class_name, sd.image, sd.t_start, sd.sampler,
                                                  sd.steps, sd.guidance, sd.seed),
                outputs=[sd.mine, sd.noised, sd.xt, sd.x0, sd.text, sd.strip], api_name="sdedit", show_progress="minimal",
                **sampling_job())
    sd.stop.click(sdedit_stop, api_name="sdedit_stop", queue=False)
    ip.model.change(interpolate_class_choices, inputs_kwargs=by_name(interpolate_class_choices, ip.model),
                    outputs=[ip.class_a, ip.class_b], api_name=False)
    ip.go.click(interpolate_run, inputs_kwargs=by_name(interpolate_run, ip.model, ip.class_a, ip.class_b, ip.mix_classes,
                                                       ip.sampler, ip.steps, ip.guidance, ip.seed_a, ip.seed_b, ip.n_frames),
                outputs=[ip.strip, ip.gif, ip.text], api_name="interpolate", **sampling_job())
    return ui
