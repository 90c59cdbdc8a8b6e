"""Tab "Explore": curves, measured (issue 19).

Accuracy and Fréchet distance against the number of steps, accuracy and diversity against the guidance scale; each
point is real sampling judged by the model's judge classifier (ddpm/eval/sweep.py) at a small n, streamed as it
comes. Finished curves of bundled models are cached per setting, so the next visitor sees them at once; a bundled
model's sweep.json (`python -m ddpm evaluate --sweep`) is what the section opens on, and is shown whenever its
settings match; a live measurement at other settings is drawn over it, the bundled curve faded underneath.
`build(ex)` lays the section out in the Explore tab and wires it.
"""
import os
import threading
import time
from collections import OrderedDict

import gradio as gr

from ..data import to_unit_range
from ..eval.sweep import (GUIDANCE_GRID, FEW_STEP_SAMPLERS, STEP_GRID, SWEEP_JSON, format_points, guidance_points,
                          load_sweep, plot_guidance, plot_steps, steps_points)
from ..sampling import SAMPLERS
from . import openers
from .cores import shares_cores
from .explain import LATEX
from .figures import plt_lock
from .inputs import LIMITS, check_int, check_range, check_sampling
from .jobs import Stopped, holds_session, step_check, stopper
from .pickers import sampler_for
from .registry import registry, session_id
from .widgets import (Parts, by_name, guidance_input, image, measured_default, openers_job, pictured, sampling_job,
                      seed_input)

CURVES_HELP = r"""
### Curves, measured
Every point samples $n$ images ($n/K$ of each of the $K$ classes, one seed) and asks the judge classifier what it sees.
**Steps**: class accuracy and the Fréchet distance
$\lVert\mu_g-\mu_r\rVert^2 + \mathrm{tr}\big(\Sigma_g+\Sigma_r-2(\Sigma_g^{1/2}\Sigma_r\Sigma_g^{1/2})^{1/2}\big)$
between judge features of the samples ($g$) and of the real examples ($r$): how few steps are enough?
**Guidance** $s$: accuracy rises with $s$ while diversity, the mean distance $\lVert f_i - f_j\rVert$ between the
features of two images of one class, falls: the trade-off of classifier-free guidance.
**Bands**: accuracy, the 95% Wilson interval; FD, the 5-95% range of a bootstrap over the images; diversity,
$\pm 1.96$ standard errors over the classes. Points whose bands overlap are not told apart at this $n$.
At small $n$ FD is far from its large-$n$ value: compare points with each other and with the dotted real-vs-real line,
never with published FIDs.
"""

OWN = ("ddim", 25)             # the guidance curve's (sampler, steps) where no quality-per-cost table is at hand
# The tab's default: n = 100 images per point for a 10-class model, as the bundled sweeps (at n = 20 the FD bands
# were +-150 and accuracy flat). At n = 100 the guidance curve's bands separate s = 1 from s = 3 and 5: diversity on
# MNIST (21.8 [19.5, 24.0] against 17.0 [14.8, 19.2] and 16.3 [14.2, 18.4]), FD on FashionMNIST (50 [35, 67] against
# 91 [68, 131] and 139 [111, 183]); the steps curve's points from 5 to 50 steps at s = 2 overlap, which is its
# finding: 5-10 steps are as good as 50 at this n.
LIVE_PER_CLASS = 10
BANDS = ("Bands: accuracy, the 95% Wilson interval; FD, the 5-95% range of a bootstrap over the images; "
         "diversity, ±1.96 standard errors over the classes.")


class RowCache:
    """Finished curves (lists of rows) by key; the least recently used go past `size`. Gradio runs handlers in
    threads, so every access holds a lock."""

    def __init__(self, size=64):
        self.size, self._rows, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        with self._lock:
            if key not in self._rows:
                return None
            self._rows.move_to_end(key)
            return list(self._rows[key])

    def put(self, key, rows):
        with self._lock:
            self._rows[key] = list(rows)
            self._rows.move_to_end(key)
            while len(self._rows) > self.size:
                self._rows.popitem(last=False)

    def clear(self):
        with self._lock:
            self._rows.clear()


CACHE = RowCache(64)


def _shared(reg, model, sid):
    """Whether `model` is a bundled model for every visitor (not this visitor's own fine-tuned one of that name)."""
    own = reg.peek(sid)
    return model in reg.bundled() and not (own is not None and model in own.models)


def _cache_key(reg, model, sid, kind, settings, per_class, seed):
    """The key of a curve in CACHE, or None for a visitor's own model: its curves are never shown to others."""
    if not _shared(reg, model, sid):
        return None
    return os.path.abspath(os.path.join(reg.models_dir, model)), model, kind, settings, per_class, seed


def bundled_sweep(reg, model, sid, part):
    """The `part` ("steps" or "guidance") of a bundled model's sweep.json with its "command", or None."""
    if not _shared(reg, model, sid):
        return None
    folder = os.path.join(reg.models_dir, model)
    try:
        data = load_sweep(os.path.join(folder, SWEEP_JSON))
    except ValueError as err:
        raise gr.Error(f"the {SWEEP_JSON} of model {model!r} cannot be used: {err}".replace(folder, model)) from None
    if data is None or part not in data:
        return None
    return dict(data[part], command=data.get("command", "python -m ddpm evaluate --sweep"))


def same_sample(bundled, per_class, seed):
    """Whether a bundled measurement sampled what a live one at (per_class, seed) would: then it is shown instead."""
    return (int(bundled["per_class"]), int(bundled["seed"])) == (per_class, seed)


def _checked(model, per_class, seed, request):
    """(sid, registry, ddpm, per_class, seed) after the checks every curve needs."""
    sid, reg = session_id(request), registry()
    ddpm = reg.model(model, sid)
    if ddpm.num_classes is None:
        raise gr.Error(f"model {model!r} is unconditional: the curves measure class accuracy; pick a class-conditional model")
    return sid, reg, ddpm, check_int("images per class", per_class, "per_class"), check_int("seed", seed)


def _judge_and_real(reg, model, sid, ddpm):
    """The judge classifier and the real examples (the FD reference, [N, 1, H, W] in [-1, 1]) of `model`."""
    base = reg.base_folder(model, sid)
    judge = reg.judge(base)
    if judge is None:
        why = ("judges are switched off on this server (DDPM_APP_JUDGE=0)" if not reg.use_judges
               else "and there is none")
        raise gr.Error(f"the curves need the judge classifier of model {model!r} (judge.safetensors beside it), {why}")
    if judge.config["num_classes"] != ddpm.num_classes:
        raise gr.Error(f"model {model!r} has {ddpm.num_classes} classes, its judge classifier knows "
                       f"{judge.config['num_classes']}: the curves need a judge of every class")
    if base not in reg.datasets():
        raise gr.Error(f"the curves need the real examples of model {model!r} (examples.safetensors), and there are none")
    images, _ = reg.examples(base)
    return judge, to_unit_range(images)


def _plot(plot, rows, title, reference=None):
    with plt_lock:                          # matplotlib is not thread-safe
        return plot(rows, title, reference=reference)


def _report(head, rows, notes=()):
    return "\n\n".join([head, *notes, BANDS, format_points(rows) if rows else "*measuring the first point ...*"])


def _bundled(plot, part, title, notes, other):
    """(plot, markdown) of a bundled measurement."""
    head = (f"**Bundled measurement**, n = {part['n']} per point ({part['per_class']} per class, seed {part['seed']}), "
            f"made by `python -m ddpm evaluate --sweep` (`{part['command']}`), shown for these settings. "
            f"Choose another {other}, images per class or seed to measure live at your settings, over this one.")
    return _plot(plot, part["rows"], title), _report(head, part["rows"], notes)


def _stream(plot, title, points, *, key, total, who, notes, reference=None):
    """Drain `points`, yielding (plot, markdown) first at once, then after every point, drawn over the `reference`
    rows (the bundled measurement, faded); cache the finished curve."""
    rows, start = [], time.perf_counter()
    image = _plot(plot, rows, title, reference)
    yield image, _report(f"**Measured live**, {who}: measuring {total} points ...", rows, notes)
    try:
        for row in points:
            rows.append(row)
            image = _plot(plot, rows, title, reference)
            yield image, _report(f"**Measured live**, {who}: {len(rows)} of {total} points, "
                                 f"{time.perf_counter() - start:.0f} s so far.", rows, notes)
    except Stopped as why:
        yield (_plot(plot, rows, title, reference),
               _report(f"**Stopped** after {len(rows)} of {total} points ({why}); {who}. These points are not cached.",
                       rows, notes))
        return
    if key is not None:
        CACHE.put(key, rows)
    kept = "cached for the next visitor" if key is not None else "not cached (a model of this session)"
    yield image, _report(f"**Measured live**, {who}: all {total} points in {time.perf_counter() - start:.0f} s; "
                         f"{kept}.", rows, notes)


def _who(model, ddpm, per_class, seed):
    return f"`{model}`, n = {per_class * ddpm.num_classes} images per point ({per_class} per class), seed {seed}"


def _cached(plot, rows, title, who, notes, reference=None):
    seconds = sum(r["seconds"] for r in rows)
    return _plot(plot, rows, title, reference), _report(f"**Measured earlier on this server**, {who}, shown from the cache "
                                             f"({seconds:.0f} s of work then).", rows, notes)


@shares_cores
@holds_session("sweep")
def sweep_steps(model, guidance, seed, per_class, request: gr.Request = None):
    """Class accuracy and FD against the number of steps, one line per few-step sampler, at this guidance scale.

    Yields (plot image, markdown): at once, then after every point; once only for a cached curve or a bundled
    measurement at this guidance (sweep.json beside a bundled model). DDPM (all T steps) is not measured here.
    """
    sid, reg, ddpm, per_class, seed = _checked(model, per_class, seed, request)
    guidance = float(check_range("guidance scale", guidance, "guidance"))
    title = f"{model}: accuracy and FD against steps at guidance s = {guidance:g}"
    notes = [f"DDPM (Algorithm 2) is not measured live: it takes all T = {ddpm.T} steps, {ddpm.T} network calls per "
             "image (twice that guided); `python -m ddpm evaluate --sweep` measures it."]
    bundled = bundled_sweep(reg, model, sid, "steps")
    if bundled is not None and float(bundled["guidance"]) == guidance and same_sample(bundled, per_class, seed):
        yield _bundled(plot_steps, bundled, title, [], "guidance scale")
        return
    steps = tuple(k for k in STEP_GRID if k <= ddpm.T)
    yield from _cached_or_live(
        reg, model, sid, ddpm, ("steps", (guidance, steps)), per_class, seed, plot_steps, title, notes,
        len(steps) * len(FEW_STEP_SAMPLERS), bundled,
        lambda judge, real, check: steps_points(ddpm, judge, real, guidance=guidance, per_class=per_class, seed=seed,
                                                steps=steps, callback=check))


@shares_cores
@holds_session("sweep")
def sweep_guidance(model, sampler, steps, seed, per_class, request: gr.Request = None):
    """Class accuracy and diversity against the guidance scale s (GUIDANCE_GRID) with this sampler and steps.

    Yields (plot image, markdown): at once, then after every point; once only for a cached curve or a bundled
    measurement with this sampler and steps (sweep.json beside a bundled model).
    """
    sid, reg, ddpm, per_class, seed = _checked(model, per_class, seed, request)
    steps = check_sampling(ddpm, sampler, steps, 0.0, 1.0, 0)[0]
    steps = ddpm.T if steps is None else steps
    title = f"{model}: accuracy and diversity against guidance, {sampler} {steps} steps"
    bundled = bundled_sweep(reg, model, sid, "guidance")
    if bundled is not None and (bundled["sampler"], int(bundled["steps"])) == (sampler, steps) and \
            same_sample(bundled, per_class, seed):
        yield _bundled(plot_guidance, bundled, title, [], "sampler or number of steps")
        return
    if sampler not in FEW_STEP_SAMPLERS:
        raise gr.Error(f"sampler {sampler!r} takes all T = {ddpm.T} steps per image, too slow to measure live; "
                       f"choose one of {list(FEW_STEP_SAMPLERS)}")
    notes = [] if per_class > 1 else ["Diversity needs two images of a class: choose 2 or more images per class."]
    yield from _cached_or_live(
        reg, model, sid, ddpm, ("guidance", (sampler, steps)), per_class, seed, plot_guidance, title, notes,
        len(GUIDANCE_GRID), bundled,
        lambda judge, real, check: guidance_points(ddpm, judge, real, sampler=sampler, steps=steps,
                                                   per_class=per_class, seed=seed, callback=check))


def _cached_or_live(reg, model, sid, ddpm, setting, per_class, seed, plot, title, notes, total, bundled, points):
    """A curve from the cache (one yield) or measured live and streamed point by point, over the bundled
    measurement (faded) when there is one; setting = (part, what the part's points depend on), points(judge, real
    images, per-step callback) -> the rows' generator."""
    who = _who(model, ddpm, per_class, seed)
    key = _cache_key(reg, model, sid, setting[0], setting[1], per_class, seed)
    rows = CACHE.get(key) if key is not None else None
    reference = bundled["rows"] if bundled else None
    notes = notes + ([f"Faded underneath: the bundled measurement (n = {bundled['n']}, `{bundled['command']}`)."]
                     if bundled else [])
    if rows is not None:
        yield _cached(plot, rows, title, who, notes, reference)
        return
    judge, real = _judge_and_real(reg, model, sid, ddpm)
    stop = reg.session(sid).stops["sweep"]
    yield from _stream(plot, title, points(judge, real, step_check(stop)), key=key, total=total, who=who, notes=notes,
                       reference=reference)


sweep_stop = stopper("sweep")


def curves_opening(model, request: gr.Request = None):
    """What the section opens on for `model`: its bundled measurement (sweep.json), both curves, at once; a model
    without one says how to measure. Returns (steps plot, its markdown, guidance plot, its markdown)."""
    sid, reg = session_id(request), registry()
    if not model:
        return (gr.update(),) * 4

    def make():
        out = []
        for part, plot, title, other in (("steps", plot_steps, "accuracy and FD against steps", "guidance scale"),
                                         ("guidance", plot_guidance, "accuracy and diversity against guidance",
                                          "sampler or number of steps")):
            bundled = bundled_sweep(reg, model, sid, part)
            if bundled is None:
                out += [None, f"*No bundled measurement for `{model}`: press the button to measure it live.*"]
                continue
            figure, text = _bundled(plot, bundled, f"{model}: {title}", [], other)
            alt = (f"{title} of {model}, measured with n = {bundled['n']} images per point: "
                   + "; ".join(_point_text(r) for r in bundled["rows"]))
            out += [pictured(figure, alt), text]
        return tuple(out)

    return openers.cached(openers.shared_key(model, sid, "curves"), make)


def _point_text(row):
    """One measured point in words, for the plots' alt text."""
    return (f"{row['sampler']} {row['steps']} steps s = {row['guidance']:g}: accuracy {100 * row['accuracy']:.0f}%"
            + (f", FD {row['fd']:.0f}" if row.get("fd") is not None else "")
            + (f", diversity {row['diversity']:.1f}" if row.get("diversity") is not None else ""))


def build(ex):
    """The section in the current tab, under the comparison of `ex` (explore's Parts: its model picker measures
    here too), its events wired; returns its Parts."""
    ui = Parts()
    ui.model = ex.model
    gr.Markdown(CURVES_HELP, latex_delimiters=LATEX)
    with gr.Row():
        ui.per_class = gr.Slider(*LIMITS["per_class"], value=LIVE_PER_CLASS, step=1,
                                 label="images per class and point (as the bundled curves)", elem_id="cv_per_class")
        ui.seed = seed_input()
        ui.stop = gr.Button("Stop measuring", variant="stop")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            ui.guidance = guidance_input("guidance scale s")
            ui.steps_go = gr.Button("Measure: quality against steps", variant="primary", elem_id="cv_steps_go")
        with gr.Column(scale=3):
            ui.steps_img = image("accuracy and FD against steps", elem_id="cv_steps_img", show_label=False)
    ui.steps_text = gr.Markdown(elem_id="cv_steps_text")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            sampler, steps = measured_default() or OWN
            ui.sampler = gr.Radio([(SAMPLERS[name].label, name) for name in FEW_STEP_SAMPLERS], value=sampler,
                                  label="sampler", elem_id="cv_sampler")
            ui.steps = gr.Slider(*LIMITS["steps"], value=steps, step=1, label="steps", elem_id="cv_steps")
            ui.guid_go = gr.Button("Measure: accuracy and diversity against guidance", variant="primary",
                                   elem_id="cv_guid_go")
        with gr.Column(scale=3):
            ui.guid_img = image("accuracy and diversity against guidance", elem_id="cv_guid_img", show_label=False)
    ui.guid_text = gr.Markdown(elem_id="cv_guid_text")

    pick = sampler_for(OWN)
    ui.model.change(pick, inputs_kwargs=by_name(pick, ui.model, ui.guidance), outputs=[ui.sampler, ui.steps],
                    api_name=False, show_progress="hidden")
    ui.steps_go.click(sweep_steps, inputs_kwargs=by_name(sweep_steps, ui.model, ui.guidance, ui.seed, ui.per_class),
                      outputs=[ui.steps_img, ui.steps_text], api_name="sweep_steps", show_progress="minimal",
                      **sampling_job())
    ui.guid_go.click(sweep_guidance, inputs_kwargs=by_name(sweep_guidance, ui.model, ui.sampler, ui.steps, ui.seed,
                                                           ui.per_class),
                     outputs=[ui.guid_img, ui.guid_text], api_name="sweep_guidance", show_progress="minimal",
                     **sampling_job())
    ui.stop.click(sweep_stop, api_name="sweep_stop", queue=False)
    ui.model.change(curves_opening, inputs_kwargs=by_name(curves_opening, ui.model),
                    outputs=[ui.steps_img, ui.steps_text, ui.guid_img, ui.guid_text], api_name="curves_opening",
                    show_progress="hidden", **openers_job())
    return ui
