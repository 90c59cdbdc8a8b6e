"""Tab 1: the forward process q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I), Eq. (4).

Every picture comes from `ddpm.sample_xt` on the chosen x_0 with one fixed eps, so moving t shows only
what the schedule does. `build()` lays the tab out and wires it.
"""
import functools
import time

import gradio as gr
import numpy as np
import torch
from PIL import Image

from ..data import to_uint8
from ..diffusion import sample_xt
from ..plots import upscale
from ..schedule import SCHEDULES, NoiseSchedule
from .explain import FORWARD, LATEX, LEADS, SOURCES
from .figures import histogram_figure, schedule_figure
from .images import CheckedImage, CheckedSketchpad, default_x0, image_to_x0, labelled_strip, to_unit
from .inputs import LIMITS, check_int
from .registry import registry
from .widgets import DEFAULT_T, Parts, by_name, code, go_button, go_row, image, intro, pictured, seed_input

STRIP_POINTS = 10          # images in the forward-process strip (Figure 2 style)
PLAY_FRAMES, PLAY_S = 40, 4.0      # Play: t from 0 to T-1 in 40 pictures over about 4 s


@functools.lru_cache(maxsize=32)
def schedule_of(name, T):
    if name not in SCHEDULES:
        raise gr.Error(f"schedule {name!r} is unknown; choose one of {list(SCHEDULES)}")
    return NoiseSchedule(name, T)


def forward_gallery(dataset):
    """One example per class of a bundled dataset, for the example picker: [(image, '#index: class name')]."""
    if not dataset:
        return []
    reg = registry()
    images, labels = reg.examples(dataset)
    names = (reg.config(dataset).get("class_names") if dataset in reg.bundled() else None) or []
    picks = [int(torch.nonzero(labels == c)[0]) for c in labels.unique().tolist()]
    return [(upscale(Image.fromarray(images[i].numpy()), 4),
             f"#{i}: {names[labels[i]] if labels[i] < len(names) else labels[i].item()}") for i in picks]


def gallery_index(dataset, evt: gr.SelectData):
    """The example index behind a click on the gallery (its caption starts with '#index')."""
    caption = (evt.value or {}).get("caption", "") if isinstance(evt.value, dict) else ""
    if caption.startswith("#"):
        return int(caption[1:].split(":")[0])
    return evt.index


def forward_example(dataset, index):
    """Pick example `index` of a bundled dataset as x_0: returns (x0 uint8 [28, 28], preview)."""
    if not dataset:                        # no bundled examples: the drawn ring of default_x0
        return None, upscale(Image.fromarray(default_x0()), 8)
    images, _ = registry().examples(dataset)
    index = int(index or 0)
    if not 0 <= index < len(images):
        raise gr.Error(f"example index {index} is outside [0, {len(images) - 1}] for {dataset!r}")
    x0 = images[index].numpy()
    return x0, upscale(Image.fromarray(x0), 8)


def forward_upload(image):
    """Use an uploaded or drawn image as x_0: returns (x0 uint8 [28, 28], preview)."""
    x0 = image_to_x0(image)
    return x0, upscale(Image.fromarray(x0), 8)


def forward_view(x0, schedule, T, t, seed):
    """Everything the forward tab shows for one (x_0, schedule, T, t, seed).

    Returns (x_t image, eps image, formula markdown, strip image, schedule plot, histogram, warning markdown).
    """
    T = check_int("T", T)
    t = check_int("t", t, bounds=(0, T - 1))                                      # t in {0, ..., T-1}
    seed = check_int("seed", seed)
    s = schedule_of(schedule, T)
    x0 = to_unit(default_x0() if x0 is None else x0)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    x_t = sample_xt(x0, t, eps, s.alpha_bar)                                               # Eq. (4)
    a = float(s.alpha_bar[t])
    formula = (f"$$x_t = \\sqrt{{\\bar\\alpha_t}}\\,x_0 + \\sqrt{{1-\\bar\\alpha_t}}\\,\\epsilon"
               f"\\qquad t = {t},\\ \\bar\\alpha_t = {a:.4f}$$\n"
               f"$$x_{{{t}}} = {a ** 0.5:.3f}\\cdot x_0 + {(1 - a) ** 0.5:.3f}\\cdot\\epsilon$$")
    ts = np.linspace(0, T - 1, STRIP_POINTS).round().astype(int)
    strip = sample_xt(x0.expand(len(ts), -1, -1, -1), torch.as_tensor(ts), eps.expand(len(ts), -1, -1, -1), s.alpha_bar)
    x_T = sample_xt(x0, T - 1, eps, s.alpha_bar)
    signal = float(s.alpha_bar[T - 1]) ** 0.5
    warning = ""
    if signal > 0.05:
        warning = (f"⚠️ **x_T is far from pure noise:** at t = T-1 = {T - 1} the image still keeps "
                   f"sqrt(alpha_bar) = {signal:.3f} of x_0 (want < 0.05). T = {T} or the betas are too small "
                   f"for the {schedule} schedule, so sampling from N(0, I) would not match q(x_T).")
    kept = f"{a ** 0.5:.2f} of x_0 and {(1 - a) ** 0.5:.2f} of the noise"
    return (pictured(upscale(Image.fromarray(to_uint8(x_t)[0, :, :, 0]), 10),
                     f"x_t at t = {t} of T = {T}, {schedule} schedule: {kept}"),
            upscale(Image.fromarray(to_uint8(eps)[0, :, :, 0]), 10),
            formula, labelled_strip(strip, [f"t={t}" for t in ts]), schedule_figure(T, t, schedule),
            histogram_figure(x_t.flatten().numpy(), x_T.flatten().numpy(), t, T), warning)


def forward_play(x0, schedule, T, seed):
    """Play the forward process: t from 0 to T-1 in PLAY_FRAMES pictures over about PLAY_S seconds; yields the t
    slider's value and everything forward_view shows."""
    T = check_int("T", T)
    for t in np.linspace(0, T - 1, PLAY_FRAMES).round().astype(int).tolist():
        start = time.perf_counter()
        view = forward_view(x0, schedule, T, t, seed)
        time.sleep(max(0.0, PLAY_S / PLAY_FRAMES - (time.perf_counter() - start)))
        yield (t, *view)


def forward_T_changed(T, t):
    """Keep the t slider inside [0, T-1] when T changes."""
    T = check_int("T", T)
    return gr.update(maximum=T - 1, value=min(int(t), T - 1))


def build():
    """The tab in the current Blocks, its events wired; returns its Parts (`dataset` and `view`, the event that
    redraws everything, for the page's load event)."""
    ui = Parts()
    with gr.Tab("1. Forward", id="forward"):
        intro(LEADS["forward"], FORWARD)
        ui.x0 = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                with go_row():
                    ui.play = go_button("forward", "▶ Play: t from 0 to T-1")
                ui.t = gr.Slider(0, DEFAULT_T - 1, value=250, step=1, label="t (move me)", elem_id="fwd_t")
                ui.schedule = gr.Radio(list(SCHEDULES), value=SCHEDULES[0], label="schedule")
                with gr.Row():
                    ui.T = gr.Slider(*LIMITS["T"], value=DEFAULT_T, step=1, label="T (number of steps)", min_width=160)
                    ui.seed = seed_input("noise seed")
            with gr.Column(scale=3):
                with gr.Row():
                    ui.xt_view = image("x_t", main=True, height=300, elem_id="forward-main")
                    ui.x0_view = image("x_0 (the image we noise)", height=300)
                    ui.eps_view = image("noise ε (the same ε for every t)", height=300)
                ui.formula = gr.Markdown(latex_delimiters=LATEX, elem_classes="formula")
                ui.warning = gr.Markdown()
        with gr.Row():
            ui.dataset = gr.Dropdown(label="x_0 from a dataset (bundled examples)", choices=[], allow_custom_value=True,
                                     scale=1, min_width=200)
            ui.gallery = gr.Gallery(label="click an example", columns=10, height=130, object_fit="contain",
                                    elem_classes="pixel", allow_preview=False, scale=4)
            ui.index = gr.Number(value=0, precision=0, label="example index", minimum=0, scale=1, min_width=120)
        with gr.Accordion("... or upload / draw your own x_0", open=False):
            with gr.Row():
                ui.image = CheckedImage(label="upload (png/jpg)", type="pil", sources=["upload"], height=220)
                ui.sketch = CheckedSketchpad(label="draw", type="pil", height=260, canvas_size=(280, 280))
            ui.use_sketch = gr.Button("use the drawing as x_0")
        gr.Markdown("#### x_t at evenly spaced t, all with the same ε (as in Figure 2)")
        ui.strip = image("x_t at evenly spaced t", show_label=False)
        gr.Markdown("#### How fast each schedule destroys the signal (current t marked) &nbsp;·&nbsp; "
                    "pixels of x_t against N(0, 1)")
        with gr.Row():
            ui.sched_plot = image("schedules", scale=3, show_label=False)
            ui.hist = image("histogram of x_t's pixels vs N(0, 1)", scale=2, show_label=False)
        code(*SOURCES["forward"])

    shown = [ui.xt_view, ui.eps_view, ui.formula, ui.strip, ui.sched_plot, ui.hist, ui.warning]
    ui.view = dict(fn=forward_view, inputs_kwargs=by_name(forward_view, ui.x0, ui.schedule, ui.T, ui.t, ui.seed),
                   outputs=shown, concurrency_limit=4, concurrency_id="forward", show_progress="hidden")
    pick = dict(fn=forward_example, inputs_kwargs=by_name(forward_example, ui.dataset, ui.index),
                outputs=[ui.x0, ui.x0_view])
    ui.dataset.change(forward_gallery, inputs_kwargs=by_name(forward_gallery, ui.dataset), outputs=[ui.gallery],
                      api_name="forward_gallery").then(**pick, api_name="forward_example").then(**ui.view, api_name=False)
    ui.gallery.select(gallery_index, inputs_kwargs=by_name(gallery_index, ui.dataset), outputs=[ui.index],
                      api_name=False)
    ui.index.change(**pick, api_name=False).then(**ui.view, api_name=False)
    ui.image.upload(forward_upload, inputs_kwargs=by_name(forward_upload, ui.image), outputs=[ui.x0, ui.x0_view],
                    api_name="forward_upload").then(**ui.view, api_name=False)
    ui.use_sketch.click(forward_upload, inputs_kwargs=by_name(forward_upload, image=ui.sketch),
                        outputs=[ui.x0, ui.x0_view], api_name=False).then(**ui.view, api_name=False)
    ui.T.change(forward_T_changed, inputs_kwargs=by_name(forward_T_changed, ui.T, ui.t), outputs=[ui.t],
                api_name=False).then(**ui.view, api_name=False)
    # input, not change: the slider moved by Play does not redraw a second time
    ui.t.input(**ui.view, api_name="forward")
    ui.play.click(forward_play, inputs_kwargs=by_name(forward_play, ui.x0, ui.schedule, ui.T, ui.seed),
                  outputs=[ui.t, *shown], api_name="forward_play", concurrency_limit=4, concurrency_id="forward",
                  show_progress="hidden")
    for control in (ui.schedule, ui.seed):
        control.change(**ui.view, api_name=False)
    return ui
