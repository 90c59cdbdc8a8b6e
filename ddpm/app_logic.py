"""Handlers of the teaching app (app.py wires them; tests call them directly).

The model registry: bundled models are sub-folders of one models folder (DDPM_APP_MODELS, default
./pretrained), each with model.safetensors + config.json and optionally examples.safetensors
("images" uint8 [N, 28, 28], "labels" int64 [N]); fine-tuned models live in a per-session registry
keyed by Gradio's session hash, so one visitor never sees or changes another visitor's models.

This file: the registry, input checks, image helpers and tab 1 (the forward process q(x_t | x_0), Eq. 4).
Tabs 2 and 3 (reverse process, class grids) are in ddpm/app_sampling.py, tab 4 in ddpm/app_finetune.py,
figures in ddpm/app_figures.py and the explanations in ddpm/app_explain.py.
"""
import functools
import json
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import gradio as gr
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps
from .checkpoint import CheckpointError
from .judge import load_judge

from .app_figures import histogram_figure, schedule_figure
from .diffusion import sample_xt
from .plots import image_grid, to_uint8, upscale
from .pretrained import EXAMPLES, PRETRAINED_DIR, load_examples
from .schedule import SCHEDULES, NoiseSchedule

# (low, high) of every numeric input; the UI sliders use the same bounds
LIMITS = {
    "T": (10, 2000), "batch": (1, 16), "ddim_steps": (1, 1000), "eta": (0.0, 1.0), "guidance": (0.0, 10.0),
    "seed": (0, 2**31 - 1), "per_class": (1, 10), "n_classes": (1, 20),
    "train_seconds": (5, int(os.environ.get("DDPM_APP_MAX_TRAIN_SECONDS", 300))), "train_steps": (1, 5000),
    "refresh_every": (5, 1000), "uploads": (1, 64), "upload_mb": (0, 5),
}
STRIP_POINTS = 10          # images in the forward-process strip (Figure 2 style)
UNCONDITIONAL = "unconditional"


def check_range(name, value, key=None):
    """Raise gr.Error naming the value and its allowed range unless low <= value <= high."""
    lo, hi = LIMITS[key or name]
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise gr.Error(f"{name} = {value!r} is outside the allowed range [{lo}, {hi}]")
    return value


def check_int(name, value, key=None):
    check_range(name, value, key)
    if float(value) != int(value):
        raise gr.Error(f"{name} = {value!r} must be a whole number")
    return int(value)


def session_id(request):
    """Gradio's per-browser session hash; tests pass any object with `session_hash`, or None."""
    return getattr(request, "session_hash", None) or "local"


# ---------------------------------------------------------------- the model registry

@dataclass
class Session:
    models: "OrderedDict[str, object]" = field(default_factory=OrderedDict)   # fine-tuned DDPMs, by name
    bases: dict = field(default_factory=dict)       # fine-tuned name -> bundled folder its examples come from
    stops: dict = field(default_factory=dict)       # "reverse" / "finetune" -> threading.Event
    frames: list = field(default_factory=list)      # the last reverse run: (x_t uint8, x0_hat uint8, caption)
    drawings: list = field(default_factory=list)    # sketches collected for fine-tuning, uint8 [28, 28]
    n_finetuned: int = 0
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="ddpm_app_"))


class Registry:
    """Bundled models, their examples and judges (loaded lazily, cached), and per-session models."""

    MAX_SESSIONS, MAX_SESSION_MODELS = 64, 3

    def __init__(self, models_dir, use_judges=True):
        self.models_dir, self.use_judges = models_dir, use_judges
        self._models, self._examples, self._judges = {}, {}, {}
        self._sessions = OrderedDict()
        self._lock = threading.Lock()

    def bundled(self):
        if not os.path.isdir(self.models_dir):
            return []
        return sorted((d for d in os.listdir(self.models_dir)
                       if os.path.isfile(os.path.join(self.models_dir, d, "config.json"))),
                      key=lambda d: (d != "mnist", d))          # MNIST first: the default of every tab

    def datasets(self):
        """Bundled folders that hold examples.safetensors."""
        if not os.path.isdir(self.models_dir):
            return []
        return sorted((d for d in os.listdir(self.models_dir)
                       if os.path.isfile(os.path.join(self.models_dir, d, "examples.safetensors"))),
                      key=lambda d: (d != "mnist", d))

    def session(self, sid):
        with self._lock:
            if sid not in self._sessions:
                self._sessions[sid] = Session()
                while len(self._sessions) > self.MAX_SESSIONS:      # forget the least recently used visitor
                    self._sessions.popitem(last=False)
            self._sessions.move_to_end(sid)
            return self._sessions[sid]

    def model_names(self, sid=None):
        names = self.bundled()
        if sid is not None and sid in self._sessions:
            names += list(self._sessions[sid].models)
        return names

    def add_session_model(self, sid, name, ddpm, base):
        s = self.session(sid)
        s.models[name], s.bases[name] = ddpm, base
        while len(s.models) > self.MAX_SESSION_MODELS:
            old, _ = s.models.popitem(last=False)
            s.bases.pop(old, None)

    def model(self, name, sid=None):
        """A DDPM by name: this session's fine-tuned models first, then the bundled ones (loaded once)."""
        if sid is not None and name in self.session(sid).models:
            return self.session(sid).models[name]
        if name not in self.bundled():
            raise gr.Error(f"model {name!r} is not available; choose one of {self.model_names(sid)}"
                           + ("" if self.bundled() else f" (no bundled models in {self.models_dir} yet)"))
        with self._lock:
            if name not in self._models:
                from .pretrained import load_pretrained
                self._models[name] = load_pretrained(os.path.join(self.models_dir, name)).eval()
            return self._models[name]

    def config(self, name):
        with open(os.path.join(self.models_dir, name, "config.json")) as f:
            return json.load(f)

    def base_folder(self, name, sid=None):
        """The bundled folder whose examples and judge fit model `name`."""
        if sid is not None and name in self.session(sid).bases:
            return self.session(sid).bases[name]
        return name

    def examples(self, name):
        with self._lock:
            if name not in self._examples:
                folder = os.path.join(self.models_dir, name)
                try:
                    images, labels = load_examples(folder)
                except FileNotFoundError:
                    raise gr.Error(f"no examples for {name!r}: {folder} has no {EXAMPLES}; "
                                   f"datasets with examples: {self.datasets()}") from None
                if images.dtype != torch.uint8 or images.dim() != 3 or len(labels) != len(images):
                    raise gr.Error(f"{folder}/{EXAMPLES} must hold 'images' uint8 [N, H, W] and 'labels' [N], got "
                                   f"{images.dtype} {tuple(images.shape)} and {tuple(labels.shape)}")
                self._examples[name] = (images, labels.long())
            return self._examples[name]

    def judge(self, name):
        """The judge classifier of bundled folder `name`, or None (no judge, or judges switched off)."""
        if not self.use_judges:
            return None
        with self._lock:
            if name not in self._judges:
                try:
                    self._judges[name] = load_judge(os.path.join(self.models_dir, name))
                except (FileNotFoundError, CheckpointError):     # no judge here: the tab shows a note instead
                    self._judges[name] = None
            return self._judges[name]


_REGISTRY = None


def registry():
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry(os.environ.get("DDPM_APP_MODELS", PRETRAINED_DIR),
                             use_judges=os.environ.get("DDPM_APP_JUDGE", "1") != "0")
    return _REGISTRY


def set_registry(models_dir, use_judges=True):
    """Point the app at another models folder (tests use a folder of tiny models)."""
    global _REGISTRY
    _REGISTRY = Registry(models_dir, use_judges)
    return _REGISTRY


def dataset_examples(name):
    """The bundled examples of dataset folder `name`: (images uint8 [N, 28, 28], labels int64 [N])."""
    return registry().examples(name)


def class_names(ddpm):
    return list(ddpm.class_names or [str(i) for i in range(ddpm.num_classes or 0)])


def model_choices(request=None):
    return registry().model_names(session_id(request))


def reverse_class_choices(model, request: gr.Request = None):
    """The reverse tab's class picker for `model`: "unconditional" plus the class names."""
    names = class_names(registry().model(model, session_id(request))) if model else []
    return gr.update(choices=[UNCONDITIONAL] + names, value=names[0] if names else UNCONDITIONAL)


def grid_class_choices(model, request: gr.Request = None):
    """The grid tab's class picker for `model`: all class names, the first ten chosen."""
    names = class_names(registry().model(model, session_id(request))) if model else []
    return gr.update(choices=names, value=names[:10])


def app_init(request: gr.Request = None):
    """On page load: (dataset picker, reverse model, grid model) filled with what exists now."""
    reg = registry()
    datasets, models = reg.datasets(), reg.model_names(session_id(request))
    first = models[0] if models else None
    return (gr.update(choices=datasets, value=datasets[0] if datasets else None),
            gr.update(choices=models, value=first), gr.update(choices=models, value=first))


def end_session(request: gr.Request = None):
    """When a browser tab closes: forget its fine-tuned models, recorded frames and files."""
    sid, reg = session_id(request), registry()
    with reg._lock:
        session = reg._sessions.pop(sid, None)
    if session is not None:
        shutil.rmtree(session.workdir, ignore_errors=True)


def class_indices(ddpm, chosen):
    names = class_names(ddpm)
    if not names:
        raise gr.Error("this model is unconditional: it has no classes to choose")
    bad = [c for c in chosen if c not in names]
    if bad:
        raise gr.Error(f"unknown classes {bad}; this model's classes are {names}")
    return [names.index(c) for c in chosen]


# ---------------------------------------------------------------- images

def show(x, scale=10, nrow=None):
    """Images [B, 1, H, W] in [-1, 1] as one big PIL image, upscaled nearest-neighbour."""
    nrow = nrow or int(np.ceil(np.sqrt(x.shape[0])))
    return image_grid(x, nrow, scale=scale, pad=1 if x.shape[0] > 1 else 0)


def grid_scale(batch):
    return 10 if batch == 1 else 8 if batch <= 4 else 6


def image_to_x0(image):
    """Any uploaded or drawn image -> uint8 [28, 28], white strokes on black like MNIST.

    Light backgrounds are inverted; drawings are cropped to their strokes, fitted into 20x20 and centred
    (MNIST's own preprocessing), so a sketch on a big canvas looks like a dataset image.
    """
    if isinstance(image, dict):            # gr.Sketchpad / ImageEditor value
        image = image.get("composite")
    if image is None:
        raise gr.Error("no image: upload a file or draw something first")
    if isinstance(image, (str, os.PathLike)):
        try:
            image = Image.open(image)
            image.load()
        except Exception as err:
            raise gr.Error(f"{os.path.basename(str(image))} is not a readable image ({err})") from err
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8))
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(white, image)
    gray = np.array(image.convert("L"), dtype=np.uint8)
    if gray.mean() > 127:                  # dark strokes on a light background: invert to MNIST style
        gray = 255 - gray
    if gray.shape == (28, 28):
        return gray
    ys, xs = np.nonzero(gray > 40)
    if len(ys) == 0:
        raise gr.Error("the image is empty: draw or upload a shape first")
    crop = Image.fromarray(gray[ys.min():ys.max() + 1, xs.min():xs.max() + 1])
    crop = ImageOps.contain(crop, (20, 20), Image.LANCZOS)
    out = Image.new("L", (28, 28), 0)
    out.paste(crop, ((28 - crop.width) // 2, (28 - crop.height) // 2))
    return np.array(out, dtype=np.uint8)


def to_unit(img_uint8):
    """uint8 [H, W] -> tensor [1, 1, H, W] in [-1, 1]."""
    return torch.as_tensor(np.asarray(img_uint8)).float().div(127.5).sub(1)[None, None]


def default_x0():
    """A ring ("0") drawn in code, so the forward tab works without any bundled examples."""
    yy, xx = np.mgrid[:28, :28]
    r = np.sqrt((yy - 14) ** 2 / 1.6 + (xx - 14) ** 2)
    return (np.clip(1 - abs(r - 7) / 2.2, 0, 1) * 255).astype(np.uint8)


# ---------------------------------------------------------------- tab 1: the forward process

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
    images, labels = dataset_examples(dataset)
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
    images, _ = dataset_examples(dataset)
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
    if not isinstance(t, (int, float)) or isinstance(t, bool) or t != int(t) or not 0 <= t <= T - 1:
        raise gr.Error(f"t = {t!r} is outside the allowed range [0, {T - 1}] (T = {T})")
    t = int(t)
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
            formula, labelled_strip(strip, ts), schedule_figure(T, t, schedule),
            histogram_figure(x_t.flatten().numpy(), x_T.flatten().numpy(), t, T), warning)


def labelled_strip(x, ts, scale=4):
    """One row of images with 't = ...' written under each."""
    row = image_grid(x, len(ts), scale=scale, pad=2)
    canvas = Image.new("RGB", (row.width, row.height + 34), "white")
    canvas.paste(row, (0, 0))
    draw, cell = ImageDraw.Draw(canvas), (x.shape[-1] + 2) * scale
    for k, t in enumerate(ts):
        draw.text((2 * scale + k * cell + cell // 2 - 4 * len(f"t={t}"), row.height + 4), f"t={t}",
                  fill="black", font_size=20)
    return canvas


def forward_T_changed(T, t):
    """Keep the t slider inside [0, T-1] when T changes."""
    T = check_int("T", T)
    return gr.update(maximum=T - 1, value=min(int(t), T - 1))
