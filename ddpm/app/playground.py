"""The 2-D playground: Algorithm 1 from scratch on a point cloud in seconds, with the package's own `train`,
`DDPM` (data_dim=2, an MLP for eps_theta), `sample_xt` and samplers, so every hyperparameter shows its effect.

Each visitor's run lives in their session (registry.Session.playground): private, stoppable, and a stopped
run keeps its model. The sliced Wasserstein distance to the data makes two settings comparable by number.
The tab opens on an example run of the default recipe, shipped as pretrained/playground/two_moons.safetensors
(`python -m ddpm.app.playground` trains it again: EXAMPLE_STEPS steps, a minute on one core); trajectories are
drawn from it until the visitor trains their own. `build()` lays the tab out and wires it.
"""
import functools
import json
import os
import time

import gradio as gr
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .. import points
from ..diffusion import sample_xt
from ..eval.metrics import sliced_wasserstein
from ..pretrained import BUNDLED_DIR
from ..sampling import sample, sample_steps
from ..schedule import SCHEDULES
from ..training import train
from .cores import shares_cores
from . import openers
from .explain import LEADS, PLAYGROUND, SOURCES
from .figures import loss_figure, paths_figure, playground_figure
from .images import CheckedSketchpad, image_to_x0
from .inputs import LIMITS, check_int, check_range, check_steps, sampler_row
from .jobs import holds_session, stopper
from .registry import registry, session_id
from .widgets import (FEW_STEPS, SAMPLER_CHOICES, Parts, by_name, code, go_button, go_row, image, intro, openers_job, pictured,
                      sampling_job, training_job)

N_DATA, N_PREVIEW, N_FINAL = 4000, 600, 2000     # points: the data, the samples shown while training, at the end
PREVIEW_EVERY_S = 1.0
DEFAULTS = points.RECIPE            # the tab's initial values
PATHS_OWN = ("ddim", 20)            # the trajectories' (sampler, steps) to start with
T_VIEW = (0, LIMITS["pg_T"][1] - 1)       # the forward process is shown at t in T_VIEW, and below the run's T
DEFAULT_T_VIEW, DEFAULT_PATHS = 50, 12
EXAMPLE = os.path.join(BUNDLED_DIR, "playground", "two_moons.safetensors")   # the example run the tab opens on
EXAMPLE_STEPS = 2000                # its training steps (by steps, not seconds: the same weights on any machine)
SHAPE_LABELS = {"two_moons": "two moons", "swiss_roll": "swiss roll", "gaussian_ring": "ring of Gaussians",
                "drawing": "my drawing"}


def _settings(shape, word, drawing, schedule, T, beta_start, beta_end, width, depth, lr, batch, seconds, seed):
    """Check every setting (gr.Error naming the bad one) and build the data: (data [N, 2], settings dict)."""
    if shape not in points.SHAPES:
        raise gr.Error(f"data {shape!r} is unknown; choose one of {list(points.SHAPES)}")
    if schedule not in SCHEDULES:
        raise gr.Error(f"schedule {schedule!r} is unknown; choose one of {list(SCHEDULES)}")
    s = dict(T=check_int("T", T, "pg_T"), beta_start=check_range("beta_start", beta_start, "beta"),
             beta_end=check_range("beta_end", beta_end, "beta"), width=check_int("width", width),
             depth=check_int("depth", depth), lr=check_range("learning rate", lr, "lr"),
             batch=check_int("batch size", batch, "pg_batch"), seconds=check_int("training seconds", seconds, "pg_seconds"),
             seed=check_int("seed", seed), schedule=schedule, shape=shape)
    if schedule != "cosine" and s["beta_start"] > s["beta_end"]:          # the cosine schedule has no beta range
        raise gr.Error(f"beta_start = {beta_start} is above beta_end = {beta_end}; the betas must rise")
    gray = None
    if shape == "drawing":
        if drawing is None or (isinstance(drawing, dict) and drawing.get("composite") is None):
            raise gr.Error("the sketch is empty: draw a shape first")
        gray = image_to_x0(drawing)
    try:
        data = points.make(shape, N_DATA, word=word, drawing=gray, generator=torch.Generator().manual_seed(s["seed"]))
    except ValueError as err:
        raise gr.Error(str(err)) from None
    return data, s


def _caption(steps, seconds=None):
    """The samples panel's title; seconds None: a run not timed here (the shipped example)."""
    if not steps:
        return "the data (grey)"
    return f"samples (orange) after {steps} steps" + ("" if seconds is None else f", {seconds:.1f} s")


def _preview(model, n, seed):
    """n samples of Algorithm 2 from one start noise (seeded), so that two previews differ only by the model."""
    return sample(model, n, sampler="ddpm", clip_x0=False, generator=torch.Generator().manual_seed(seed + 1))


def _verdict(model, data, x_t, t_view, s, losses, elapsed, stopped=None):
    """The end of a run: (loss plot, samples over the data, markdown with the sliced Wasserstein distance); elapsed
    None: a run not timed here (the shipped example)."""
    final = _preview(model, N_FINAL, s["seed"])
    distance = sliced_wasserstein(final, data[:N_FINAL], generator=torch.Generator().manual_seed(0))
    floor = sliced_wasserstein(data[N_FINAL:], data[:N_FINAL], generator=torch.Generator().manual_seed(0))
    off = int((~torch.isfinite(final).all(1) | (final.abs() > 3.2).any(1)).sum())       # outside the plot, or NaN
    alt = (f"{N_FINAL} samples of the trained 2-D model over the {s['shape']} data, sliced Wasserstein distance "
           f"{distance:.3f}; beside it the data noised to t = {t_view}")
    return (loss_figure(losses),
            pictured(playground_figure(data, final[:N_PREVIEW * 2], x_t, t_view, s["T"], _caption(len(losses), elapsed)), alt),
            f"**{'Stopped' if stopped else 'Done'} after {len(losses)} steps"
            + (" (the shipped example).** " if elapsed is None else f" ({elapsed:.1f} s).** ")
            + (f"Stopped because {stopped}. " if stopped else "") +
            f"Sliced Wasserstein distance of {N_FINAL} samples (Algorithm 2) to the data: **{distance:.3f}** "
            f"(two halves of the data itself: {floor:.3f}; lower is better)."
            + (f" **{off} of {N_FINAL} samples lie outside the plot** (or are not finite): the model has not learnt "
               "the data's scale (too few steps, or a schedule that leaves x_T far from N(0, I))." if off else "")
            + " The model is kept: draw trajectories below.")


@shares_cores
@holds_session("playground")
def playground_train(shape, word, drawing, schedule, T, beta_start, beta_end, width, depth, lr, batch, seconds,
                     t_view, seed=0, request: gr.Request = None):
    """Train a 2-D DDPM from scratch with `ddpm.train`, streaming (loss plot, samples and q(x_t | x_0), status,
    trajectories, their text); the first update clears the trajectories of the model this run replaces.

    The samples are drawn with Algorithm 2 from the same start noise at every preview, so only the model changes.
    """
    data, s = _settings(shape, word, drawing, schedule, T, beta_start, beta_end, width, depth, lr, batch, seconds, seed)
    t_view = min(check_int("t (forward process)", t_view, bounds=T_VIEW), s["T"] - 1)
    try:
        model = points.recipe_model(s, seed=s["seed"])
    except ValueError as err:                                # e.g. betas outside (0, 1) for this schedule
        raise gr.Error(str(err)) from None
    session = registry().session(session_id(request))
    stop = session.stops["playground"]
    losses = []
    session.playground = dict(model=model, data=data, losses=losses)
    g = torch.Generator().manual_seed(s["seed"])
    x_t = sample_xt(data, torch.full((len(data),), t_view), None, model.schedule.alpha_bar, generator=g)   # Eq. (4)
    loader = points.loader(data, s["batch"], seed=s["seed"])
    optim = torch.optim.Adam(model.parameters(), lr=s["lr"])
    keep = (gr.update(), gr.update())                   # the trajectories, drawn from this model once it is trained

    yield (loss_figure([]), playground_figure(data, None, x_t, t_view, s["T"], _caption(0, 0)),
           f"Training on {N_DATA} points of **{shape}**: T = {s['T']}, MLP {s['depth']} x {s['width']}, "
           f"batch {s['batch']}, lr {s['lr']:g}, {s['seconds']} s.",
           None, "*The trajectories of the model being trained: press Draw trajectories once it is done.*")
    start, trained = time.perf_counter(), 0.0        # the budget counts training only, not the previews
    while not stop.is_set():
        left = s["seconds"] - trained
        if left <= 0:
            break
        chunk = time.perf_counter()
        losses += train(model, loader, None, optim, "cpu", max_seconds=min(left, PREVIEW_EVERY_S), stop=stop.is_set,
                        progress=False, generator=g)                                     # Algorithm 1
        trained += time.perf_counter() - chunk
        elapsed = time.perf_counter() - start
        yield (loss_figure(losses), playground_figure(data, _preview(model, N_PREVIEW, s["seed"]), x_t, t_view, s["T"],
                                                      _caption(len(losses), elapsed)),
               f"training: step {len(losses)}, {elapsed:.1f} s of {s['seconds']} s, loss {np.mean(losses[-50:]):.4f}",
               *keep)
    yield (*_verdict(model, data, x_t, t_view, s, losses, time.perf_counter() - start,
                     stop.reason if stop.is_set() else None), *keep)


playground_stop = stopper("playground")


@functools.lru_cache(maxsize=1)
def example_run():
    """The shipped example run of the default recipe: dict(model, data, losses, recipe), as a session holds a run."""
    tensors = load_file(EXAMPLE)
    recipe = json.loads(tensors.pop("recipe").numpy().tobytes().decode())
    losses = tensors.pop("losses").tolist()
    model = points.recipe_model(recipe, seed=recipe["seed"])
    model.load_state_dict(tensors)
    data = points.make(recipe["shape"], N_DATA, generator=torch.Generator().manual_seed(recipe["seed"]))
    return dict(model=model.eval(), data=data, losses=losses, recipe=recipe)


def write_example(path=EXAMPLE, steps=EXAMPLE_STEPS, seed=0):
    """Train the default recipe for `steps` steps and write the example run the tab opens on."""
    recipe = dict(DEFAULTS, seed=seed)
    data = points.make(recipe["shape"], N_DATA, generator=torch.Generator().manual_seed(seed))
    model = points.recipe_model(recipe, seed=seed)
    g = torch.Generator().manual_seed(seed)
    losses = train(model, points.loader(data, recipe["batch"], seed=seed), None,
                   torch.optim.Adam(model.parameters(), lr=recipe["lr"]), "cpu", max_steps=steps, progress=True, generator=g)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({**{k: v.contiguous() for k, v in model.state_dict().items()}, "losses": torch.tensor(losses),
               "recipe": torch.frombuffer(bytearray(json.dumps(recipe).encode()), dtype=torch.uint8)}, path)
    return path


def playground_opening():
    """What the tab opens on: the example run (loss, samples over the data, its verdict) and a few of its
    trajectories, made once (openers.py)."""
    def make():
        run = example_run()
        r = run["recipe"]
        model, data = run["model"], run["data"]
        t_view = DEFAULT_T_VIEW
        g = torch.Generator().manual_seed(r["seed"])
        x_t = sample_xt(data, torch.full((len(data),), t_view), None, model.schedule.alpha_bar, generator=g)  # Eq. (4)
        loss, cloud, text = _verdict(model, data, x_t, t_view, r, run["losses"], None)
        text = text.replace(
            "The model is kept: draw trajectories below.",
            f"*The tab opens on this example run of the default settings ({EXAMPLE_STEPS} steps, shipped with the app); "
            "press Start training to train your own.*")
        return (loss, cloud, text, *_paths(model, data.numpy(), *PATHS_OWN, DEFAULT_PATHS, 0))

    return openers.cached(("playground", EXAMPLE), make)


@shares_cores
def playground_paths(sampler, steps, n_paths, seed=0, request: gr.Request = None):
    """Reverse trajectories of a few points of this session's 2-D model (the example run's before the visitor trains
    one), drawn as paths: (figure, markdown)."""
    session = registry().peek(session_id(request))
    run = (session.playground if session else None) or example_run()
    if not run.get("model"):
        raise gr.Error("no 2-D model yet: press Start training first")
    steps = check_steps(sampler, steps)
    n_paths = check_int("number of paths", n_paths, "paths")
    figure, text = _paths(run["model"], run["data"].numpy(), sampler, steps, n_paths, check_int("seed", seed))
    return figure, text + ("" if session and session.playground else " (the example run: train your own above)")


def _paths(model, data, sampler, steps, n_paths, seed):
    """n_paths reverse trajectories of `model` from seeded x_T, drawn over the data: (figure, markdown)."""
    steps = None if steps is None or sampler_row(sampler).all_steps else min(steps, model.T)   # the slider goes to 1000
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_paths, 2, generator=g)                                             # Alg. 2, line 1
    trajectory = [x]
    for step in sample_steps(model, x, sampler=sampler, steps=steps, clip_x0=False, generator=g):
        trajectory.append(step.x_prev)
    paths = torch.stack(trajectory).numpy()                                              # [steps + 1, n, 2]
    name = f"{sampler_row(sampler).short}, {len(trajectory) - 1} steps"
    return (pictured(paths_figure(data, paths, f"{name}: from x_T (circle) to x_0 (dot)"),
                     f"{n_paths} reverse trajectories of the 2-D model ({name}) from x_T to x_0, over the data"),
            f"{n_paths} trajectories, {len(trajectory) - 1} steps each. DDPM's paths jitter (fresh noise z at every "
            "step); DDIM's and DPM-Solver++'s are smooth (deterministic).")


def build():
    """The tab in the current Blocks, its events wired; returns its Parts (`opening`: the event that shows the example
    run, for the page's load event)."""
    ui, d = Parts(), DEFAULTS
    with gr.Tab("6. 2-D playground", id="playground"):
        intro(LEADS["playground"], PLAYGROUND)
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                with go_row():
                    ui.go = go_button("playground", "▶ Start training")
                    ui.stop = gr.Button("Stop (keeps the model)", variant="stop", min_width=80)
                ui.shape = gr.Radio([(SHAPE_LABELS.get(shape, shape), shape) for shape in points.SHAPES], value=d["shape"],
                                    label="data")
                ui.word = gr.Textbox(value="DDPM", label="text (for 'text': up to 12 ASCII characters)", max_length=12)
                with gr.Accordion("my drawing (for 'my drawing')", open=False):
                    ui.drawing = CheckedSketchpad(label="draw a shape", type="pil", height=260, canvas_size=(280, 280))
                with gr.Row():
                    ui.schedule = gr.Radio(list(SCHEDULES), value=d["schedule"], label="schedule")
                    ui.T = gr.Slider(*LIMITS["pg_T"], value=d["T"], step=1, label="T", elem_id="pg_T")
                with gr.Row():
                    ui.beta_start = gr.Number(value=d["beta_start"], label="beta_start (linear, sigmoid)")
                    ui.beta_end = gr.Number(value=d["beta_end"], label="beta_end (linear, sigmoid)")
                with gr.Row():
                    ui.width = gr.Slider(*LIMITS["width"], value=d["width"], step=8, label="network width")
                    ui.depth = gr.Slider(*LIMITS["depth"], value=d["depth"], step=1, label="depth")
                with gr.Row():
                    ui.lr = gr.Number(value=d["lr"], label="learning rate")
                    ui.batch = gr.Slider(*LIMITS["pg_batch"], value=d["batch"], step=8, label="batch size")
                ui.seconds = gr.Slider(*LIMITS["pg_seconds"], value=d["seconds"], step=1, label="training seconds",
                                       elem_id="pg_seconds")
                ui.t_view = gr.Slider(*T_VIEW, value=DEFAULT_T_VIEW, step=1, label="show the forward process at t")
            with gr.Column(scale=3):
                ui.points = image("samples over the data · the forward process", main=True, height=400,
                                  elem_id="playground-main", show_label=False)
                ui.status = gr.Markdown("*Opening the example run ...*", elem_id="pg_status")
                ui.loss = image("loss", show_label=False, height=300)
                gr.Markdown("#### Reverse trajectories of a few points")
                with gr.Row():
                    ui.sampler = gr.Radio(SAMPLER_CHOICES, value=PATHS_OWN[0], label="sampler")
                    ui.steps = gr.Slider(*LIMITS["steps"], value=PATHS_OWN[1], step=1, label=f"steps ({FEW_STEPS})")
                    ui.n_paths = gr.Slider(*LIMITS["paths"], value=DEFAULT_PATHS, step=1, label="paths")
                ui.draw = gr.Button("Draw trajectories", elem_id="pg_draw")
                with gr.Row():
                    ui.paths = image("trajectories", elem_id="pg_paths", show_label=False)
                    ui.paths_text = gr.Markdown()
        code(*SOURCES["playground"])

    shown = [ui.loss, ui.points, ui.status, ui.paths, ui.paths_text]
    ui.go.click(playground_train, inputs_kwargs=by_name(playground_train, ui.shape, ui.word, ui.drawing, ui.schedule, ui.T,
                                                        ui.beta_start, ui.beta_end, ui.width, ui.depth, ui.lr, ui.batch,
                                                        ui.seconds, ui.t_view),
                outputs=shown, api_name="playground_train", show_progress="minimal", **training_job())
    ui.opening = dict(fn=playground_opening, outputs=shown, api_name="playground_opening", **openers_job())
    ui.stop.click(playground_stop, api_name="playground_stop", queue=False)
    ui.draw.click(playground_paths, inputs_kwargs=by_name(playground_paths, ui.sampler, ui.steps, ui.n_paths),
                  outputs=[ui.paths, ui.paths_text], api_name="playground_paths", **sampling_job())
    return ui


if __name__ == "__main__":
    print(write_example())
