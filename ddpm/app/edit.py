"""Tab 5: the reverse process on structure that is already there.

Sketch to image (SDEdit, Meng et al. 2022): noise your drawing to step t_start with `sample_xt` (Eq. 4) and run
the reverse process from there (`sample_steps(t_start=...)`): small t_start keeps your strokes, large t_start
keeps only their rough layout. Interpolation: the same deterministic sampler from start noises on the great
circle between two seeds (`slerp`), and optionally a mixture of two class embeddings (labelled as such).
"""
import time

import gradio as gr
import torch
import torch.nn.functional as F

from ..data import to_uint8
from ..diffusion import sample_xt
from ..sampling import sample_steps, slerp
from .cores import shares_cores
from .images import image_to_x0, labelled_strip, show, strip_gif, to_unit
from .inputs import check_int, check_range, check_steps, class_labels, class_names
from .jobs import Stopped, holds_session, step_check, stopper
from .registry import registry, session_id
from .reverse import reverse_class_choices

STRIP_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)     # t_start / T of the SDEdit strip
STREAM_EVERY_S = 0.25


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
        check()
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
        # the DDPM sampler's 5 full runs would take as long as the run itself five times: the strip takes DDIM-20
        strip_kw = dict(kw, sampler="ddim") if sampler == "ddpm" else kw
        strip_steps = 20 if sampler == "ddpm" else steps
        try:
            for ts_k in ts:
                start = sample_xt(x0, ts_k, eps, ddpm.schedule.alpha_bar)
                strip_kw["generator"] = torch.Generator().manual_seed(seed + 1)
                results.append(_run_to_end(ddpm, start, stop, steps=min(strip_steps, ts_k + 1), t_start=ts_k, **strip_kw))
            strip = labelled_strip(torch.cat(results), ["yours"] + [f"t={t}" for t in ts], scale=6)
            note = ("The strip: your drawing, then the result from the same noise for growing t_start (left: faithful "
                    "to your strokes, right: realistic but your own no longer)"
                    + (", each with DDIM-20." if sampler == "ddpm" else "."))
        except Stopped as why:
            note = f"stopped ({why}) while drawing the strip: no strip"
    yield (mine, noised, show(step.x_prev.clamp(-1, 1), 8), show(step.x0_hat, 8),
           f"### {'stopped' if stop.is_set() else 'done'}: t_start = {t_start}, {step.n_steps} steps\n\n{note}", strip)


sdedit_stop = stopper("sdedit")


@shares_cores
@holds_session("interpolate")
def interpolate_run(model, class_a, class_b, seed_a, seed_b, n_frames, sampler, steps, guidance, mix_classes,
                    request: gr.Request = None):
    """Images from start noises on the great circle between two seeds: (strip image, GIF path, markdown).

    mix_classes: the class embedding moves from class_a to class_b as well (a mixture of two embeddings,
    something the model never saw in training); otherwise every image is of class_a.
    """
    sid = session_id(request)
    ddpm = _model_28(model, sid)
    if sampler not in ("ddim", "dpmpp_2m"):
        raise gr.Error(f"sampler {sampler!r}: interpolation needs a deterministic sampler, 'ddim' (eta = 0) or 'dpmpp_2m'")
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
                        f"{sampler} with {steps} steps, class: {label or 'unconditional'}. Under each image: the weight w of B "
                        "(of seed B, and of class B when the classes are mixed).")
