"""Tab 2: the reverse process streamed step by step (Algorithm 2 or DDIM).

The stream shows the true trajectory of `ddpm.sample_steps`, which calls `ddpm_step` / `ddim_step`:
the code panel of this tab shows exactly those functions. `build()` lays the tab out and wires it.
"""
import time

import gradio as gr
import torch

from ..data import to_uint8
from ..sampling import sample_steps, timesteps
from .cores import shares_cores
from .explain import LATEX, REVERSE, SOURCES
from .images import frames_to_gif, grid_scale, show, show_uint8
from .inputs import LIMITS, UNCONDITIONAL, check_int, check_sampling, class_labels, class_names
from .jobs import holds_session, stopper
from .pickers import sampler_for
from .registry import registry, session_id
from .widgets import (TQDM_PROGRESS, Parts, by_name, code, guidance_input, image, model_input, sampler_inputs, sampling_job,
                      seed_input)

OWN = ("ddim", 50)         # the tab's (sampler, steps) where no quality-per-cost table is at hand
MAX_FRAMES = 100           # recorded frames per reverse run (for the scrub slider and the GIF)
STREAM_EVERY_S = 0.25      # the reverse stream sends at most ~4 updates per second


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


def _step_text(step, stopped=None):
    head = (f"### step {step.i + 1} / {step.n_steps} &nbsp; t = {step.t} → "
            f"{'the clean image' if step.t_prev < 0 else step.t_prev}" + (f"  — **stopped** ({stopped})" if stopped else ""))
    return head + "\n\n" + _formula(step)


def reverse_class_choices(model, request: gr.Request = None, progress=TQDM_PROGRESS):
    """The class picker for `model`: "unconditional" plus the class names."""
    names = class_names(registry().model(model, session_id(request))) if model else []
    return gr.update(choices=[UNCONDITIONAL] + names, value=names[0] if names else UNCONDITIONAL)


@shares_cores
@holds_session("reverse")
def reverse_run(model, class_name, sampler, steps, eta, guidance, seed, batch, request: gr.Request = None):
    """Stream one reverse run: yields (x_t image, x0_hat image, step markdown, scrub slider, GIF file).

    The frames are the true trajectory of `sample_steps`; every ~MAX_FRAMES-th step is recorded for
    scrubbing and the GIF. The session's Stop button sets an Event that ends the loop after the current step.
    """
    sid, reg = session_id(request), registry()
    ddpm = reg.model(model, sid)
    batch = check_int("batch", batch)
    steps, eta, guidance, seed = check_sampling(ddpm, sampler, steps, eta, guidance, seed)
    y = class_labels(ddpm, class_name, batch)
    if y is None:
        guidance = 1.0              # null-class samples: guidance has nothing to push towards
    session = reg.session(sid)
    stop = session.stops["reverse"]
    frames = session.frames = []          # this run's own list: a second run at once records into its own
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *ddpm.sample_shape), generator=g)                              # Alg. 2, line 1
    n = len(timesteps(sampler, ddpm.T, steps))
    stride, scale, last = max(1, n // MAX_FRAMES), grid_scale(batch), 0.0
    step = None
    for step in sample_steps(ddpm, x, y=y, sampler=sampler, steps=steps, eta=eta, guidance_scale=guidance, generator=g):
        final = step.i == n - 1 or stop.is_set()
        if step.i % stride == 0 or final:
            frames.append((to_uint8(step.x_t), to_uint8(step.x0_hat), f"step {step.i + 1}/{n}, t = {step.t}"))
        if step.i == 0 or final or time.perf_counter() - last > STREAM_EVERY_S:
            last = time.perf_counter()
            yield show(step.x_t, scale), show(step.x0_hat, scale), _step_text(step), gr.update(), gr.update()
        if stop.is_set():
            break
    frames.append((to_uint8(step.x_prev), to_uint8(step.x0_hat), f"result (after step {step.i + 1}/{n})"))
    gif = session.file(f"reverse_{int(time.time() * 1000)}.gif")
    frames_to_gif(frames, gif)
    yield (show(step.x_prev.clamp(-1, 1), scale), show(step.x0_hat, scale), _step_text(step, stop.reason),
           gr.update(minimum=0, maximum=len(frames) - 1, value=len(frames) - 1, step=1, interactive=True),
           gif)


reverse_stop = stopper("reverse")


def reverse_scrub(frame, request: gr.Request = None):
    """Recorded frame `frame` of this session's last run: (x_t image, x0_hat image, caption)."""
    session = registry().peek(session_id(request))
    frames = session.frames if session else []
    if not frames:
        raise gr.Error("nothing recorded yet: press Start first")
    frame = int(frame or 0)
    if not 0 <= frame < len(frames):
        raise gr.Error(f"frame {frame} is outside [0, {len(frames) - 1}]")
    xt, x0, caption = frames[frame]
    scale = grid_scale(xt.shape[0])
    return show_uint8(xt, scale), show_uint8(x0, scale), f"### recorded frame {frame}: {caption}"


def build():
    """The tab in the current Blocks, its events wired; returns its Parts (`model`, the picker)."""
    ui = Parts()
    with gr.Tab("2. Reverse process", id="reverse"):
        gr.Markdown(REVERSE, latex_delimiters=LATEX)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                ui.model = model_input()
                ui.class_name = gr.Dropdown(label="class", choices=[UNCONDITIONAL], value=UNCONDITIONAL,
                                            allow_custom_value=True)
                ui.sampler, ui.steps = sampler_inputs("rev", OWN)
                ui.eta = gr.Slider(*LIMITS["eta"], value=0.0, step=0.05, label="DDIM η (0 = deterministic)")
                ui.guidance = guidance_input()
                with gr.Row():
                    ui.seed = seed_input()
                    ui.batch = gr.Slider(*LIMITS["batch"], value=4, step=1, label="batch")
                with gr.Row():
                    ui.start = gr.Button("Start", variant="primary", elem_id="rev_start")
                    ui.stop = gr.Button("Stop", variant="stop")
            with gr.Column(scale=3):
                ui.text = gr.Markdown("*Press Start.*", latex_delimiters=LATEX, elem_classes="formula")
                with gr.Row():
                    ui.xt = image("x_t", height=480, elem_id="rev_xt")
                    ui.x0 = image("predicted x̂_0", height=480)
                ui.frame = gr.Slider(0, 1, value=0, step=1, label="scrub the recorded frames (after a run)",
                                     interactive=False)
                ui.gif = gr.File(label="the run as an animated GIF")
        code(*SOURCES["reverse"])

    ui.model.change(reverse_class_choices, inputs_kwargs=by_name(reverse_class_choices, ui.model),
                    outputs=[ui.class_name], api_name="reverse_classes")
    pick = sampler_for(OWN)
    ui.model.change(pick, inputs_kwargs=by_name(pick, ui.model, ui.guidance), outputs=[ui.sampler, ui.steps],
                    api_name=False, show_progress="hidden")
    ui.start.click(reverse_run, inputs_kwargs=by_name(reverse_run, ui.model, ui.class_name, ui.sampler, ui.steps, ui.eta,
                                                      ui.guidance, ui.seed, ui.batch),
                   outputs=[ui.xt, ui.x0, ui.text, ui.frame, ui.gif], api_name="reverse", show_progress="minimal",
                   **sampling_job())
    ui.stop.click(reverse_stop, api_name="reverse_stop", queue=False)
    ui.frame.release(reverse_scrub, inputs_kwargs=by_name(reverse_scrub, ui.frame), outputs=[ui.xt, ui.x0, ui.text],
                     api_name="reverse_scrub", concurrency_limit=4, concurrency_id="scrub")
    return ui
