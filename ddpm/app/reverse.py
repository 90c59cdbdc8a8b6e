"""Tab 2: the reverse process, streamed step by step while it runs, then played as an animation a room can follow.

The pictures are the true trajectory of `ddpm.sample_steps`, which calls `ddpm_step` / `ddim_step` /
`dpmpp_2m_step`: the code panel of this tab shows exactly those functions. However fast a run was computed, its
recorded frames (x_t beside x0_hat) play in ANIMATION_S seconds, looped, at the speed the visitor picks. The tab
opens on such a run of the selected model with its default settings (openers.py). `build()` lays the tab out and
wires it.
"""
import time
from collections import deque

import gradio as gr
import numpy as np
import torch
from PIL import Image, ImageDraw

from ..data import to_uint8, to_unit_range
from ..sampling import SAMPLERS, sample_steps, timesteps
from . import openers
from .cores import shares_cores
from .explain import LATEX, LEADS, REVERSE, SOURCES
from .finetune import added_classes
from .images import grid_scale, show
from .inputs import LIMITS, UNCONDITIONAL, check_int, check_range, check_sampling, class_labels, class_names
from .jobs import holds_session, stopper
from .pickers import DEFAULT_GUIDANCE, sampler_for
from .registry import registry, session_id
from .widgets import (TQDM_PROGRESS, Parts, by_name, code, go_button, go_row, guidance_input, image, intro, measured_default,
                      model_input, openers_job, pictured, sampler_inputs, sampling_job, seed_input)

OWN = ("ddim", 50)         # the tab's (sampler, steps) where no quality-per-cost table is at hand
# A run the room can watch: a few-step sampler takes at least WATCH_STEPS steps here, WATCH_STEPS + 1 frames of x_t
# beside x0_hat (the quality-per-cost defaults take 6 to 25 steps, too few frames to watch the noise go).
WATCH_STEPS = 25
MAX_FRAMES = 100           # recorded frames per reverse run (for the scrub slider)
ANIMATION_FRAMES = 60      # frames of an animation at most: >= 33 ms each at 2 s (browsers slow down shorter GIF frames)
ANIMATION_S = (2, 6)       # the animation's length in seconds (the speed control), without the held last frame
DEFAULT_ANIMATION_S = 4
HOLD_MS = 1500             # the result is held before the animation starts again
GIF_SCALE = 4              # a 28 x 28 tile is 112 px in the animation; the page enlarges it further, pixelated
STREAM_EVERY_S = 0.25      # the reverse stream sends at most ~4 updates per second
DEFAULTS = dict(eta=0.0, guidance=DEFAULT_GUIDANCE, seed=0, batch=4)      # the tab's other settings at the start


def _x(t):
    """x_t's LaTeX; t = -1 is this package's name for the clean image (see ddpm/schedule.py)."""
    return f"x_{{{t}}}" if t >= 0 else "x_{-1}\\,(\\text{clean})"


def _alg2(c, step):
    return ("**Alg. 2, line 4:** "
            "$$x_{t-1} = \\frac{1}{\\sqrt{\\alpha_t}}\\Big(x_t - \\frac{\\beta_t}{\\sqrt{1-\\bar\\alpha_t}}"
            "\\,\\epsilon_\\theta(x_t, t)\\Big) + \\sigma_t z$$\n"
            f"$${_x(step.t_prev)} = {c['1/sqrt(alpha_t)']:.4f}\\,\\big({_x(step.t)}"
            f" - {c['beta_t/sqrt(1-alpha_bar_t)']:.4f}\\,\\epsilon_\\theta\\big) + {c['sigma_t']:.4f}\\,z$$")


def _dpm_solver(c, step):
    D = ("\\hat x_0" if c["order"] == 1 else
         f"\\big(1 + \\tfrac{{1}}{{2r}}\\big)\\hat x_0 - \\tfrac{{1}}{{2r}}\\hat x_0^{{\\text{{prev}}}},\\ r = {c['r']:.3f}")
    return (f"**DPM-Solver++(2M), Lu et al. (2022), order {c['order']}:** "
            "$$x_{t'} = \\frac{\\sigma_{t'}}{\\sigma_t}\\,x_t + \\alpha_{t'}\\big(1 - e^{-h}\\big)\\,D,"
            "\\qquad h = \\lambda_{t'} - \\lambda_t,\\ \\lambda = \\log(\\alpha / \\sigma)$$\n"
            f"$${_x(step.t_prev)} = {c['sigma_prev/sigma_t']:.4f}\\,{_x(step.t)} + "
            f"{c['alpha_prev(1-e^-h)']:.4f}\\,D,\\qquad D = {D}$$")


def _ddim(c, step):
    return ("**DDIM, Song et al. (2021) Eq. (12):** "
            "$$x_{t'} = \\sqrt{\\bar\\alpha_{t'}}\\,\\hat x_0 + \\sqrt{1-\\bar\\alpha_{t'}-\\sigma_t^2}"
            "\\,\\epsilon_\\theta(x_t, t) + \\sigma_t z$$\n"
            f"$${_x(step.t_prev)} = {c['sqrt(alpha_bar_prev)']:.4f}\\,\\hat x_0 + "
            f"{c['sqrt(1-alpha_bar_prev-sigma_t^2)']:.4f}\\,\\epsilon_\\theta + {c['sigma_t']:.4f}\\,z$$")


# Each step function reports the coefficients of its own update (Step.coefs); one of them names the formula shown.
FORMULAS = (("1/sqrt(alpha_t)", _alg2), ("alpha_prev(1-e^-h)", _dpm_solver), ("sqrt(alpha_bar_prev)", _ddim))


def _formula(step):
    """The update this step made, as a formula and with its numbers; a step of another kind lists its coefficients."""
    c = step.coefs
    for key, formula in FORMULAS:
        if key in c:
            return formula(c, step)
    return "$$" + ",\\ ".join(f"\\text{{{k}}} = {v:.4f}" for k, v in c.items()) + "$$"


def _step_text(step, stopped=None, *, shown=None, model=None):
    """The step's heading (which model made it; when it was stopped, why; when the run is played, how) and formula."""
    head = (f"### step {step.i + 1} / {step.n_steps} &nbsp; t = {step.t} → "
            f"{'the clean image' if step.t_prev < 0 else step.t_prev}" + (f"  — **stopped** ({stopped})" if stopped else ""))
    made = f"*made by `{model}`*" if model else ""
    if shown:
        made += (", " if made else "") + f"*played as {shown[0]} frames in {shown[1]:.1f} s, looped (Replay, speed below)*"
    return head + (f"\n\n{made}" if made else "") + "\n\n" + _formula(step)


def watchable(choice):
    """A (sampler, steps) with at least WATCH_STEPS steps for a few-step sampler: the tab's runs are watched."""
    sampler, steps = choice
    return sampler, steps if SAMPLERS[sampler].all_steps else max(int(steps), WATCH_STEPS)


def reverse_class_choices(model, request: gr.Request = None, progress=TQDM_PROGRESS):
    """The class picker for `model`: "unconditional" plus the class names."""
    names = class_names(registry().model(model, session_id(request))) if model else []
    added = added_classes(model, request)                         # a fine-tune's new class is picked
    return gr.update(choices=[UNCONDITIONAL] + names, value=added[-1] if added else names[0] if names else UNCONDITIONAL)


def reverse_sampler(model, guidance):
    """On a new model: the tab's sampler and steps at that model's measured default, made watchable."""
    sampler, steps = sampler_for(OWN)(model, guidance)
    return sampler, gr.update(value=watchable((sampler["value"], steps["value"]))[1])


def walk(ddpm, y, sampler, steps, eta, guidance, seed, batch, frames, stop=None):
    """The reverse run from seed's x_T: yields each Step of `sample_steps` and records about MAX_FRAMES of them in
    `frames` as (x_t uint8, x0_hat uint8, caption), the result last. Ends early once `stop` is set."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *ddpm.sample_shape), generator=g)                              # Alg. 2, line 1
    n = len(timesteps(sampler, ddpm.T, steps))
    stride, step = max(1, n // MAX_FRAMES), None
    for step in sample_steps(ddpm, x, y=y, sampler=sampler, steps=steps, eta=eta, guidance_scale=guidance, generator=g):
        final = step.i == n - 1 or (stop is not None and stop.is_set())
        if step.i % stride == 0 or final:
            frames.append((to_uint8(step.x_t), to_uint8(step.x0_hat), f"step {step.i + 1}/{n}, t = {step.t}"))
        yield step
        if stop is not None and stop.is_set():
            break
    frames.append((to_uint8(step.x_prev), to_uint8(step.x0_hat), f"result after step {step.i + 1}/{n}"))


def pair(x_t, x0_hat, scale, caption=None):
    """x_t beside x0_hat (images [B, 1, H, W] in [-1, 1]) as one grey picture, with a caption above when given."""
    a, b = show(x_t.clamp(-1, 1), scale).convert("L"), show(x0_hat, scale).convert("L")
    gap, top = 6 * scale, (8 * scale if caption else 0)
    canvas = Image.new("L", (a.width + gap + b.width, a.height + top), 255)
    canvas.paste(a, (0, top))
    canvas.paste(b, (a.width + gap, top))
    if caption:
        ImageDraw.Draw(canvas).text((scale, scale), caption, fill=0, font_size=5 * scale)
    return canvas


def animation(frames, path, seconds):
    """The recorded frames as a looping GIF: at most ANIMATION_FRAMES of them, evenly picked, in `seconds`, the
    result held HOLD_MS. Returns (path, frames in it, seconds it takes without the hold)."""
    picks = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), ANIMATION_FRAMES)).round().astype(int))
    pictures = [pair(to_unit_range(xt), to_unit_range(x0), GIF_SCALE, f"x_t | x0_hat   {caption}")
                for xt, x0, caption in (frames[k] for k in picks)]
    gaps = max(1, len(pictures) - 1)
    ms = 10 * round(100 * seconds / gaps)                       # GIF delays are in 10 ms: round, but stay in ANIMATION_S
    ms += 10 * ((ms * gaps < 1000 * ANIMATION_S[0]) - (ms * gaps > 1000 * ANIMATION_S[1]))
    durations = [max(20, ms)] * (len(pictures) - 1) + [HOLD_MS]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=durations, loop=0)
    return path, len(pictures), sum(durations[:-1]) / 1000


def judge_reading(model, sid, x):
    """What the model's judge classifier reads in the images x [B, C, H, W], as class names; None without a judge."""
    reg = registry()
    base = reg.base_folder(model, sid)
    judge = reg.judge(base) if base in reg.bundled() else None
    if judge is None:
        return None
    names = (reg.config(base).get("class_names") or [])
    with torch.no_grad():
        seen = judge.classify(x).tolist()
    return [names[c].split(" - ")[0] if 0 <= c < len(names) else "none of these" if c < 0 else str(c) for c in seen]


def alt_text(n_images, class_name, shown, seconds, reading, T):
    """The animation's alt text: what it shows, and what the judge reads in the result."""
    what = "unconditional samples" if class_name in (None, UNCONDITIONAL) else f"samples of class {class_name}"
    read = f"; the judge classifier reads the results as {', '.join(reading)}" if reading else ""
    return (f"Animation of the reverse process, {shown} frames in {seconds:.1f} s: {n_images} {what}, x_t on the left "
            f"from pure noise at t = {T - 1} to the final image, the predicted x0_hat on the right{read}.")


def _finished(model, sid, ddpm, class_name, frames, step, stop_reason, seconds, path):
    """What a finished (or stopped) run shows: (animation, step text, scrub slider, download)."""
    gif, shown, played = animation(frames, path, seconds)
    reading = judge_reading(model, sid, step.x_prev.clamp(-1, 1))
    alt = alt_text(len(step.x_prev), class_name, shown, played, reading, ddpm.T)
    return (pictured(gif, alt), _step_text(step, stop_reason, shown=(shown, played), model=model),
            gr.update(minimum=0, maximum=len(frames) - 1, value=len(frames) - 1, step=1, interactive=True), gif)


@shares_cores
@holds_session("reverse")
def reverse_run(model, class_name, sampler, steps, eta, guidance, seed, batch, seconds=DEFAULT_ANIMATION_S,
                request: gr.Request = None):
    """Stream one reverse run: yields (picture: x_t beside x0_hat, step markdown, scrub slider, GIF file).

    While it runs the picture is the current step; at the end it is the whole run as an animation of `seconds`
    (the GIF, also offered for download). The frames are the true trajectory of `sample_steps`; about MAX_FRAMES
    steps are recorded for scrubbing. The session's Stop button sets an Event that ends the loop after the current step.
    """
    sid, reg = session_id(request), registry()
    ddpm = reg.model(model, sid)
    batch = check_int("batch", batch)
    seconds = check_range("animation length (s)", seconds, bounds=ANIMATION_S)
    steps, eta, guidance, seed = check_sampling(ddpm, sampler, steps, eta, guidance, seed)
    y = class_labels(ddpm, class_name, batch)
    if y is None:
        guidance = 1.0              # null-class samples: guidance has nothing to push towards
    session = reg.session(sid)
    stop = session.stops["reverse"]
    frames = session.frames = []          # this run's own list: a second run at once records into its own
    scale, last, step = grid_scale(batch), 0.0, None
    for step in walk(ddpm, y, sampler, steps, eta, guidance, seed, batch, frames, stop):
        final = step.i == step.n_steps - 1 or stop.is_set()
        if step.i == 0 or final or time.perf_counter() - last > STREAM_EVERY_S:
            last = time.perf_counter()
            where = f"step {step.i + 1}/{step.n_steps}, t = {step.t}"
            yield (pictured(pair(step.x_t, step.x0_hat, scale, f"x_t | x0_hat   {where}"),
                            f"{where}: x_t on the left, the predicted x0_hat on the right"), _step_text(step, model=model),
                   gr.update(), gr.update())
    yield _finished(model, sid, ddpm, class_name, frames, step, stop.reason, seconds,
                    session.file(f"reverse_{int(time.time() * 1000)}.gif"))


reverse_stop = stopper("reverse")


def reverse_animate(seconds, request: gr.Request = None):
    """This session's last run played again, in `seconds`: (animation, download). Replay and the speed control."""
    session = registry().peek(session_id(request))
    frames = session.frames if session else []
    if not frames:
        raise gr.Error("nothing recorded yet: press Start first")
    seconds = check_range("animation length (s)", seconds, bounds=ANIMATION_S)
    gif, shown, played = animation(frames, session.file(f"reverse_{int(time.time() * 1000)}.gif"), seconds)
    return pictured(gif, f"Animation of your last reverse run, {shown} frames in {played:.1f} s."), gif


def reverse_scrub(frame, request: gr.Request = None):
    """Recorded frame `frame` of this session's last run: (x_t beside x0_hat, caption)."""
    session = registry().peek(session_id(request))
    frames = session.frames if session else []
    if not frames:
        raise gr.Error("nothing recorded yet: press Start first")
    frame = int(frame or 0)
    if not 0 <= frame < len(frames):
        raise gr.Error(f"frame {frame} is outside [0, {len(frames) - 1}]")
    xt, x0, caption = frames[frame]
    return (pictured(pair(to_unit_range(xt), to_unit_range(x0), grid_scale(xt.shape[0]), f"x_t | x0_hat   {caption}"),
                     f"recorded frame {frame}: {caption}; x_t on the left, the predicted x0_hat on the right"),
            f"### recorded frame {frame}: {caption}")


def reverse_opening(model, request: gr.Request = None):
    """What the tab opens on for `model`: a run with the tab's default settings (the first class, the model's
    watchable default sampler), played as an animation; made once per model (openers.py). Returns what a finished
    run shows: (animation, step text, scrub slider, download)."""
    sid = session_id(request)
    if not model:
        return gr.update(), gr.update(), gr.update(), gr.update()
    ddpm = registry().model(model, sid)
    names = class_names(ddpm)
    class_name = names[0] if names else UNCONDITIONAL
    sampler, steps = watchable(registry().sampler_default(model, DEFAULTS["guidance"]) or OWN)
    settings = dict(DEFAULTS, sampler=sampler, steps=None if SAMPLERS[sampler].all_steps else steps)

    def make():
        y = class_labels(ddpm, class_name, settings["batch"])
        guidance = settings["guidance"] if y is not None else 1.0
        frames = []
        step = deque(walk(ddpm, y, sampler, settings["steps"], settings["eta"], guidance, settings["seed"],
                          settings["batch"], frames), maxlen=1)[0]                       # the run's last step
        name = f"reverse_{abs(hash((model, sid, time.time()))):x}.gif"
        animation_, text, _, gif = _finished(model, sid, ddpm, class_name, frames, step, None, DEFAULT_ANIMATION_S,
                                             openers.path(name))
        note = (f"\n\n*The tab opens on this run with its default settings ({class_name}, seed {settings['seed']}); "
                "press Start to make your own.*")
        return animation_, text + note, gif

    animation_, text, gif = openers.cached(openers.shared_key(model, sid, "reverse", tuple(settings.items())), make)
    return animation_, text, gr.update(value=0, interactive=False), gif


def build():
    """The tab in the current Blocks, its events wired; returns its Parts (`model`, the picker; `run`, the Start event)."""
    ui = Parts()
    sampler, steps = watchable(measured_default() or OWN)
    with gr.Tab("2. Reverse", id="reverse"):
        intro(LEADS["reverse"], REVERSE)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                with go_row():
                    ui.start = go_button("reverse", "▶ Start")
                    ui.stop = gr.Button("Stop", variant="stop", min_width=80)
                ui.model = model_input()
                ui.class_name = gr.Dropdown(label="class", choices=[UNCONDITIONAL], value=UNCONDITIONAL,
                                            allow_custom_value=True)
                ui.sampler, ui.steps = sampler_inputs("rev", (sampler, steps), from_table=False)
                with gr.Accordion("guidance, seed, batch, η", open=False):
                    ui.guidance = guidance_input()
                    with gr.Row():
                        ui.seed = seed_input()
                        ui.batch = gr.Slider(*LIMITS["batch"], value=DEFAULTS["batch"], step=1, label="batch")
                    ui.eta = gr.Slider(*LIMITS["eta"], value=DEFAULTS["eta"], step=0.05, label="DDIM η (0 = deterministic)")
            with gr.Column(scale=3):
                ui.picture = image("x_t (left) and the predicted x̂_0 (right)", main=True, height=420,
                                   elem_id="reverse-main", show_label=False)     # each frame carries its caption
                with gr.Row(equal_height=True):
                    ui.seconds = gr.Slider(*ANIMATION_S, value=DEFAULT_ANIMATION_S, step=0.5, scale=3,
                                           label="animation length (s): the whole run, however fast it was computed",
                                           elem_id="rev_seconds")
                    ui.replay = gr.Button("↻ Replay", scale=1, min_width=100, elem_id="rev_replay")
                    ui.gif = gr.DownloadButton("Download the GIF", scale=1, min_width=120, elem_id="rev_gif")
                ui.text = gr.Markdown("*Opening a run of this model ...*", latex_delimiters=LATEX, elem_classes="formula")
                ui.frame = gr.Slider(0, 1, value=0, step=1, label="scrub the recorded frames (after a run)",
                                     interactive=False)
        code(*SOURCES["reverse"])

    shown = [ui.picture, ui.text, ui.frame, ui.gif]
    ui.run = ui.start.click(reverse_run, inputs_kwargs=by_name(reverse_run, ui.model, ui.class_name, ui.sampler, ui.steps,
                                                               ui.eta, ui.guidance, ui.seed, ui.batch, ui.seconds),
                            outputs=shown, api_name="reverse", show_progress="minimal", **sampling_job())
    # a new model stops the run of the old one and shows the new model's opening run in its place
    ui.model.change(reverse_stop, api_name=False, queue=False, cancels=[ui.run]).then(
        reverse_opening, inputs_kwargs=by_name(reverse_opening, ui.model), outputs=shown, api_name="reverse_opening",
        show_progress="minimal", **openers_job())
    ui.model.change(reverse_class_choices, inputs_kwargs=by_name(reverse_class_choices, ui.model),
                    outputs=[ui.class_name], api_name="reverse_classes")
    ui.model.change(reverse_sampler, inputs_kwargs=by_name(reverse_sampler, ui.model, ui.guidance),
                    outputs=[ui.sampler, ui.steps], api_name=False, show_progress="hidden")
    ui.stop.click(reverse_stop, api_name="reverse_stop", queue=False)
    for again in (ui.replay.click, ui.seconds.release):
        again(reverse_animate, inputs_kwargs=by_name(reverse_animate, ui.seconds), outputs=[ui.picture, ui.gif],
              api_name=False, concurrency_limit=4, concurrency_id="scrub")
    ui.frame.release(reverse_scrub, inputs_kwargs=by_name(reverse_scrub, ui.frame), outputs=[ui.picture, ui.text],
                     api_name="reverse_scrub", concurrency_limit=4, concurrency_id="scrub")
    return ui
