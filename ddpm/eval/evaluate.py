"""`python -m ddpm evaluate`: conditional accuracy and Fréchet distance over samplers and guidance scales.

Every cell samples n images, an equal number per class, with a fixed seed, and reports what the judge
classifier (ddpm/eval/judge.py) makes of them. The floor row compares n real training images with n real
test images: no generator can be expected to beat it at the same n.

Two plans: `plan` (the guidance sweep of the model card) and `cost_plan` (quality per cost: each sampler at a
few step counts, at guidance 1 and 2, n = 1000), whose rows `choose_default` turns into the app's defaults and
`plot_cost` into FD against network calls per image.
"""
import json
import os
import time

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from tqdm.auto import tqdm

from ..sampling import SAMPLERS, get_sampler, sample
from .metrics import conditional_accuracy, frechet_distance, judge_features

GUIDANCE = (1.0, 2.0, 3.0, 5.0)
REFERENCE = ("ddim", 50)      # (sampler, steps): the model card's quality bars, and the yardstick of choose_default


def plan(n_sweep=100):
    """The cells of the default table: (sampler, steps, guidance, n).

    A full sweep at n_sweep for DDIM 10/25/50; DDIM-100 and DDPM-1000 (10 to 100 times the cost per
    image) at guidance 1 and 3 with fewer images; then DDIM-50 with n_bar images at guidance 1 and at
    the sweep's best guidance (added by `run`).
    """
    cells = [("ddim", s, g, n_sweep) for s in (10, 25, 50) for g in GUIDANCE]
    cells += [("ddim", 100, g, max(10, n_sweep // 2)) for g in (1.0, 3.0)]
    cells += [("ddpm", 1000, g, 10) for g in (1.0, 3.0)]
    return cells


# the quality-per-cost plan: (sampler, steps), cheapest first so that a run stopped early has the few-step rows;
# DPM++-25 (half DDIM-50's steps) fills the gap between 20 and 50 steps, where the rule's answer can fall
COST_SAMPLERS = (("dpmpp_2m", 6), ("ddim", 10), ("dpmpp_2m", 10), ("ddim", 20), ("dpmpp_2m", 20), ("dpmpp_2m", 25),
                 ("ddim", 50), ("ddpm", 1000))
COST_GUIDANCE = (1.0, 2.0)


def cost_plan(n=1000, guidance=COST_GUIDANCE):
    """The cells of the quality-per-cost table: every (sampler, steps) at every guidance, n images each."""
    return [(sampler, steps, g, n) for sampler, steps in COST_SAMPLERS for g in guidance]


def calls_per_image(row):
    """Network evaluations per image (NFE): one per step, two with guidance (the conditional and unconditional
    halves, which run as one batched forward pass of twice the batch)."""
    return row["steps"] * (1 if row["guidance"] == 1.0 else 2)


def cell_key(row):
    return (row["sampler"], int(row["steps"]), float(row["guidance"]), int(row["n"]), int(row["seed"]))


def load_rows(path):
    """The rows of an earlier run (a JSON list), or [] when there is none: `run(done=...)` skips them."""
    if not path or not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_rows(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
    os.replace(tmp, path)                       # a run killed mid-write leaves the previous file whole


def acceptable(rows, guidance, *, tolerance=0.05, reference=REFERENCE):
    """{(sampler, steps): row} of the rows at this guidance whose FD is within `tolerance` of the reference's
    (DDIM-50); None when the table has no reference row at this guidance."""
    at = [r for r in rows if r["guidance"] == guidance]
    ref = [r for r in at if (r["sampler"], r["steps"]) == reference]
    if not ref:
        return None
    return {(r["sampler"], r["steps"]): r for r in at if r["fd"] <= ref[0]["fd"] * (1 + tolerance)}


def _fewest(candidates):
    """The fewest steps (at one guidance, also the fewest network calls); ties (another sampler) go to the lower FD."""
    return min(candidates, key=lambda r: (r["steps"], r["fd"]))


def choose_default(rows, guidance, **kw):
    """(sampler, steps): the fewest steps whose FD is within 5% of DDIM-50's at this guidance (issue 15's rule);
    a tie (the same steps with another sampler) goes to the lower FD. None when the table lacks DDIM-50 here."""
    good = acceptable(rows, guidance, **kw)
    if good is None:
        return None
    best = _fewest(good.values())
    return best["sampler"], best["steps"]


QUALITY_COST_JSON = "quality_cost.json"        # written beside a model by `python -m ddpm evaluate --plan cost`


def default_for(folder, guidance, **kw):
    """choose_default on the quality-per-cost table beside a model (folder/quality_cost.json), or None without one."""
    rows = load_rows(os.path.join(folder, QUALITY_COST_JSON))
    return choose_default(rows, guidance, **kw) if rows else None


def plot_style(sampler):
    """{color, marker} of a sampler in every plot, by its place in SAMPLERS: the few-step samplers C0, C1, ...
    with round, square, ... markers, then the all-steps ones (Algorithm 2) as stars."""
    order = sorted(SAMPLERS, key=lambda name: SAMPLERS[name].all_steps)
    k = order.index(sampler)
    return dict(color=f"C{k}", marker="*" if SAMPLERS[sampler].all_steps else "os^Dv<>ph"[k % 9])


def plot_cost(rows, path, title=""):
    """FD (judge features) against network calls per image, one line per sampler, one panel per guidance."""
    scales = sorted({r["guidance"] for r in rows})
    fig = Figure(figsize=(5.2 * len(scales), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(scales), squeeze=False)
    for ax, g in zip(axes[0], scales, strict=True):
        for sampler, row in SAMPLERS.items():
            at_g = [r for r in rows if r["guidance"] == g and r["sampler"] == sampler]
            pts = sorted((calls_per_image(r), r["fd"], r["steps"]) for r in at_g)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], ms=8 if row.all_steps else 6, label=row.label,
                        **plot_style(sampler))
                for x, y, k in pts:
                    ax.annotate(str(k), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        floor = [r["fd_floor"] for r in rows if r["guidance"] == g]
        if floor:
            ax.axhline(floor[0], color="gray", ls=":", label="real vs real (floor)")
        ax.set_xscale("log")
        most = max((calls_per_image(r) for r in rows if r["guidance"] == g), default=10)
        ticks = [c for c in (5, 10, 20, 50, 100, 200, 500, 1000, 2000) if c <= 1.5 * most]
        ax.set_xticks(ticks, [str(c) for c in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("network calls per image (log; labels: steps)")
        ax.set_ylabel("Fréchet distance (judge features), lower is better")
        ax.set_title(f"guidance s = {g:g}" + (" (none)" if g == 1.0 else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def sample_balanced(ddpm, n, *, sampler, steps, guidance, seed, chunk=250, callback=None):
    """n images, n / num_classes per class, in chunks; returns (images, labels). callback: passed to `sample`
    (called after every step: the app's Stop)."""
    per_class = max(1, n // ddpm.num_classes)
    labels = torch.arange(ddpm.num_classes).repeat_interleave(per_class)
    images = []
    for k, start in enumerate(range(0, len(labels), chunk)):
        ys = labels[start:start + chunk]
        # sample(ddpm, 1, classes) draws one image per listed class, in the order given
        images.append(sample(ddpm, 1, ys.tolist(), sampler=sampler, steps=None if get_sampler(sampler).all_steps else steps,
                             guidance_scale=guidance, generator=torch.Generator().manual_seed(seed + k), callback=callback))
    return torch.cat(images), labels


def real_subset(dataset, n, seed):
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return dataset.images[idx]


def run(ddpm, judge, test_set, train_set, cells, *, n_bar=1000, seed=0, progress=True, on_row=None, done=()):
    """Evaluate every cell (and the two n_bar rows); returns a list of row dicts.

    done: rows of an earlier run of the same model; a cell with the same (sampler, steps, guidance, n, seed) is
    taken from there and not sampled again, so a long plan can be resumed (`--resume`)."""
    earlier = {cell_key(r): r for r in done}
    feats_cache = {}

    def real_feats(n):
        if n not in feats_cache:
            test = judge_features(judge, real_subset(test_set, n, seed))
            train = judge_features(judge, real_subset(train_set, n, seed + 1))
            feats_cache[n] = (test, frechet_distance(train, test))
        return feats_cache[n]

    rows = []

    def evaluate_cell(sampler, steps, guidance, n):
        steps = ddpm.T if get_sampler(sampler).all_steps else steps          # Algorithm 2 always walks all T steps
        key = (sampler, int(steps), float(guidance), max(1, n // ddpm.num_classes) * ddpm.num_classes, int(seed))
        if key in earlier:
            rows.append(earlier[key])
            return earlier[key]
        start = time.perf_counter()
        images, labels = sample_balanced(ddpm, n, sampler=sampler, steps=steps, guidance=guidance, seed=seed)
        seconds = time.perf_counter() - start
        accuracy, per_class = conditional_accuracy(judge, images, labels)
        test_feats, floor = real_feats(len(images))
        row = dict(sampler=sampler, steps=steps, guidance=guidance, n=len(images), seed=seed, accuracy=accuracy,
                   worst_class=min(per_class, key=per_class.get), worst_accuracy=min(per_class.values()),
                   fd=frechet_distance(judge_features(judge, images), test_feats), fd_floor=floor, seconds=seconds)
        rows.append(row)
        if on_row:
            on_row(row)
        return row

    for cell in tqdm(cells, disable=not progress, desc="evaluate"):
        evaluate_cell(*cell)
    at_reference = [r for r in rows if (r["sampler"], r["steps"]) == REFERENCE]
    if n_bar and at_reference:
        best = max(at_reference, key=lambda r: r["accuracy"])["guidance"]
        for g in sorted({1.0, best}):
            evaluate_cell(*REFERENCE, g, n_bar)
    return rows


def format_table(rows, class_names=None, *, calls=False):
    """The rows as a markdown table; calls=True adds network calls per image (the quality-per-cost table)."""
    extra = " network calls / image |" if calls else ""
    lines = ["| sampler | steps | guidance s | n | seed | cond. accuracy | worst class | FD (judge features) "
             "| FD floor (real vs real, same n) |" + extra + " wall time |",
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if calls else "") + "---|"]
    for r in rows:
        worst = class_names[r["worst_class"]] if class_names else r["worst_class"]
        lines.append(f"| {short_name(r['sampler'])} | {r['steps']} | {r['guidance']:g} | {r['n']} | {r['seed']} | "
                     f"{100 * r['accuracy']:.1f}% | {worst} ({100 * r['worst_accuracy']:.0f}%) | {r['fd']:.2f} | "
                     f"{r['fd_floor']:.2f} |" + (f" {calls_per_image(r)} |" if calls else "") + f" {r['seconds']:.0f} s |")
    return "\n".join(lines)


def short_name(sampler):
    """The tables' name of a sampler (its row's `short`); a row saved by a sampler this package no longer has
    keeps its name."""
    return SAMPLERS[sampler].short if sampler in SAMPLERS else sampler
