"""Handlers of tabs 2 and 3: the reverse process streamed step by step (Alg. 2 / DDIM), and class grids.

The stream shows the true trajectory of `ddpm.sampling.sample_steps`; the grid is exactly
`ddpm.sampling.sample(ddpm, n_samples, classes)`. Registry and input checks: ddpm/app_logic.py.
"""
import os
import threading
import time

import gradio as gr
import torch
from PIL import Image, ImageDraw

from .app_cores import shares_cores, take_share
from .app_logic import (UNCONDITIONAL, check_int, check_range, class_indices, grid_scale, registry, session_id,
                        show)
from .plots import image_grid, to_uint8
from .sampling import sample, sample_steps, timesteps

MAX_FRAMES = 100           # recorded frames per reverse run (for the scrub slider and the GIF)
STREAM_EVERY_S = 0.25      # the reverse stream sends at most ~4 updates per second


def _x(t):
    """x_t's LaTeX; t = -1 is this package's name for the clean image (see ddpm/schedule.py)."""
    return f"x_{{{t}}}" if t >= 0 else "x_{-1}\\,(\\text{clean})"


def _formula(sampler, step):
    c = step.coefs
    if sampler == "ddpm":
        return ("**Alg. 2, line 4:** "
                "$$x_{t-1} = \\frac{1}{\\sqrt{\\alpha_t}}\\Big(x_t - \\frac{\\beta_t}{\\sqrt{1-\\bar\\alpha_t}}"
                "\\,\\epsilon_\\theta(x_t, t)\\Big) + \\sigma_t z$$\n"
                f"$${_x(step.t_prev)} = {c['1/sqrt(alpha_t)']:.4f}\\,\\big({_x(step.t)}"
                f" - {c['beta_t/sqrt(1-alpha_bar_t)']:.4f}\\,\\epsilon_\\theta\\big) + {c['sigma_t']:.4f}\\,z$$")
    return ("**DDIM, Song et al. (2021) Eq. (12):** "
            "$$x_{t'} = \\sqrt{\\bar\\alpha_{t'}}\\,\\hat x_0 + \\sqrt{1-\\bar\\alpha_{t'}-\\sigma_t^2}"
            "\\,\\epsilon_\\theta(x_t, t) + \\sigma_t z$$\n"
            f"$${_x(step.t_prev)} = {c['sqrt(alpha_bar_prev)']:.4f}\\,\\hat x_0 + "
            f"{c['sqrt(1-alpha_bar_prev-sigma_t^2)']:.4f}\\,\\epsilon_\\theta + {c['sigma_t']:.4f}\\,z$$")


def _step_text(sampler, step, stopped=False):
    head = (f"### step {step.i + 1} / {step.n_steps} &nbsp; t = {step.t} → "
            f"{'the clean image' if step.t_prev < 0 else step.t_prev}" + ("  — **stopped**" if stopped else ""))
    return head + "\n\n" + _formula(sampler, step)


def _check_sampling(ddpm, sampler, steps, eta, guidance, seed):
    if sampler not in ("ddpm", "ddim"):
        raise gr.Error(f"sampler {sampler!r} is unknown; choose 'ddpm' or 'ddim'")
    steps = check_int("DDIM steps", steps, "ddim_steps") if sampler == "ddim" else None
    if steps is not None and steps > ddpm.T:
        raise gr.Error(f"DDIM steps = {steps} is outside the allowed range [1, {ddpm.T}] (T of this model)")
    return steps, check_range("eta", eta), check_range("guidance scale", guidance, "guidance"), check_int("seed", seed)


@shares_cores
def reverse_run(model, class_name, sampler, steps, eta, guidance, seed, batch, request: gr.Request = None):
    """Stream one reverse run: yields (x_t image, x0_hat image, step markdown, scrub slider, GIF file).

    The frames are the true trajectory of `sample_steps`; every ~MAX_FRAMES-th step is recorded for
    scrubbing and the GIF. The session's Stop button sets an Event that ends the loop after the current step.
    """
    sid, reg = session_id(request), registry()
    ddpm = reg.model(model, sid)
    batch = check_int("batch", batch)
    steps, eta, guidance, seed = _check_sampling(ddpm, sampler, steps, eta, guidance, seed)
    y = None
    if class_name and class_name != UNCONDITIONAL:
        y = torch.tensor(class_indices(ddpm, [class_name]) * batch)
    session = reg.session(sid)
    stop = session.stops["reverse"] = threading.Event()
    session.frames = []
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *ddpm.image_shape), generator=g)                              # Alg. 2, line 1
    n = len(timesteps(sampler, ddpm.T, steps))
    stride, scale, last = max(1, n // MAX_FRAMES), grid_scale(batch), 0.0
    step = None
    for step in sample_steps(ddpm, x, y=y, sampler=sampler, steps=steps, eta=eta, guidance_scale=guidance, generator=g):
        final = step.i == n - 1 or stop.is_set()
        if step.i % stride == 0 or final:
            session.frames.append((to_uint8(step.x_t), to_uint8(step.x0_hat), f"step {step.i + 1}/{n}, t = {step.t}"))
        if step.i == 0 or final or time.perf_counter() - last > STREAM_EVERY_S:
            last = time.perf_counter()
            yield show(step.x_t, scale), show(step.x0_hat, scale), _step_text(sampler, step), gr.update(), gr.update()
        if stop.is_set():
            break
    session.frames.append((to_uint8(step.x_prev), to_uint8(step.x0_hat), f"result (after step {step.i + 1}/{n})"))
    gif = os.path.join(session.workdir, f"reverse_{int(time.time() * 1000)}.gif")
    frames_to_gif(session.frames, gif)
    yield (show(step.x_prev.clamp(-1, 1), scale), show(step.x0_hat, scale), _step_text(sampler, step, stop.is_set()),
           gr.update(minimum=0, maximum=len(session.frames) - 1, value=len(session.frames) - 1, step=1, interactive=True),
           gif)


def reverse_stop(request: gr.Request = None):
    """Ask this session's running reverse run to stop after its current step."""
    event = registry().session(session_id(request)).stops.get("reverse")
    if event is not None:
        event.set()


def reverse_scrub(frame, request: gr.Request = None):
    """Recorded frame `frame` of this session's last run: (x_t image, x0_hat image, caption)."""
    frames = registry().session(session_id(request)).frames
    if not frames:
        raise gr.Error("nothing recorded yet: press Start first")
    frame = int(frame or 0)
    if not 0 <= frame < len(frames):
        raise gr.Error(f"frame {frame} is outside [0, {len(frames) - 1}]")
    xt, x0, caption = frames[frame]
    scale = grid_scale(xt.shape[0])
    return _from_uint8(xt, scale), _from_uint8(x0, scale), f"### recorded frame {frame}: {caption}"


def _from_uint8(imgs, scale):
    return show(torch.as_tensor(imgs).permute(0, 3, 1, 2).float().div(127.5).sub(1), scale)


def frames_to_gif(frames, path, scale=4):
    """Side-by-side x_t | x0_hat frames with their caption, as an animated GIF (last frame held longer)."""
    images = []
    for xt, x0, caption in frames:
        a, b = _from_uint8(xt, scale), _from_uint8(x0, scale)
        canvas = Image.new("RGB", (a.width + b.width + 20, a.height + 30), "white")
        canvas.paste(a, (0, 30))
        canvas.paste(b, (a.width + 20, 30))
        ImageDraw.Draw(canvas).text((4, 4), f"x_t | x0_hat   {caption}", fill="black", font_size=18)
        images.append(canvas.convert("P", palette=Image.ADAPTIVE))
    durations = [80] * (len(images) - 1) + [2000]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


# ---------------------------------------------------------------- tab 3: class-conditional grids

@shares_cores
def grid_run(model, classes, per_class, guidance, sampler, steps, seed, request: gr.Request = None,
             progress=gr.Progress(track_tqdm=True)):
    """`sample(ddpm, per_class, classes)` as a grid with one labelled row per class.

    Returns (grid image, judge markdown, PNG path).
    """
    sid, reg = session_id(request), registry()
    ddpm = reg.model(model, sid)
    if not classes:
        raise gr.Error("choose at least one class")
    classes = [classes] if isinstance(classes, str) else list(classes)
    check_int("number of classes", len(classes), "n_classes")
    idx = class_indices(ddpm, classes)
    per_class = check_int("samples per class", per_class, "per_class")
    steps, _, guidance, seed = _check_sampling(ddpm, sampler, steps, 0.0, guidance, seed)
    x = sample(ddpm, per_class, idx, sampler=sampler, steps=steps, guidance_scale=guidance,
               generator=torch.Generator().manual_seed(seed), progress=True,    # tqdm, shown by gr.Progress
               callback=take_share)                                    # this job's share of the cores, per step
    grid = image_grid(x, per_class, scale=5, row_labels=classes, label_width=190)
    path = os.path.join(reg.session(sid).workdir, f"grid_{int(time.time() * 1000)}.png")
    grid.save(path)
    base = reg.base_folder(model, sid)
    n_known = reg.config(base).get("num_classes") if base in reg.bundled() else None
    return grid, judge_report(reg.judge(base), x, idx, classes, per_class, n_known), path


def judge_report(judge, x, idx, classes, per_class, n_known=None):
    """A markdown table: per asked class, how many images the judge classifier assigns to that class."""
    if judge is None:
        return "*No judge classifier is available for this model, so the images are not checked.*"
    with torch.no_grad():
        pred = judge.classify(x).view(len(idx), per_class)
    lines, total, judged = [], 0, 0
    for k, (c, name) in enumerate(zip(idx, classes)):
        if n_known is not None and c >= n_known:
            lines.append(f"| {name} | not judged (a class the judge never saw) |")
            continue
        hits = int((pred[k] == c).sum())
        total, judged = total + hits, judged + per_class
        lines.append(f"| {name} | {hits} / {per_class} |")
    summary = f"\n\n**Total: {total} / {judged}** ({100 * total / judged:.0f}%)" if judged else ""
    return ("**Judge classifier** (a small CNN trained on the real dataset): how many images show the asked class\n\n"
            "| class | recognised |\n|---|---|\n" + "\n".join(lines) + summary)
