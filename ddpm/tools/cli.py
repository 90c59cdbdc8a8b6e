"""Command line: `ddpm` or `python -m ddpm` {train, sample, judge, evaluate, neighbours, bench} ... (each with --help)."""
import argparse
import json
import os
import sys
import time

import torch

from ..checkpoint import (CARD, CARD_MARK, EVALUATION, QUALITY_COST, CheckpointError, load_training_state,
                          save_training_state, update_card_section, write_model_card)
from ..data import DATASETS, dataset_info, load_dataset, make_loader, to_unit_range
from ..diffusion import DDPM
from ..distributed import check_replicas, setup, teardown
from ..eval.evaluate import (COST_GUIDANCE, REFERENCE, cell_key, choose_default, cost_plan, default_for, format_table,
                             load_rows, plan, plot_cost, run as run_plan, save_rows)
from ..eval.judge import load_judge, train_judge
from ..eval.likelihood import nll_table
from ..eval.neighbours import SPACES, build_index, save_index, typical_distance
from ..eval.sweep import (GUIDANCE_GRID, STEP_GRID, SWEEP_GUIDANCE, SWEEP_JSON, format_points, guidance_points,
                          plot_guidance, plot_steps, save_sweep, steps_points)
from ..memory import keep_freed_memory
from ..plots import image_grid
from ..pretrained import EXAMPLES, bundled_folder, load_examples, load_pretrained
from ..sampling import SAMPLERS, compiled, get_sampler, sample
from ..schedule import SCHEDULES
from ..training import EMA, train, train_classconditional, warmup_stable_decay
from ..unet import default_net
from .bench import main as bench_main



def _ints(text):
    return tuple(int(v) for v in text.split(",")) if text else None


def _classes(text):
    return "all" if text == "all" else _ints(text)


def check_device(name):
    """torch.device(name), refusing a device this machine does not have with one clear line."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r} is not a device name ({err}); use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this machine has no CUDA GPU that torch can use; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                         f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available here; use --device cpu")
    return device


def add_train_args(p):
    p.add_argument("--dataset", default="mnist", choices=sorted(DATASETS), help="which torchvision dataset to learn")
    p.add_argument("--data", default=None, help="dataset root in torchvision's layout (default: $DDPM_DATA or ./data)")
    p.add_argument("--out", default=None, help="checkpoint folder (default: runs/<dataset>)")
    p.add_argument("--epochs", type=int, default=1, help="passes over the training set")
    p.add_argument("--steps", type=int, default=None, help="stop after this many optimizer steps in total (overrides --epochs)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much wall time (weights are saved)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="the global batch of one optimizer step (split across torchrun's processes and --grad-accum)")
    p.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (constant after warm-up, until --decay-steps)")
    p.add_argument("--warmup", type=int, default=50, help="linear learning-rate warm-up steps")
    p.add_argument("--decay-steps", type=int, default=0,
                   help="decay the learning rate linearly to 0 over the last N steps before --steps (needs --steps)")
    p.add_argument("--ema-decay", type=float, default=0.9995, help="EMA decay of the weights used for sampling")
    p.add_argument("--unconditional", action="store_true", help="ignore labels (Alg. 1 as in the paper)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (default: on for CIFAR, off for the digit and clothing sets)")
    p.add_argument("--p-uncond", type=float, default=0.1, help="label dropout for classifier-free guidance")
    p.add_argument("--schedule", default="linear", choices=SCHEDULES)
    p.add_argument("--T", type=int, default=1000, help="number of diffusion steps")
    p.add_argument("--beta-start", type=float, default=None,
                   help="first beta of the linear and sigmoid schedules (default 1e-4; for T < 1000 scale both by 1000 / T)")
    p.add_argument("--beta-end", type=float, default=None, help="last beta of the linear and sigmoid schedules (default 0.02)")
    p.add_argument("--base-channels", type=int, default=None, help="UNet width at the first level")
    p.add_argument("--channel-mults", type=_ints, default=None, help="comma-separated, e.g. 1,4,4")
    p.add_argument("--attn-levels", type=_ints, default=None,
                   help="comma-separated levels with self-attention (default: the coarsest level when --channel-mults "
                        "is given, else the preset's)")
    p.add_argument("--patch-size", type=int, default=None, help="fold p x p pixel patches into channels first")
    p.add_argument("--save-every", type=float, default=5.0, help="minutes between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    p.add_argument("--log-every", type=int, default=100, help="optimizer steps per logged (mean) loss")
    p.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches per optimizer step: the global --batch-size is split into processes x K")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="bf16: the forward pass under autocast in bfloat16 (weights and optimizer stay float32)")


def _network(args, H):
    net = default_net(H)
    if args.base_channels:
        net["base_channels"] = args.base_channels
    if args.channel_mults:
        net["channel_mults"] = args.channel_mults
        net["attn_levels"] = (len(args.channel_mults) - 1,)
    if args.attn_levels is not None:
        net["attn_levels"] = args.attn_levels
    if args.patch_size:
        net["patch_size"] = args.patch_size
    return net


def _betas(args):
    """DDPM's beta_start / beta_end from --beta-start / --beta-end, those given; the cosine schedule has none."""
    given = {name: getattr(args, name) for name in ("beta_start", "beta_end") if getattr(args, name) is not None}
    if given and args.schedule == "cosine":
        raise ValueError(f"--{next(iter(given)).replace('_', '-')} sets the linear and sigmoid schedules' betas; "
                         "--schedule cosine computes its own: leave the betas out, or use --schedule linear or sigmoid")
    return given


def cmd_train(args):
    if args.decay_steps and args.steps is None:
        raise SystemExit(f"--decay-steps {args.decay_steps} needs --steps: the decay ends at that total step")
    _betas(args)                                        # refused before the data loads and on one process only
    out = args.out or os.path.join("runs", args.dataset)
    ranks = setup(check_device(args.device))            # one process, or this one of torchrun's
    try:
        _train(args, out, ranks)
    finally:
        teardown()


def _train(args, out, ranks):
    say = print if ranks.main else (lambda *a, **k: None)           # rank 0 logs, keeps the EMA and saves
    for name in ("grad_accum", "log_every"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: it must be an integer >= 1")
    per_rank, left = divmod(args.batch_size, ranks.world_size * args.grad_accum)
    if left or per_rank == 0:
        raise ValueError(f"--batch-size {args.batch_size} is the global batch: it must be a multiple of the "
                         f"{ranks.world_size} process(es) x --grad-accum {args.grad_accum}")
    torch.manual_seed(args.seed)                         # the same initial weights on every rank
    generator = torch.Generator(ranks.device).manual_seed(args.seed)     # t, eps, label dropout: the same on every rank
    data = load_dataset(args.dataset, args.data, train=True)
    C, H, _ = dataset_info(args.dataset).image_shape
    conditional = not args.unconditional
    ddpm = DDPM(image_size=H, in_channels=C, num_classes=len(data.classes) if conditional else None,
                class_names=list(data.classes) if conditional else None, schedule=args.schedule, T=args.T,
                **_betas(args), net=_network(args, H), dataset=args.dataset).to(ranks.device)
    # fused: one kernel for all tensors per step (1.3 ms instead of 5.5 ms at batch 128 on 2 cores; a run resumed
    # from a checkpoint keeps the setting it was saved with)
    optim = torch.optim.Adam(ddpm.parameters(), lr=args.lr, fused=ranks.device.type in ("cpu", "cuda"))
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optim, warmup_stable_decay(args.warmup, args.steps, args.decay_steps))
    ema = EMA(ddpm, args.ema_decay) if ranks.main else None
    step, history, wall_before = 0, [], 0.0
    if args.resume:
        step = load_training_state(out, ddpm, optim, ema=ema, lr_scheduler=lr_schedule, generator=generator)
        with open(os.path.join(out, "training_state.json")) as f:
            meta = json.load(f)
        history, wall_before = meta.get("history", []), meta.get("wall_seconds", 0.0)
        say(f"resumed {out} at step {step}")
    n_params = sum(p.numel() for p in ddpm.parameters())
    say(f"{args.dataset}: {len(data)} images, {n_params:,} parameters, {ranks.world_size} process(es) on "
        f"{ranks.device.type}, batch {args.batch_size} = {ranks.world_size} x {args.grad_accum} x {per_rank}, "
        f"precision {args.precision}, out {out}")
    flip = args.flip if args.flip is not None else args.dataset.startswith("cifar")
    loader = make_loader(data, per_rank, seed=args.seed, flip=flip, rank=ranks.rank, world_size=ranks.world_size,
                         start=step * args.grad_accum)
    total = args.steps if args.steps is not None else step + args.epochs * (len(loader) // args.grad_accum)
    start, last_save, window = time.perf_counter(), [time.perf_counter()], []

    def save(step_now):
        # the run's recipe and loss curve travel with the checkpoint: the model card is written from them
        save_training_state(out, ddpm, optim, step_now, ema=ema, lr_scheduler=lr_schedule, generator=generator,
                            extra=dict(history=history, dataset=args.dataset, batch_size=args.batch_size, lr=args.lr,
                                       warmup=args.warmup, decay_steps=args.decay_steps, p_uncond=args.p_uncond,
                                       n_train=len(data), n_params=n_params, processes=ranks.world_size,
                                       grad_accum=args.grad_accum, precision=args.precision,
                                       device=f"{ranks.world_size} x {ranks.device.type}" if ranks.world_size > 1
                                       else str(ranks.device),
                                       wall_seconds=wall_before + time.perf_counter() - start))
        last_save[0] = time.perf_counter()

    def on_step(s, loss):
        window.append(loss)
        if len(window) == args.log_every:
            history.append([step + s, sum(window) / len(window)])
            window.clear()
            if args.no_progress:
                rate = (s * args.batch_size) / (time.perf_counter() - start)
                print(f"step {step + s}/{total} loss {history[-1][1]:.4f} ({rate:.0f} images/s)", flush=True)
        if time.perf_counter() - last_save[0] > args.save_every * 60:
            save(step + s)

    fit = train if args.unconditional else train_classconditional
    extra = {} if args.unconditional else {"p_uncond": args.p_uncond}
    losses = fit(ddpm, loader, None, optim, ranks.device, ema=ema, lr_scheduler=lr_schedule,
                 callback=on_step if ranks.main else None, max_steps=total - step, progress=not args.no_progress,
                 max_seconds=args.max_minutes * 60 if args.max_minutes else None, generator=generator,
                 grad_accum=args.grad_accum, precision=args.precision, **extra)
    step += len(losses)
    check_replicas(ddpm)
    if ranks.world_size > 1:
        say(f"the weights are identical on all {ranks.world_size} processes")
    if ranks.main:
        save(step)
    say(f"saved {out} at step {step} ({time.perf_counter() - start:.0f} s, "
        f"{len(losses) * args.batch_size / (time.perf_counter() - start):.0f} images/s)")


def add_sample_args(p):
    p.add_argument("--model", required=True, help="checkpoint folder, bundled name (mnist, fashion_mnist) or Hub id")
    p.add_argument("--out", default="samples.png", help="PNG file for the grid")
    p.add_argument("--n", type=int, default=8, help="samples (per class, with --classes)")
    p.add_argument("--classes", type=_classes, default=None, help="comma-separated class indices, e.g. 0,1,2; 'all' for all")
    p.add_argument("--sampler", default="ddim", choices=SAMPLERS)
    p.add_argument("--steps", type=int, default=50,
                   help=f"steps of {' and '.join(n for n, row in SAMPLERS.items() if not row.all_steps)} "
                        f"(the {' and '.join(n for n, row in SAMPLERS.items() if row.all_steps)} sampler always takes all T)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise, in [0, 1] (0 = deterministic)")
    p.add_argument("--guidance", type=float, default=None,
                   help="guidance scale s (1 = none; default 3 with --classes, 1 without)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscaling of the PNG")
    p.add_argument("--compile", action="store_true",
                   help="run the network through torch.compile (ddpm.compiled): about 40 s of compiling on 2 cores, "
                        "then about 20%% faster steps; pays off only for many images")


def cmd_sample(args):
    ddpm = load_pretrained(args.model)
    if args.classes == "all":
        if ddpm.num_classes is None:
            raise SystemExit("--classes all: this model is unconditional")
        args.classes = range(ddpm.num_classes)
    classes = list(args.classes) if args.classes is not None else None
    steps = None if get_sampler(args.sampler).all_steps else args.steps
    if args.compile:
        try:
            ddpm = compiled(ddpm)
        except RuntimeError as e:                  # no C++ compiler: say so, without a traceback
            raise SystemExit(str(e)) from None
    guidance = args.guidance if args.guidance is not None else (3.0 if classes else 1.0)
    if guidance != 1.0 and not classes:
        raise ValueError(f"--guidance {guidance:g} needs --classes: guidance pushes samples towards a class")
    x = sample(ddpm, args.n, classes, sampler=args.sampler, steps=steps, eta=args.eta,
               guidance_scale=guidance, generator=torch.Generator().manual_seed(args.seed), progress=True)
    labels = [ddpm.class_names[c] if ddpm.class_names else c for c in classes] if classes else None
    image_grid(x, args.n if classes else min(args.n, 10), scale=args.scale, row_labels=labels).save(args.out)
    print(f"wrote {args.out}: {len(x)} images")


def add_judge_args(p):
    p.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    p.add_argument("--data", default=None, help="dataset root (default: $DDPM_DATA or ./data)")
    p.add_argument("--out", required=True, help="folder for judge.safetensors + judge_config.json")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--width", type=int, default=32, help="channels of the first conv layers")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3, help="peak of the one-cycle learning rate")
    p.add_argument("--max-shift", type=int, default=2, help="random translation augmentation, pixels")
    p.add_argument("--seed", type=int, default=0)


def cmd_judge(args):
    train_set, test_set = load_dataset(args.dataset, args.data, train=True), load_dataset(args.dataset, args.data, train=False)
    start = time.perf_counter()
    judge, accuracy = train_judge(train_set, test_set, epochs=args.epochs, width=args.width, batch_size=args.batch_size,
                                  lr=args.lr, max_shift=args.max_shift, seed=args.seed)
    judge.save(args.out)
    print(f"judge for {args.dataset}: test accuracy {100 * accuracy:.2f}% on {len(test_set)} images "
          f"({time.perf_counter() - start:.0f} s); saved to {args.out}")


def add_evaluate_args(p):
    p.add_argument("--model", required=True, help="bundled name or checkpoint folder; its judge must sit beside it")
    p.add_argument("--judge", default=None, help="folder of the judge (default: the model's folder)")
    p.add_argument("--data", default=None, help="dataset root with the real images (default: $DDPM_DATA or ./data)")
    p.add_argument("--plan", choices=("sweep", "cost", "bars"), default="sweep",
                   help="sweep: DDIM over guidance scales (the model card's table); cost: quality per cost, every "
                        "sampler at a few step counts (DDPM-1000, DDIM-50/20/10, DPM++-25/20/10/6) at guidance 1 and 2, "
                        "--n images each, with a plot of FD against network calls and the app defaults it implies; "
                        "bars: only DDIM-50 at guidance 1 and 2, --n images each (the quality bars, e.g. to check a "
                        "checkpoint against a bundled model's judge with --judge; leaves the model card alone)")
    p.add_argument("--n-sweep", type=int, default=100, help="images per cell of the sampler x guidance sweep")
    p.add_argument("--n", type=int, default=1000, help="images for the two DDIM-50 rows (guidance 1 and best); "
                                                       "with --plan cost or bars, images per cell")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="a tiny table in a minute, to try the command: nothing is written into the model's folder unless --out "
                        "names it")
    p.add_argument("--out", default=None, help="also write the markdown table to this .md file and its rows beside it "
                                               "as .json (with --plan cost: default <model folder>/quality_cost.md, "
                                               "with a .png plot)")
    p.add_argument("--max-steps", type=int, default=None, help="with --plan cost: only the cells of at most this many "
                                                                  "steps (the rest later with --resume)")
    p.add_argument("--resume", action="store_true", help="keep the cells already in the .json beside --out and "
                                                          "measure only the missing ones (a long plan across sessions)")
    p.add_argument("--sweep", action="store_true",
                   help="the curves of the app's Explore tab instead of a table: accuracy and FD against steps (DDIM, "
                        "DPM-Solver++, DDPM) at guidance 2, accuracy and diversity against guidance with the model's "
                        "default sampler, FD against the real examples bundled beside the model; writes sweep.json and "
                        "two plots beside the model (or in the folder --out; with --quick only there)")
    p.add_argument("--per-class", type=int, default=None, help="with --sweep: images per class of every point "
                                                                "(default 20)")
    p.add_argument("--nll", action="store_true",
                   help="the variational bound in bits/dim instead of a table (Ho et al. Eq. 5, Table 1): all T terms "
                        "and the fast estimate, sigma^2 = beta and beta_tilde, on --n-nll real test images; writes a "
                        "Likelihood section into the model card (not with --quick)")
    p.add_argument("--n-nll", type=int, default=64, help="with --nll: test images, a seeded random subset")


def _load_note():
    return "load average (1 min) " + (f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "unknown")


def cmd_sweep(args):
    """evaluate --sweep: the app's curves (ddpm/eval/sweep.py) at a larger n; the file is written after each curve."""
    folder = bundled_folder(args.model)
    out = args.out or (None if args.quick else folder)         # a --quick try never replaces a real sweep
    if out and out.endswith((".md", ".json")):
        raise ValueError(f"--out {out}: with --sweep, give a folder (sweep.json and its two plots go into it)")
    if args.resume:
        raise ValueError("--resume belongs to the tables (--plan); a --sweep is measured whole")
    per_class = 1 if args.quick else 20 if args.per_class is None else args.per_class
    if per_class < 1:
        raise ValueError(f"--per-class {per_class}: give an integer >= 1")
    ddpm = load_pretrained(args.model)
    judge = load_judge(args.judge or folder)
    if os.path.isfile(os.path.join(folder, EXAMPLES)):        # the app measures against the same images
        real = to_unit_range(load_examples(folder)[0])
        reference = f"the {len(real)} real examples beside the model ({EXAMPLES})"
    else:
        real = load_dataset(ddpm.dataset, args.data, train=False).images
        reference = f"the {len(real)} real test images of {ddpm.dataset}"
    sampler, steps = default_for(folder, SWEEP_GUIDANCE) or ("dpmpp_2m", 10)
    steps = min(steps, ddpm.T)
    grid = tuple(k for k in ((5, 10) if args.quick else STEP_GRID) if k <= ddpm.T)
    common = dict(per_class=per_class, n=per_class * ddpm.num_classes, seed=args.seed)
    curves = [("steps", dict(guidance=SWEEP_GUIDANCE, **common), plot_steps,
               steps_points(ddpm, judge, real, guidance=SWEEP_GUIDANCE, per_class=per_class, seed=args.seed,
                            steps=grid, with_ddpm=not args.quick)),
              ("guidance", dict(sampler=sampler, steps=steps, **common), plot_guidance,
               guidance_points(ddpm, judge, real, sampler=sampler, steps=steps, per_class=per_class, seed=args.seed,
                               scales=(1.0, 2.0) if args.quick else GUIDANCE_GRID))]
    data = dict(command=f"python -m ddpm evaluate {' '.join(args.argv)}", judge=args.judge or args.model,
                reference=reference)
    print(f"Model `{args.model}`: n = {common['n']} images per point ({per_class} per class), seed {args.seed}, FD "
          f"against {reference}; {torch.get_num_threads()} threads, {_load_note()}", flush=True)
    for part, settings, plot, points in curves:
        rows = []
        for row in points:
            rows.append(row)
            print(f"{part}: {row['sampler']} {row['steps']} steps, s = {row['guidance']:g}: accuracy "
                  f"{100 * row['accuracy']:.1f}%, FD {row['fd']:.2f}, {row['seconds']:.0f} s", flush=True)
        print(f"\n{part} curve ({', '.join(f'{k} {v}' for k, v in settings.items())})\n\n{format_points(rows)}\n")
        data[part] = dict(settings, rows=rows)
        if out:
            os.makedirs(out, exist_ok=True)
            save_sweep(os.path.join(out, SWEEP_JSON), data)       # a part in the file is a finished curve
            plot(rows, f"{args.model}, {part}").save(os.path.join(out, f"sweep_{part}.png"))
            print(f"wrote {os.path.join(out, SWEEP_JSON)} and {os.path.join(out, f'sweep_{part}.png')}", flush=True)


def cmd_nll(args):
    """evaluate --nll: the bound of ddpm/eval/likelihood.py on real test images, printed and put into the card."""
    folder, n = bundled_folder(args.model), 2 if args.quick else args.n_nll
    ddpm = load_pretrained(args.model)
    if os.path.isfile(os.path.join(folder, EXAMPLES)):
        images, where = to_unit_range(load_examples(folder)[0]), f"the real test images bundled beside the model ({EXAMPLES})"
    else:
        images, where = load_dataset(ddpm.dataset, args.data, train=False).images, f"the {ddpm.dataset} test set"
    if not 1 <= n <= len(images):
        raise ValueError(f"--n-nll {n}: give a number of images in [1, {len(images)}] ({where})")
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[:n].sort().values
    machine = f"{torch.get_num_threads()} threads, {_load_note()} at the start"      # the wall times depend on it
    print(f"Model `{args.model}`: the bound on {n} of {where}; {machine}", flush=True)
    text = (nll_table(ddpm, images[pick], seed=args.seed) + f" Images: {n} of {where}, picked with seed {args.seed}; "
            f"{machine}; command: `python -m ddpm evaluate {' '.join(args.argv)}`.")
    print(text)
    if os.path.isdir(folder) and not args.quick:
        print(f"updated the model card {update_card_section(folder, 'likelihood', text)}")


def cmd_evaluate(args):
    if args.nll:
        return cmd_nll(args)
    if args.sweep:
        return cmd_sweep(args)
    if args.per_class is not None:
        raise ValueError(f"--per-class {args.per_class} belongs to --sweep (images per class of every curve point); "
                         "the tables take --n (and --n-sweep)")
    folder = bundled_folder(args.model)
    cost = args.plan == "cost"
    # the cost plan's files go beside the model (the app reads its defaults from there), unless --out says
    # otherwise; a --quick try writes nothing unless asked, so it never replaces a real table
    out = args.out or (os.path.join(folder, QUALITY_COST) if cost and not args.quick and os.path.isdir(folder) else None)
    if out and out.endswith(".json"):
        raise ValueError(f"--out {out}: give the markdown file (.md); its rows go beside it as .json")
    if args.resume and not out:
        raise ValueError("--resume reads the rows beside --out: give --out (or --plan cost with a model folder)")
    ddpm = load_pretrained(args.model)
    judge = load_judge(args.judge or folder)
    test_set, train_set = load_dataset(ddpm.dataset, args.data, train=False), load_dataset(ddpm.dataset, args.data, train=True)
    if cost:
        cells = cost_plan(20 if args.quick else args.n)
        cells = [c for c in cells if not get_sampler(c[0]).all_steps] if args.quick else cells
        cells = [c for c in cells if args.max_steps is None or c[1] <= args.max_steps]
    elif args.plan == "bars":
        cells = [(*REFERENCE, g, 20 if args.quick else args.n) for g in COST_GUIDANCE]
    else:
        cells = [("ddim", 10, 1.0, 20), ("ddim", 10, 3.0, 20)] if args.quick else plan(args.n_sweep)
    rows_path = os.path.splitext(out)[0] + ".json" if out else None
    done = load_rows(rows_path) if args.resume else []
    header = (f"Model `{args.model}` ({ddpm.dataset}), judge test accuracy measured separately; "
              f"{torch.get_num_threads()} threads; command: `python -m ddpm evaluate {' '.join(args.argv)}`; "
              f"{_load_note()} at the start"
              + (f"; {len(done)} rows kept from earlier runs of this plan (their wall times are theirs)" if done else "")
              + "\n\n")

    def with_done(rows):       # this run's rows, then the earlier ones it did not measure again
        keys = {cell_key(r) for r in rows}
        return rows + [r for r in done if cell_key(r) not in keys]

    measured = []

    def on_row(row):           # rewrite the files after every cell: a long run leaves what it measured so far
        measured.append(row)
        if out:
            with open(out, "w", encoding="utf-8") as f:
                f.write(header + format_table(with_done(measured), ddpm.class_names, calls=cost) + "\n")
            save_rows(rows_path, with_done(measured))

    sweep = args.plan == "sweep" and not args.quick         # a --quick try writes no scores of the model
    n_bar = args.n if sweep else 0                          # the two DDIM-50 rows of the card
    rows = with_done(run_plan(ddpm, judge, test_set, train_set, cells, n_bar=n_bar, seed=args.seed, on_row=on_row,
                              done=done))
    table = header + format_table(rows, ddpm.class_names, calls=cost)
    if cost:
        table += f"\n\n{_load_note()} at the end."
        picks = {g: choose_default(rows, g) for g in COST_GUIDANCE}
        reference = get_sampler(REFERENCE[0]).title(REFERENCE[1], ddpm.T)
        table += "".join(f"\nAt guidance {g:g}, the fewest steps whose FD is within 5% of {reference}'s: "
                         + (f"{get_sampler(p[0]).title(p[1], ddpm.T)}." if p else f"(no {reference} row)")
                         for g, p in picks.items())
    print(table)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(table + "\n")
        save_rows(rows_path, rows)
        print(f"wrote {out} and {rows_path}")
        if cost:
            print(f"wrote {plot_cost(rows, os.path.splitext(out)[0] + '.png', title=args.model)}")
    beside = out is not None and os.path.dirname(os.path.abspath(out)) == os.path.abspath(folder)
    card = os.path.join(folder, CARD)
    ours = not os.path.isfile(card) or CARD_MARK in open(card, encoding="utf-8").read()
    if sweep and os.path.isdir(folder) and ours:
        with open(os.path.join(folder, EVALUATION), "w") as f:             # a card of ours: the scores go into it
            f.write(table + "\n")
    if os.path.isdir(folder) and ((sweep and ours) or (cost and beside)):
        if ours:
            write_model_card(folder, ddpm)           # rebuilt from evaluation.md and quality_cost.md
        else:
            update_card_section(folder, "quality per cost", table)          # a card written by hand: one section
        print(f"updated the model card {card}")


def add_neighbours_args(p):
    p.add_argument("--model", required=True, help="bundled name or checkpoint folder; its judge must sit beside it")
    p.add_argument("--judge", default=None, help="folder of the judge (default: the model's folder)")
    p.add_argument("--data", default=None, help="dataset root with the training set (default: $DDPM_DATA or ./data)")
    p.add_argument("--per-class", type=int, default=400,
                   help="training images per class in the index (a seeded stratified subset); 0: the whole set")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset")
    p.add_argument("--out", default=None, help="folder for neighbours.safetensors (default: the model's folder)")


def cmd_neighbours(args):
    if args.per_class < 0:
        raise ValueError(f"--per-class {args.per_class}: give a number of images >= 1, or 0 for the whole set")
    folder = bundled_folder(args.model)
    ddpm = load_pretrained(args.model)
    judge = load_judge(args.judge or folder)
    train_set = load_dataset(ddpm.dataset, args.data, train=True)
    index = build_index(train_set, judge, per_class=args.per_class or None, seed=args.seed)
    path = save_index(args.out or folder, index)
    subset = f"{args.per_class} per class, seed {args.seed}" if args.per_class else "the whole set"
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB): {index['n']:,} of {index['n_total']:,} "
          f"{ddpm.dataset} training images ({subset})")
    if os.path.isfile(os.path.join(folder, EXAMPLES)):            # the held-out reference the app reads against
        held = to_unit_range(load_examples(folder)[0])
        typical = {space: typical_distance(index, held, judge, space=space) for space in SPACES}
        print(f"median nearest-neighbour distance of the {len(held)} bundled held-out test images to it: "
              + ", ".join(f"{typical[s]:.2f} ({s})" for s in SPACES))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ddpm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands = [("train", "train a DDPM (Algorithm 1), saving safetensors checkpoints", add_train_args, cmd_train),
                ("sample", "draw samples (Algorithm 2 or DDIM) into a PNG grid", add_sample_args, cmd_sample),
                ("judge", "train the judge classifier used by evaluate", add_judge_args, cmd_judge),
                ("evaluate", "accuracy and Fréchet distance over samplers and guidance scales", add_evaluate_args, cmd_evaluate),
                ("neighbours", "index a training set for the nearest-neighbour search (is the model copying?)",
                 add_neighbours_args, cmd_neighbours)]
    for name, help_text, add_args, command in commands:
        p = sub.add_parser(name, help=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_args(p)
        p.set_defaults(func=command)
    sub.add_parser("bench", help="speed benchmark (python -m ddpm bench --help)", add_help=False)
    argv = list(argv) if argv is not None else sys.argv[1:]
    if argv[:1] == ["bench"]:
        return bench_main(argv[1:])
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    args.func(args)


def run(argv=None):
    """The console entry point: bad input (a value, a missing file) ends in one clear line, not a traceback."""
    try:
        keep_freed_memory()        # training and sampling steps reuse freed activations (ddpm/memory.py)
        main(argv)
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        sys.exit(f"ddpm: error: {err}")
