"""Tab 1: the forward process q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I), Eq. (4).

Every picture comes from `ddpm.sample_xt` on the chosen x_0 with one fixed eps, so moving t shows only
what the schedule does.
"""
import functools

import gradio as gr
import numpy as np
import torch
from PIL import Image

from ..data import to_uint8
from ..diffusion import sample_xt
from ..plots import upscale
from ..schedule import SCHEDULES, NoiseSchedule
from .figures import histogram_figure, schedule_figure
from .images import default_x0, image_to_x0, labelled_strip, to_unit
from .inputs import check_int
from .registry import registry

STRIP_POINTS = 10          # images in the forward-process strip (Figure 2 style)


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
    return (upscale(Image.fromarray(to_uint8(x_t)[0, :, :, 0]), 10),
            upscale(Image.fromarray(to_uint8(eps)[0, :, :, 0]), 10),
            formula, labelled_strip(strip, [f"t={t}" for t in ts]), schedule_figure(T, t, schedule),
            histogram_figure(x_t.flatten().numpy(), x_T.flatten().numpy(), t, T), warning)


def forward_T_changed(T, t):
    """Keep the t slider inside [0, T-1] when T changes."""
    T = check_int("T", T)
    return gr.update(maximum=T - 1, value=min(int(t), T - 1))
