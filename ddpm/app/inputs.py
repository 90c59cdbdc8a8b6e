"""Input checks of the app: each raises gr.Error naming the input, the value and what is allowed.

The sliders use the same bounds (LIMITS), so a value from the page is always allowed; the checks are for
values that come from elsewhere (the API, a crafted request) and for a session that must stay usable.
"""
import gradio as gr
import torch

from ..sampling import SAMPLERS
from .settings import settings

# (low, high) of every numeric input; the UI sliders use the same bounds
LIMITS = {
    "T": (10, 2000), "batch": (1, 16), "steps": (1, 1000), "eta": (0.0, 1.0), "guidance": (0.0, 10.0),
    "seed": (0, 2**31 - 1), "per_class": (1, 10), "n_classes": (1, 20),
    "train_seconds": (5, settings().max_train_seconds), "train_steps": (1, 5000),
    "refresh_every": (5, 1000), "uploads": (1, 64), "upload_mb": (0, 5),
    # the 2-D playground, SDEdit and interpolation
    "pg_T": (2, 1000), "beta": (1e-6, 0.999), "width": (8, 512), "depth": (1, 8), "lr": (1e-5, 0.1),
    "pg_batch": (8, 4096), "pg_seconds": (1, settings().max_playground_seconds),
    "paths": (1, 64), "frames": (2, 16),
    "nn_per_class": (1, 4),          # the nearest-neighbour search: 10 classes x 4 = 40 rows at most
}
UNCONDITIONAL = "unconditional"


def check_range(name, value, key=None, *, bounds=None):
    """Raise gr.Error naming the value and its allowed range unless low <= value <= high (NaN never is)."""
    lo, hi = bounds or LIMITS[key or name]
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise gr.Error(f"{name} = {value!r} is outside the allowed range [{lo}, {hi}]")
    return value


def check_int(name, value, key=None, *, bounds=None):
    """check_range, and the value must be a whole number; returns it as an int."""
    check_range(name, value, key, bounds=bounds)
    if float(value) != int(value):
        raise gr.Error(f"{name} = {value!r} must be a whole number")
    return int(value)


def class_names(ddpm):
    """The model's class names, or "0".."K-1" when it has none; [] for an unconditional model."""
    return list(ddpm.class_names or [str(i) for i in range(ddpm.num_classes or 0)])


def class_indices(ddpm, chosen):
    """Class names chosen in a picker -> their indices, refusing names the model does not have."""
    names = class_names(ddpm)
    if not names:
        raise gr.Error("this model is unconditional: it has no classes to choose")
    bad = [c for c in chosen if c not in names]
    if bad:
        raise gr.Error(f"unknown classes {bad}; this model's classes are {names}")
    return [names.index(c) for c in chosen]


def sampler_row(sampler):
    """The row of the sampler table (ddpm.sampling.SAMPLERS) named `sampler`, or gr.Error naming the choices."""
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise gr.Error(f"sampler {sampler!r} is unknown; choose one of {list(SAMPLERS)}")
    return SAMPLERS[sampler]


def check_steps(sampler, steps):
    """A sampler name and its step count: None for a sampler that always walks all T steps, else an int in
    LIMITS["steps"]."""
    return None if sampler_row(sampler).all_steps else check_int("steps", steps, "steps")


def class_labels(ddpm, class_name, n):
    """n labels of the class picked by name, or None for "unconditional" (the null class)."""
    if not class_name or class_name == UNCONDITIONAL:
        return None
    return torch.tensor(class_indices(ddpm, [class_name]) * n)


def check_sampling(ddpm, sampler, steps, eta, guidance, seed):
    """The sampler settings shared by the reverse and grid tabs: (steps or None, eta, guidance, seed)."""
    steps = check_steps(sampler, steps)
    if steps is not None and steps > ddpm.T:
        raise gr.Error(f"steps = {steps} is outside the allowed range [1, {ddpm.T}] (T of this model)")
    return steps, check_range("eta", eta), check_range("guidance scale", guidance, "guidance"), check_int("seed", seed)
