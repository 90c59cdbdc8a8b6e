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
from .inputs import class_names
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


# beside a bundled model: the fixed-seed previews before and after the fine-tune tab's default run, and its closing
# status (write_finetune_example); the tab opens on them
FINETUNE_EXAMPLE = ("finetune_before.png", "finetune_after.png", "finetune_example.md")


def finetune_opening(base, request: gr.Request = None):
    """What the fine-tune tab opens on for `base`: the example run shipped with a bundled model (FINETUNE_EXAMPLE:
    its previews before and after, and its status), else the fixed-seed preview of `base` as it is, in both places
    (nothing trained yet). Returns (before, now, status markdown)."""
    sid, reg = session_id(request), registry()
    if not isinstance(base, str) or not base or base.startswith(finetune.SCRATCH):
        return gr.update(), gr.update(), gr.update()
    folder = os.path.join(reg.models_dir, base) if base in reg.bundled() else None
    shipped = [os.path.join(folder, name) for name in FINETUNE_EXAMPLE] if folder else []

    def make():
        if shipped and all(os.path.isfile(path) for path in shipped):
            with open(shipped[2]) as f:
                note = f.read().strip()
            return (pictured(shipped[0], f"the fixed-seed preview of {base} before the example fine-tune"),
                    pictured(shipped[1], f"the same preview after the example fine-tune of {base}"),
                    f"*The example run, shipped with the model: the tab's default settings.*\n\n{note}\n\n"
                    "*Press Start training to run your own.*")
        ddpm = reg.model(base, sid)
        classes = list(range(min(4, ddpm.num_classes or 0)))
        if not classes:
            return gr.update(), gr.update(), "*An unconditional model: fine-tuning here needs classes.*"
        before = pictured(finetune._preview(ddpm, classes), f"the fixed-seed preview of {base} before training: "
                          f"{finetune.PREVIEW_PER_CLASS} images of each of its first {len(classes)} classes")
        return before, before, f"*Before and now: `{base}` as it is, untrained. Press Start training to fine-tune a copy.*"

    stamps = tuple(os.stat(path).st_mtime_ns if os.path.isfile(path) else None for path in shipped)    # rewritten: new
    return cached(shared_key(base, sid, "finetune", stamps), make)


def write_finetune_example(model):
    """Run the fine-tune tab's default run on the bundled `model` (a new class from the ready-made drawings, the
    default budget) and write FINETUNE_EXAMPLE beside it: `python -m ddpm.app.openers mnist fashion_mnist`."""
    names = class_names(registry().model(model))
    *_, last = finetune.finetune_run(model, "shapes", names, "triangle", None, finetune.BUDGET_KIND, finetune.BUDGET, 50)
    value = lambda out: out["value"] if isinstance(out, dict) else out
    before_path, after_path, note_path = (os.path.join(registry().models_dir, model, name) for name in FINETUNE_EXAMPLE)
    value(last[2]).save(before_path)
    value(last[3]).save(after_path)
    head, *rest = value(last[4]).strip().split("\n")       # the run's headline (how long), not its session's model
    with open(note_path, "w") as f:
        f.write("\n".join([f"**{head.split('**')[1]}** (`python -m ddpm.app.openers {model}`, {os.cpu_count()} cores)",
                           *rest]) + "\n")
    return before_path, after_path, note_path


if __name__ == "__main__":
    import sys
    for name in sys.argv[1:]:
        print(*write_finetune_example(name))
