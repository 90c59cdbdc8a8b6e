"""Matplotlib figures of the app, drawn with the Agg backend and cached so a slider move stays fast.

Figures are `matplotlib.figure.Figure` objects (not pyplot), so nothing accumulates in pyplot's
registry; a cached figure only moves its "current t" marker and is redrawn under a lock.
"""
import functools
import threading

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from ..schedule import SCHEDULES, NoiseSchedule

plt_lock = threading.RLock()         # matplotlib is not thread-safe; Gradio runs handlers in threads
# Okabe-Ito colours, told apart with colour-blind eyes too, and a line style each, told apart without colour
COLORS = {"linear": "#0072B2", "cosine": "#E69F00", "sigmoid": "#009E73"}
STYLES = {"linear": "-", "cosine": "--", "sigmoid": ":"}
MARK = "#D55E00"                     # the current t, and the N(0, 1) density: Okabe-Ito vermillion
FONT = 13


def to_image(fig):
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())


class Blitted:
    """A figure drawn once in full; later frames restore that background and redraw only `artists`."""

    def __init__(self, fig, artists):
        self.fig, self.artists, self.background = fig, artists, None
        for a in artists:
            a.set_animated(True)

    def render(self):
        canvas = self.fig.canvas
        if self.background is None:
            canvas.draw()
            self.background = canvas.copy_from_bbox(self.fig.bbox)
        canvas.restore_region(self.background)
        for a in self.artists:
            self.fig.draw_artist(a)
        return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


@functools.lru_cache(maxsize=8)
def _schedule_fig(T):
    """alpha_bar_t and log-SNR of every schedule for this T, with a marker at the current t."""
    fig = Figure(figsize=(9, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.16, top=0.88, wspace=0.25)
    ax1, ax2 = fig.subplots(1, 2)
    t = np.arange(T)
    curves = {name: NoiseSchedule(name, T).alpha_bar.double().numpy() for name in SCHEDULES}
    for name, ab in curves.items():
        ax1.plot(t, ab, color=COLORS[name], ls=STYLES[name], label=name, lw=2.5)
        ax2.plot(t, np.log(ab / (1 - ab)), color=COLORS[name], ls=STYLES[name], label=name, lw=2.5)
    ax1.set_title(r"$\bar\alpha_t$ (fraction of signal variance kept)", fontsize=FONT)
    ax2.set_title(r"log-SNR $= \log(\bar\alpha_t / (1-\bar\alpha_t))$", fontsize=FONT)
    for ax in (ax1, ax2):
        ax.set_xlabel("t", fontsize=FONT)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=FONT - 2)
    ax1.legend(fontsize=FONT - 2)
    markers = [ax.axvline(0, color=MARK, lw=2, ls="-.") for ax in (ax1, ax2)]
    dots = [ax.plot([], [], "o", color=MARK, ms=9)[0] for ax in (ax1, ax2)]
    return Blitted(fig, markers + dots), markers, dots, curves


def schedule_figure(T, t, current):
    """PIL image of the schedule plots with t marked on the `current` schedule's curves."""
    with plt_lock:
        blit, markers, dots, curves = _schedule_fig(T)
        ab = curves[current][t]
        for line in markers:
            line.set_xdata([t, t])
        dots[0].set_data([t], [ab])
        dots[1].set_data([t], [np.log(ab / (1 - ab))])
        for d in dots:
            d.set_markerfacecolor(COLORS[current])
            d.set_markeredgecolor(MARK)
        return blit.render()


BINS = np.linspace(-4, 4, 41)


@functools.lru_cache(maxsize=1)
def _hist_fig():
    fig = Figure(figsize=(5.6, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.88)
    ax = fig.subplots()
    width = BINS[1] - BINS[0]
    bars = ax.bar(BINS[:-1], np.zeros(len(BINS) - 1), width=width, align="edge", alpha=0.6,
                  color=COLORS["linear"], label="pixels of $x_t$")
    (x_T_line,) = ax.step(BINS, np.zeros(len(BINS)), where="post", lw=2, color="tab:gray", label="pixels of $x_{T-1}$")
    z = np.linspace(-4, 4, 200)
    ax.plot(z, np.exp(-z ** 2 / 2) / np.sqrt(2 * np.pi), color=MARK, lw=2, ls="--", label="N(0, 1)")
    ax.set_xlim(-4, 4)
    ax.set_ylim(0, 1.6)
    ax.legend(fontsize=FONT - 3, loc="upper left")
    ax.tick_params(labelsize=FONT - 2)
    title = ax.set_title("", fontsize=FONT)
    return Blitted(fig, list(bars) + [x_T_line, title]), bars, x_T_line, title


def histogram_figure(x_t, x_T, t, T):
    """Histogram of x_t's pixels (and the outline of x_T's) against the N(0, 1) density."""
    with plt_lock:
        blit, bars, x_T_line, title = _hist_fig()
        density, _ = np.histogram(np.clip(x_t, -4, 4), bins=BINS, density=True)
        for bar, h in zip(bars, density, strict=True):
            bar.set_height(h)
        density_T, _ = np.histogram(np.clip(x_T, -4, 4), bins=BINS, density=True)
        x_T_line.set_ydata(np.append(density_T, density_T[-1]))
        title.set_text(f"pixel values of $x_{{{t}}}$ (T = {T})")
        return blit.render()


def loss_figure(losses):
    """Training loss per step (light) and its running mean over 20 steps (dark)."""
    with plt_lock:
        fig = Figure(figsize=(6, 3.4), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        if losses:
            steps = np.arange(1, len(losses) + 1)
            ax.plot(steps, losses, color="tab:blue", alpha=0.3, lw=1)
            k = max(1, min(20, len(losses) // 2))
            smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:], smooth, color="tab:blue", lw=2.5, label=f"mean of {k} steps")
            ax.legend(fontsize=FONT - 2)
        ax.set_xlabel("training step", fontsize=FONT)
        ax.set_ylabel(r"$\|\epsilon - \epsilon_\theta\|^2$", fontsize=FONT)
        ax.set_title("loss (Alg. 1, line 5)", fontsize=FONT)
        ax.grid(alpha=0.3)
        return to_image(fig)


def _points_axes(ax, title, lim=3.2):
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=FONT)
    ax.tick_params(labelsize=FONT - 3)
    ax.grid(alpha=0.25)


def playground_figure(data, samples, x_t, t, T, caption):
    """Two panels: the data (grey) with the model's samples (orange); the data noised to step t, q(x_t | x_0)."""
    data, x_t = np.asarray(data), np.asarray(x_t)
    with plt_lock:
        fig = Figure(figsize=(10, 4.6), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax1, ax2 = fig.subplots(1, 2)
        ax1.scatter(*data[:1500].T, s=4, color="0.65", label="data")
        if samples is not None:
            ax1.scatter(*np.asarray(samples).T, s=5, color="tab:orange", alpha=0.8, label="samples")
        ax1.legend(loc="upper right", fontsize=FONT - 3, markerscale=3)
        _points_axes(ax1, caption)
        ax2.scatter(*x_t[:1500].T, s=4, color="tab:blue")
        _points_axes(ax2, f"forward process: $x_t$ at t = {t} (T = {T})")
        return to_image(fig)


def paths_figure(data, paths, title):
    """Reverse trajectories [steps + 1, n, 2] drawn as lines from x_T (circle) to x_0 (dot), over the data."""
    with plt_lock:
        fig = Figure(figsize=(5.6, 5.2), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.scatter(*data[:1500].T, s=4, color="0.75")
        for k in range(paths.shape[1]):
            line = ax.plot(paths[:, k, 0], paths[:, k, 1], lw=1.2, alpha=0.85)[0]
            ax.plot(*paths[0, k], "o", mfc="none", color=line.get_color(), ms=6)
            ax.plot(*paths[-1, k], "o", color=line.get_color(), ms=5)
        _points_axes(ax, title)
        return to_image(fig)
