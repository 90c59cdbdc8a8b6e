"""Does a new class overwrite the old ones? A bundled model is fine-tuned on three drawn triangles as a new class (or on
the tab's ready-made drawings: --source shapes), through the app's own handler at the tab's default budget; then every
old class's judge accuracy on the fixed-seed preview is printed before and after the run, with the judge's
"none of these" counted as wrong:

    python benchmarks/forgetting.py [--model mnist] [--source own] [--kind steps] [--budget 300] [--per-class 16]

(DDPM_APP_TORCH_THREADS=1 in front gives the run one core, as the app does with two jobs at once on two cores.)

Also printed: how soon the first progress update came, and how often the judge says "none of these" to real test
images (the remembered examples, each against the others, and with --data <root> the dataset's test images that are
not among them), to the training triangles and to the model's own samples before the run.
"""
import argparse
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DDPM_APP_MAX_JOB_SECONDS", "7200")        # a budget in steps is not cut by the app's caps
os.environ.setdefault("DDPM_APP_MAX_TRAIN_SECONDS", "7200")

from ddpm.app import finetune, registry  # noqa: E402
from ddpm.app.pickers import DEFAULT_GUIDANCE  # noqa: E402
from ddpm.data import load_dataset, to_unit_range  # noqa: E402
from ddpm.eval.judge import NONE, NONE_RATE  # noqa: E402

VISITOR = SimpleNamespace(session_hash="forgetting-benchmark")
# three triangles as a visitor draws them on the 280 x 280 sketchpad: corners in canvas pixels
DRAWN = ([(140, 30), (40, 240), (240, 240)], [(60, 40), (250, 120), (70, 250)], [(130, 20), (30, 200), (220, 230)])


def draw_triangles():
    """The three drawings, added to the visitor's session through the tab's own handler."""
    finetune.clear_drawings(request=VISITOR)
    for corners in DRAWN:
        canvas = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).line(corners + corners[:1], fill=(0, 0, 0, 255), width=18, joint="curve")
        finetune.add_drawing({"composite": canvas}, request=VISITOR)
    return np.stack(registry.registry().peek(VISITOR.session_hash).drawings)


def verdicts(judge, model, classes, per_class):
    """The judge's verdicts [len(classes), per_class] on the fixed-seed preview of `model` (NONE: none of these)."""
    *_, (_, _, x) = finetune.preview_walk(model.eval(), classes, per_class=per_class)
    return judge.classify(x, none_of_these=True).view(len(classes), per_class), x


def none_rate(judge, x):
    return (judge.classify(x, none_of_these=True) == NONE).float().mean().item()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mnist", help="a bundled model with examples and a judge")
    p.add_argument("--source", choices=["own", "shapes"], default="own",
                   help="own: three drawn triangles (the issue's run); shapes: the tab's ready-made drawings")
    p.add_argument("--kind", choices=finetune.BUDGET_KINDS, default=finetune.BUDGET_KIND)
    p.add_argument("--budget", type=int, default=finetune.BUDGET, help="the tab's default: %(default)s (--kind)")
    p.add_argument("--per-class", type=int, default=16, help="preview images per class that the judge scores")
    p.add_argument("--seed", type=int, default=0, help="the run's seed (the tab's is 0)")
    p.add_argument("--data", default=None, help="the datasets' root, for the judge's rate on held-out test images")
    p.add_argument("--picture", default=None, help="save the tab's before and after previews side by side here (PNG)")
    args = p.parse_args()
    reg = registry.registry()
    base, judge = reg.model(args.model), reg.judge(args.model)
    if judge is None or judge.reference is None:
        sys.exit(f"{args.model} has no judge with examples beside it: nothing to score with")
    own = draw_triangles() if args.source == "own" else finetune.example_drawings()
    old = list(range(base.num_classes))

    start, first, moved, bar, out = time.perf_counter(), None, None, None, None
    for out in finetune.finetune_run(args.model, args.source, [], "triangle", None, args.kind, args.budget, 50,
                                     seed=args.seed, request=VISITOR):
        now = time.perf_counter() - start
        first = first if first is not None else now
        if bar is not None and out[0] != bar and moved is None:
            moved = now
        bar = out[0]
    status, name = out[4], out[6]["value"]
    steps = status.split("after ")[1].split(" steps")[0]
    if not status.startswith("**Done"):
        print(status.split("\n")[0])
    if args.picture:
        before, now = out[2], out[3]
        both = Image.new("RGB", (before.width + now.width + 20, max(before.height, now.height)), "white")
        both.paste(before, (0, 0))
        both.paste(now, (before.width + 20, 0))
        both.save(args.picture)
    tuned = reg.model(name, VISITOR.session_hash)
    print(f"{args.model}, new class 'triangle' from {len(own)} {args.source} drawings, budget {args.budget} {args.kind}: "
          f"{steps} steps in {time.perf_counter() - start:.0f} s (with the previews), torch threads "
          f"{torch.get_num_threads()}; first update after {first:.2f} s, the progress bar moved after {moved:.2f} s\n")

    before, x_before = verdicts(judge, base, old, args.per_class)
    after, _ = verdicts(judge, tuned, old + [tuned.num_classes - 1], args.per_class)
    n = args.per_class
    print(f"| class | judge accuracy before | after | change |  (fixed-seed preview, {finetune.PREVIEW_SAMPLER}-"
          f"{finetune.PREVIEW_STEPS}, "
          f"{n} per class, guidance {DEFAULT_GUIDANCE:g}, 'none of these' counts as wrong)\n|---|---|---|---|")
    worst = 0.0
    for c in old:
        b, a = (before[c] == c).float().mean().item(), (after[c] == c).float().mean().item()
        worst = max(worst, b - a)
        print(f"| {base.class_names[c] if base.class_names else c} | {b:.0%} | {a:.0%} | {100 * (a - b):+.0f} |")
    new = after[-1]
    read = ", ".join(f"{base.class_names[c] if base.class_names else c}: {int((new == c).sum())}"
                     for c in old if (new == c).any())
    print(f"| triangle (new) | - | none of these: {int((new == NONE).sum())} / {n} | read as {read or 'nothing else'} |")
    print(f"\nlargest drop of an old class: {100 * worst:.0f} points (the target: at most 10)\n")

    rates = [f"the remembered real examples, each against the others: {NONE_RATE:.0%} (the calibration)"]
    if args.data:
        test = load_dataset(judge.config["dataset"], args.data, train=False, download=False)
        held = judge.nearest_real(test.images) > 0
        rates.append(f"{int(held.sum())} test images not among them: {none_rate(judge, test.images[held]):.1%}")
    others = finetune.example_drawings(64, seed=1)
    rates += [f"the {len(own)} training triangles: {none_rate(judge, to_unit_range(own)):.1%}",
              f"{len(others)} other triangles drawn like the ready-made ones: {none_rate(judge, to_unit_range(others)):.1%}",
              f"the model's own samples before the run ({len(x_before)}): {(before == NONE).float().mean().item():.1%}"]
    print("the judge's 'none of these' rate on\n- " + "\n- ".join(rates))


if __name__ == "__main__":
    main()
