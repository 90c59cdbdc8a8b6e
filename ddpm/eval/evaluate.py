"""`python -m ddpm evaluate`: conditional accuracy and Fréchet distance over samplers and guidance scales.

Every cell samples n images, an equal number per class, with a fixed seed, and reports what the judge
classifier (ddpm/eval/judge.py) makes of them. The floor row compares n real training images with n real
test images: no generator can be expected to beat it at the same n.
"""
import time

import torch
from tqdm.auto import tqdm

from ..sampling import sample
from .metrics import conditional_accuracy, frechet_distance, judge_features

GUIDANCE = (1.0, 2.0, 3.0, 5.0)


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


def sample_balanced(ddpm, n, *, sampler, steps, guidance, seed, chunk=250):
    """n images, n / num_classes per class, in chunks; returns (images, labels)."""
    per_class = max(1, n // ddpm.num_classes)
    labels = torch.arange(ddpm.num_classes).repeat_interleave(per_class)
    images = []
    for k, start in enumerate(range(0, len(labels), chunk)):
        ys = labels[start:start + chunk]
        # sample(ddpm, 1, classes) draws one image per listed class, in the order given
        images.append(sample(ddpm, 1, ys.tolist(), sampler=sampler, steps=None if sampler == "ddpm" else steps,
                             guidance_scale=guidance, generator=torch.Generator().manual_seed(seed + k)))
    return torch.cat(images), labels


def real_subset(dataset, n, seed):
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return dataset.images[idx]


def run(ddpm, judge, test_set, train_set, cells, *, n_bar=1000, seed=0, progress=True, on_row=None):
    """Evaluate every cell (and the two n_bar rows); returns a list of row dicts."""
    feats_cache = {}

    def real_feats(n):
        if n not in feats_cache:
            test = judge_features(judge, real_subset(test_set, n, seed))
            train = judge_features(judge, real_subset(train_set, n, seed + 1))
            feats_cache[n] = (test, frechet_distance(train, test))
        return feats_cache[n]

    rows = []

    def evaluate_cell(sampler, steps, guidance, n):
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
    sweep50 = [r for r in rows if r["sampler"] == "ddim" and r["steps"] == 50]
    if n_bar and sweep50:
        best = max(sweep50, key=lambda r: r["accuracy"])["guidance"]
        for g in sorted({1.0, best}):
            evaluate_cell("ddim", 50, g, n_bar)
    return rows


def format_table(rows, class_names=None):
    lines = ["| sampler | steps | guidance s | n | seed | cond. accuracy | worst class | FD (judge features) | FD floor (real vs real, same n) | wall time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        worst = class_names[r["worst_class"]] if class_names else r["worst_class"]
        lines.append(f"| {r['sampler'].upper()} | {r['steps']} | {r['guidance']:g} | {r['n']} | {r['seed']} | "
                     f"{100 * r['accuracy']:.1f}% | {worst} ({100 * r['worst_accuracy']:.0f}%) | {r['fd']:.2f} | "
                     f"{r['fd_floor']:.2f} | {r['seconds']:.0f} s |")
    return "\n".join(lines)
