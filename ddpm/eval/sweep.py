"""Curves, measured (issue 19): class accuracy, Fréchet distance and diversity against steps and guidance scale.

A point samples n = per_class x K images, per_class of each of the K classes, with a fixed seed
(`evaluate.sample_balanced`: the same seed gives the same images), and asks the judge classifier
(ddpm/eval/judge.py) what it sees:
- accuracy: the fraction of images the judge assigns to their class, with the 95% Wilson score interval
  (Wilson 1927), which stays inside [0, 1] and keeps its coverage at small n;
- fd: the Fréchet distance between judge features of the images and of real reference images (metrics.py), with
  the 5-95% range of a bootstrap over the generated images (Efron 1979). A resample repeats images, which alone
  raises FD (at n = 20 by more than the spread), so the range is moved by that bias to sit around the estimate;
- diversity: the mean pairwise L2 distance between judge features of images of one class, averaged over the
  classes, with +-1.96 standard errors over the classes. It falls when guidance makes a class's images alike;
- fd_real: FD between n real images and the other real ones, the mean of REAL_DRAWS draws: what real images
  score at this n. FD is far from its large-n value at small n (at n = 20 it depends on the spread of the few
  images more than on their likeness to the data), so compare points with each other and with this line.

Points come out of generators as soon as they are measured, cheapest first (the app streams them; a run stopped
early has the cheap points); `python -m ddpm evaluate --sweep` drains the same generators at a larger n into
sweep.json beside the model.
"""
import json
import math
import os
import time

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from PIL import Image

from ..sampling import SAMPLERS, get_sampler
from .evaluate import calls_per_image, plot_style, sample_balanced, short_name
from .metrics import conditional_accuracy, frechet_distance, judge_features

STEP_GRID = (5, 10, 20, 50)                 # steps of the few-step samplers on the steps curve
GUIDANCE_GRID = (1.0, 1.5, 2.0, 3.0, 5.0)   # scales s of the guidance curve (s = 1: no guidance)
SWEEP_GUIDANCE = 2.0                        # the steps curve's scale in `evaluate --sweep`: the app's default
# the lines of the steps curve; a sampler that walks all T steps (DDPM) is one point
FEW_STEP_SAMPLERS = tuple(name for name, row in SAMPLERS.items() if not row.all_steps)
BOOTSTRAP = 20                              # resamples of the FD band
REAL_DRAWS = 5                              # real subsets averaged into fd_real
SWEEP_JSON = "sweep.json"                   # beside a model, written by `python -m ddpm evaluate --sweep`


def wilson_interval(k, n, z=1.96):
    """The Wilson score interval (lo, hi) of a proportion k / n; z = 1.96 gives 95%."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def fd_band(feats, real_feats, fd, *, resamples=BOOTSTRAP, generator=None):
    """(lo, hi): the 5-95% range of FD over bootstrap resamples of `feats`, moved by the bootstrap's bias
    (its mean minus `fd`) to sit around the estimate; never below 0."""
    n = len(feats)
    boot = torch.tensor([frechet_distance(feats[torch.randint(n, (n,), generator=generator)], real_feats)
                         for _ in range(resamples)], dtype=torch.float64)
    lo, hi = (boot - (boot.mean() - fd)).quantile(torch.tensor([0.05, 0.95], dtype=torch.float64)).tolist()
    return max(0.0, lo), max(0.0, hi)


def diversity(feats, labels, z=1.96):
    """(mean, lo, hi): the mean pairwise L2 distance of features within a class, averaged over the classes,
    +- z standard errors over the classes; Nones when no class has two images (per_class = 1)."""
    within = [torch.pdist(feats[labels == c].double()).mean() for c in labels.unique() if (labels == c).sum() >= 2]
    if not within:
        return None, None, None
    d = torch.stack(within)
    se = float(d.std() / math.sqrt(len(d))) if len(d) > 1 else 0.0
    return float(d.mean()), float(d.mean()) - z * se, float(d.mean()) + z * se


def real_vs_real(real_feats, n, seed, draws=REAL_DRAWS):
    """FD between n random real images and the other real ones, averaged over `draws` subsets; None when fewer
    than two images would be left on either side."""
    if n < 2 or len(real_feats) - n < 2:
        return None
    g = torch.Generator().manual_seed(seed)
    fds = []
    for _ in range(draws):
        perm = torch.randperm(len(real_feats), generator=g)
        fds.append(frechet_distance(real_feats[perm[:n]], real_feats[perm[n:]]))
    return sum(fds) / draws


def measure(ddpm, judge, real_feats, *, sampler, steps, guidance, per_class, seed, callback=None):
    """One point: per_class images of every class at these settings, judged; a row dict (see the module docstring)."""
    start = time.perf_counter()
    images, labels = sample_balanced(ddpm, per_class * ddpm.num_classes, sampler=sampler, steps=steps,
                                     guidance=guidance, seed=seed, callback=callback)
    n = len(images)
    accuracy, _ = conditional_accuracy(judge, images, labels)
    acc_lo, acc_hi = wilson_interval(round(accuracy * n), n)
    feats = judge_features(judge, images)
    fd = frechet_distance(feats, real_feats)
    fd_lo, fd_hi = fd_band(feats, real_feats, fd, generator=torch.Generator().manual_seed(seed))
    div, div_lo, div_hi = diversity(feats, labels)
    row = dict(sampler=sampler, steps=ddpm.T if get_sampler(sampler).all_steps else int(steps), guidance=float(guidance), n=n,
               seed=seed, accuracy=accuracy, acc_lo=acc_lo, acc_hi=acc_hi, fd=fd, fd_lo=fd_lo, fd_hi=fd_hi,
               diversity=div, div_lo=div_lo, div_hi=div_hi)
    return dict(row, calls=calls_per_image(row), seconds=time.perf_counter() - start)


def _points(ddpm, judge, real_images, cells, per_class, seed, callback):
    """measure() every (sampler, steps, guidance) of `cells` in order, yielding each row with the run's fd_real."""
    if ddpm.num_classes is None:
        raise ValueError("the curves measure class accuracy: this model is unconditional")
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be an integer >= 1, got {per_class!r}")
    real_feats = judge_features(judge, real_images)
    fd_real = real_vs_real(real_feats, per_class * ddpm.num_classes, seed)
    for sampler, steps, guidance in cells:
        row = measure(ddpm, judge, real_feats, sampler=sampler, steps=steps, guidance=guidance, per_class=per_class,
                      seed=seed, callback=callback)
        yield dict(row, fd_real=fd_real)


def steps_points(ddpm, judge, real_images, *, guidance, per_class, seed, samplers=FEW_STEP_SAMPLERS, steps=STEP_GRID,
                 with_ddpm=False, callback=None):
    """Yield one row per (sampler, steps) at this guidance, fewest steps first, then, with_ddpm, DDPM (Algorithm 2:
    all T steps, T network calls per image). real_images: the FD reference, [N, C, H, W] in [-1, 1]."""
    bad = [s for s in samplers if s not in FEW_STEP_SAMPLERS]
    if bad:
        raise ValueError(f"samplers {bad} have no steps curve; choose from {FEW_STEP_SAMPLERS} (DDPM: with_ddpm=True)")
    long = [k for k in steps if not 1 <= k <= ddpm.T]
    if long:
        raise ValueError(f"steps {long} are outside [1, {ddpm.T}] (T of this model)")
    cells = [(s, k, guidance) for k in sorted(steps) for s in samplers]
    cells += [("ddpm", ddpm.T, guidance)] if with_ddpm else []
    yield from _points(ddpm, judge, real_images, cells, per_class, seed, callback)


def guidance_points(ddpm, judge, real_images, *, sampler, steps, per_class, seed, scales=GUIDANCE_GRID, callback=None):
    """Yield one row per guidance scale s with this sampler and steps, s = 1 first (one network call per step,
    guided scales two). real_images: the FD reference, [N, C, H, W] in [-1, 1]."""
    steps = ddpm.T if get_sampler(sampler).all_steps else steps
    if not 1 <= steps <= ddpm.T:
        raise ValueError(f"steps = {steps} is outside [1, {ddpm.T}] (T of this model)")
    cells = sorted(((sampler, steps, s) for s in scales), key=lambda c: (c[2] != 1.0, c[2]))
    yield from _points(ddpm, judge, real_images, cells, per_class, seed, callback)


# ---------------------------------------------------------------------------------------------
# Plots and the file
# ---------------------------------------------------------------------------------------------

FONT = 13


def _values(rows, key, scale=1.0):
    return np.array([np.nan if r[key] is None else scale * r[key] for r in rows], dtype=float)


def _line(ax, rows, x, key, lo, hi, *, scale=1.0, label, color, marker="o", faded=False):
    """A line through the rows' `key` against `x` with its band (lo, hi) shaded; `faded`: a reference measurement
    drawn under the live points (dashed, hollow markers, a lighter band)."""
    xs = np.array([r[x] for r in rows], dtype=float)
    ax.fill_between(xs, _values(rows, lo, scale), _values(rows, hi, scale), color=color, alpha=0.07 if faded else 0.15,
                    lw=0)
    style = dict(ls="--", lw=1.5, mfc="none", alpha=0.6) if faded else dict(lw=2)
    ax.plot(xs, _values(rows, key, scale), marker=marker, color=color, ms=7, label=label, **style)


def _n_text(rows):
    ns = sorted({r["n"] for r in rows})
    return "n = " + "/".join(map(str, ns)) + " images per point" if ns else "no points yet"


def _figure(rows, title):
    fig = Figure(figsize=(12.5, 4.9), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    fig.suptitle(f"{title} ({_n_text(rows)})" if title else _n_text(rows), fontsize=FONT + 1)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=FONT - 1)
        if not rows:
            ax.text(0.5, 0.5, "measuring the first point ...", ha="center", va="center", transform=ax.transAxes,
                    fontsize=FONT, color="gray")
    return fig, axes


def _image(fig):
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.86, wspace=0.25)
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())


def _reference_text(rows, scale=False):
    """A reference line's legend: its n, and its guidance scale s where the x axis is not s."""
    return f"reference, n = {rows[0]['n']}" + (f", s = {rows[0]['guidance']:g}" if scale else "")


def _real_line(ax, rows):
    real = [r["fd_real"] for r in rows if r.get("fd_real") is not None]
    if real:
        ax.axhline(real[0], color="gray", ls=":", lw=2, label="real vs real images, same n")


def plot_steps(rows, title="", reference=None):
    """Accuracy and FD against sampling steps (log x), one line per sampler with its band, DDPM as one marker;
    `reference` (rows of another measurement, e.g. the bundled one) drawn faded underneath."""
    fig, (acc, fd) = _figure(rows, title)
    for faded, measured in ((True, reference or []), (False, rows)):
        for sampler in FEW_STEP_SAMPLERS:
            line = sorted((r for r in measured if r["sampler"] == sampler), key=lambda r: r["steps"])
            if line:
                label = SAMPLERS[sampler].label + (f" ({_reference_text(line, scale=True)})" if faded else "")
                style = dict(label=label, faded=faded, **plot_style(sampler))
                _line(acc, line, "steps", "accuracy", "acc_lo", "acc_hi", scale=100, **style)
                _line(fd, line, "steps", "fd", "fd_lo", "fd_hi", **style)
    for r in (r for r in rows if r["sampler"] not in FEW_STEP_SAMPLERS):
        style = plot_style(r["sampler"])
        for ax, key, lo, hi, scale in ((acc, "accuracy", "acc_lo", "acc_hi", 100), (fd, "fd", "fd_lo", "fd_hi", 1)):
            y = scale * r[key]
            # max(0, .): a band edge equal to the value can come out a rounding error past it
            ax.errorbar([r["steps"]], [y], yerr=[[max(0.0, y - scale * r[lo])], [max(0.0, scale * r[hi] - y)]],
                        fmt=style["marker"], ms=16, capsize=5, color=style["color"], label=SAMPLERS[r["sampler"]].label)
    _real_line(fd, rows)
    _finish((acc, fd), rows, sorted({r["steps"] for r in rows}), str, "sampling steps (log scale)",
            ("class accuracy (%), judge", "Fréchet distance (judge features)"),
            ("higher is better; band: 95% Wilson interval", "lower is better; band: bootstrap 5-95%"), log=True)
    return _image(fig)


def plot_guidance(rows, title="", reference=None):
    """Accuracy and diversity against the guidance scale s, one line per (sampler, steps), with their bands;
    `reference` (rows of another measurement, e.g. the bundled one) drawn faded underneath."""
    fig, (acc, div) = _figure(rows, title)
    for faded, measured in ((True, reference or []), (False, rows)):
        settings = sorted({(r["sampler"], r["steps"]) for r in measured})
        for k, (sampler, steps) in enumerate(settings):
            line = sorted((r for r in measured if (r["sampler"], r["steps"]) == (sampler, steps)),
                          key=lambda r: r["guidance"])
            style = dict(label=f"{SAMPLERS[sampler].label}, {steps} steps" + (f" ({_reference_text(line)})" if faded else ""),
                         color=plot_style(sampler)["color"] if k == 0 else f"C{k + len(SAMPLERS) - 1}", faded=faded,
                         marker="s" if faded else "o")
            _line(acc, line, "guidance", "accuracy", "acc_lo", "acc_hi", scale=100, **style)
            _line(div, line, "guidance", "diversity", "div_lo", "div_hi", **style)
    _finish((acc, div), rows, sorted({r["guidance"] for r in rows}), lambda s: f"{s:g}", "guidance scale s (1 = none)",
            ("class accuracy (%), judge", "mean distance within a class\n(judge features)"),
            ("higher is better; band: 95% Wilson interval", "diversity; band: ±1.96 standard errors over classes"))
    return _image(fig)


def _finish(axes, rows, ticks, tick_text, xlabel, ylabels, titles, *, log=False):
    """The two panels' x ticks (one per measured value), labels, titles and legends."""
    for ax, ylabel, title in zip(axes, ylabels, titles, strict=True):
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        if ticks:
            ax.set_xticks(ticks, [tick_text(t) for t in ticks])
        ax.set_xlabel(xlabel, fontsize=FONT)
        ax.set_ylabel(ylabel, fontsize=FONT)
        ax.set_title(title, fontsize=FONT - 1)
        if rows:
            ax.legend(fontsize=FONT - 3)


def format_points(rows):
    """The rows as a markdown table."""
    def band(r, key, lo, hi, fmt, scale=1.0):
        if r[key] is None:
            return "n/a (one image per class)"
        return f"{fmt.format(scale * r[key])} ({fmt.format(scale * r[lo])}-{fmt.format(scale * r[hi])})"
    lines = ["| sampler | steps | guidance s | calls / image | n | accuracy (95% CI) | FD (5-95%) | diversity (±1.96 SE) "
             "| time |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {short_name(r['sampler'])} | {r['steps']} | {r['guidance']:g} | "
                     f"{r['calls']} | {r['n']} | {band(r, 'accuracy', 'acc_lo', 'acc_hi', '{:.0f}%', 100)} | "
                     f"{band(r, 'fd', 'fd_lo', 'fd_hi', '{:.1f}')} | {band(r, 'diversity', 'div_lo', 'div_hi', '{:.2f}')} | "
                     f"{r['seconds']:.1f} s |")
    return "\n".join(lines)


# each part of sweep.json and the settings it must hold
PARTS = {"steps": ("guidance", "per_class", "n", "seed", "rows"),
         "guidance": ("sampler", "steps", "per_class", "n", "seed", "rows")}
# what every row of a part holds (measure() writes them; the app's table and plots read them)
ROW_KEYS = ("sampler", "steps", "guidance", "n", "accuracy", "acc_lo", "acc_hi", "fd", "fd_lo", "fd_hi", "diversity",
            "div_lo", "div_hi", "calls", "seconds")


def save_sweep(path, data):
    """Write a sweep ({"steps": {...}, "guidance": {...}, "command": ..., "judge": ...}, see PARTS) as JSON; the
    file is replaced whole, so a run killed mid-write leaves the previous one."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def load_sweep(path):
    """The sweep saved at `path`, or None when there is none; ValueError naming the file when a part it holds
    lacks a setting of PARTS or a row lacks a key of ROW_KEYS (a run stopped early may hold only the steps part)."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with the parts {list(PARTS)}, got {type(data).__name__}")
    for part, keys in PARTS.items():
        given = data.get(part, dict.fromkeys(keys))
        missing = [k for k in keys if not isinstance(given, dict) or k not in given]
        if missing:
            raise ValueError(f"{path}: the {part!r} part lacks {missing}; write it again with "
                             f"`python -m ddpm evaluate --sweep`")
        rows = given["rows"] if part in data else []
        if not isinstance(rows, list):
            raise ValueError(f"{path}: the {part!r} part's rows must be a list, got {type(rows).__name__}")
        for i, row in enumerate(rows):
            lacking = [k for k in ROW_KEYS if not isinstance(row, dict) or k not in row]
            if lacking:
                raise ValueError(f"{path}: row {i} of the {part!r} part lacks {lacking}; write it again with "
                                 f"`python -m ddpm evaluate --sweep`")
    return data
