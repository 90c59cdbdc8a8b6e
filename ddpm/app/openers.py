"""What every tab opens on: a picture made with the tab's own default settings, once per model, and kept.

A tab computes its opening picture when its model picker is filled (the page load, or another model picked), so
start-up computes nothing and the first visitor of a model pays once; every later visitor gets the kept picture.
A visitor's own (fine-tuned) model is computed for that visitor only and not kept. Files made here (animations)
live in a folder of this process, apart from the sessions' folders that guard.sweep cleans.
"""
import atexit
import os
import shutil
import tempfile
import threading
from collections import OrderedDict

import gradio as gr

from . import finetune
from .registry import registry, session_id
from .widgets import pictured

SIZE = 64                   # opening pictures kept: a few per tab and model

_kept, _lock, _making = OrderedDict(), threading.Lock(), {}
_folder = []


def cached(key, make):
    """make() once per key, kept (the least recently used go past SIZE), handed out as a fresh copy (`fresh`);
    requests that ask at once wait for the one that makes it. key None: made every time, never kept (a visitor's
    own model)."""
    if key is None:
        return make()
    with _lock:
        if key in _kept:
            _kept.move_to_end(key)
            return fresh(_kept[key])
        making = _making.setdefault(key, threading.Lock())
    with making:
        with _lock:
            if key in _kept:
                return fresh(_kept[key])
        value = make()                       # a make() that fails keeps nothing: the next request tries again
        with _lock:
            _kept[key] = value
            while len(_kept) > SIZE:
                _kept.popitem(last=False)
            _making.pop(key, None)
        return fresh(value)


def fresh(value):
    """A kept handler result to hand out: Gradio takes an update dict apart as it sends it (pops its "value"), so
    every request gets its own dicts; the pictures and texts in them are shared, never changed."""
    if isinstance(value, tuple):
        return tuple(fresh(v) for v in value)
    return dict(value) if isinstance(value, dict) else value


def shared_key(model, sid, *what):
    """The key of an opening picture of `model` made with `what` (the settings it depends on), or None for a model
    of this visitor's own, whose pictures are never shown to others."""
    reg = registry()
    own = reg.peek(sid)
    if not isinstance(model, str) or model not in reg.bundled() + reg.hub_models or (own is not None and model in own.models):
        return None
    return os.path.abspath(reg.models_dir), model, *what


def path(name):
    """A path for a file of an opening picture, in this process's own folder (removed when the process ends)."""
    if not _folder:
        with _lock:
            if not _folder:
                _folder.append(tempfile.mkdtemp(prefix="ddpm_app_openers_"))
                atexit.register(shutil.rmtree, _folder[0], ignore_errors=True)
    return os.path.join(_folder[0], name)


def clear():
    """Forget every kept picture (tests, and a models folder swapped under a running process)."""
    with _lock:
        _kept.clear()


FINETUNE_EXAMPLE = "finetune_example.png"     # beside a bundled model: its fixed-seed preview after an example fine-tune


def finetune_opening(base, request: gr.Request = None):
    """What the fine-tune tab opens on for `base`: the fixed-seed "before" preview of its default run, and beside it
    the "after" of an example fine-tune shipped with a bundled model (FINETUNE_EXAMPLE), else the same preview
    (nothing trained yet). Returns (before, now, status markdown)."""
    sid, reg = session_id(request), registry()
    if not isinstance(base, str) or not base or base.startswith(finetune.SCRATCH):
        return gr.update(), gr.update(), gr.update()
    folder = reg.base_folder(base, sid)
    example = os.path.join(reg.models_dir, folder, FINETUNE_EXAMPLE) if folder in reg.bundled() else None

    def make():
        ddpm = reg.model(base, sid)
        classes = list(range(min(4, ddpm.num_classes or 0)))
        if not classes:
            return gr.update(), gr.update(), "*An unconditional model: fine-tuning here needs classes.*"
        before = pictured(finetune._preview(ddpm, classes), f"the fixed-seed preview of {base} before training: "
                          f"{finetune.PREVIEW_PER_CLASS} images of each of its first {len(classes)} classes")
        if example and os.path.isfile(example):
            return (before, pictured(example, f"the same preview after an example fine-tune of {base}"),
                    f"*Before: `{base}` as it is. Now: an example fine-tune of it, shipped with the model "
                    f"({FINETUNE_EXAMPLE}). Press Start training to run your own.*")
        return before, before, f"*Before and now: `{base}` as it is, untrained. Press Start training to fine-tune a copy.*"

    return cached(shared_key(base, sid, "finetune", bool(example and os.path.isfile(example))), make)
