"""Speed benchmark: training throughput, sampling time, the diffusers loop as a peer, and the hardware limit.

    python -m ddpm bench            # full run (a few minutes on 2 cores)
    python -m ddpm bench --quick    # short run: fewer repeats; long sampling runs timed on their first steps and scaled
    python -m ddpm bench --out docs/speed.md    # also write the tables as a Markdown page, with the machine
    python -m ddpm bench --compile    # also: the network at batch 16 and 100 through `ddpm.compiled` (opt-in)
    python -m ddpm bench --ablations  # instead: the network against it without each kept change, and compiled
    python -m ddpm bench --playground # instead: the 2-D playground's run, SDEdit and interpolation

What the deployed app makes its visitors wait for is timed outside the package: `python benchmarks/app_targets.py`.

Every figure is the median of several repeats, measured on an MNIST-shaped model (28x28, 10 classes) with
*random* weights: speed does not depend on the weights' values. conv_out, which starts at zero, is given
small random weights so that samples are not trivial. `--net patch2` (default) is the network of new 28x28
models (`ddpm.unet.PATCH2`); `--net full_res` is the 219-MFLOP shape of the first bundled models.
The peer is the same network and the same guidance driven by diffusers' DDPMScheduler / DDIMScheduler
("trailing" spacing); "ours / diffusers" < 1 means our loop is faster. The two loops run in lockstep, one
step of each in turn, so that the machine's drifting speed hits both alike; the ratio is the median over
runs of (our seconds / their seconds) within a run. The hardware limit is the machine's
dense fp32 matmul rate (median of a 2048 x 2048 product, through MKL's torch.mm or oneDNN's 1 x 1 convolution,
whichever is faster here: `gemm_ways`); "% of mm" is a figure's network FLOP rate
(FLOPs counted by torch.utils.flop_counter.FlopCounterMode) as a fraction of that rate.
Other processes compete for the cores: the load average is printed with the table.
"""
import argparse
import collections
import contextlib
import copy
import functools
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from unittest import mock

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from .. import points, unet
from ..diffusion import DDPM, sample_xt
from ..eval.metrics import sliced_wasserstein
from ..pretrained import load_pretrained
from ..sampling import compiled, get_sampler, sample, sample_steps, slerp
from ..training import EMA, train, train_classconditional
from ..unet import FULL_RES, PATCH2, ResBlock


def _median_time(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


NETS = {"patch2": PATCH2, "full_res": FULL_RES}


def random_model(net="patch2", seed=0):
    """A 10-class MNIST-shaped DDPM with random weights (conv_out too, so that its output is not zero)."""
    torch.manual_seed(seed)
    ddpm = DDPM(num_classes=10, net=NETS[net]).eval()
    torch.nn.init.normal_(ddpm.net.conv_out.weight, std=0.02)
    return ddpm


def gemm_ways(n=2048):
    """{library: function} for one dense fp32 n x n product (2 n^3 FLOPs), the two ways torch runs it on a CPU:
    torch.mm (MKL) and the same product as a 1 x 1 convolution over n pixels, channels_last (oneDNN, the library
    behind the network's convolutions). MKL takes a slower path on AMD CPUs: on this project's AMD EPYC machine
    (AVX-512, 2 threads) torch.mm ran 222 GFLOP/s and the convolution 427; an earlier session's machine read
    334-340 GFLOP/s by torch.mm."""
    if n < 32 or n % 32:
        raise ValueError(f"gemm_ways: n = {n}; give a multiple of 32 (the product's n columns are laid out as "
                         "32 x n/32 pixels)")
    a, b = torch.randn(n, n), torch.randn(n, n)
    w = a.view(n, n, 1, 1).contiguous(memory_format=torch.channels_last)               # out channel o, in channel c
    x = b.view(1, n, 32, n // 32).contiguous(memory_format=torch.channels_last)        # b's n columns as 32 x n/32 pixels
    return {"MKL torch.mm": lambda: torch.mm(a, b), "oneDNN 1x1 conv": lambda: F.conv2d(x, w)}


def _matmul(n=2048, repeats=3):
    """The faster of gemm_ways(n) on this machine, as (function to time, its FLOPs 2 n^3, library name)."""
    ways = gemm_ways(n)
    times = {name: _median_time(fn, repeats, warmup=1) for name, fn in ways.items()}
    best = min(times, key=times.get)
    return ways[best], 2 * n ** 3, best


def matmul_gflops(n=2048, repeats=7):
    """(GFLOP/s, library): the dense fp32 matmul rate of this machine, the faster library's (gemm_ways)."""
    mm, flops, name = _matmul(n)
    return flops / _median_time(mm, repeats, warmup=2) / 1e9, name


def forward_flops(ddpm):
    """FLOPs of one forward pass of the network for one image."""
    x, t, y = torch.randn(1, *ddpm.sample_shape), torch.tensor([500]), torch.tensor([3])
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        ddpm.net(x, t, y)
    return counter.get_total_flops()


def train_flops(ddpm, batch=2):
    """FLOPs of one training step (forward + backward) per image."""
    net = copy.deepcopy(ddpm.net).train()
    x, t, y = torch.randn(batch, *ddpm.sample_shape), torch.randint(0, 1000, (batch,)), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.mse_loss(net(x, t, y), x).backward()
    return counter.get_total_flops() / batch


def _fake_batches(ddpm, n, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand((batch, *ddpm.sample_shape), generator=g) * 2 - 1, torch.randint(0, 10, (batch,), generator=g))
            for _ in range(n)]


def train_ours(ddpm, batch, steps, warmup=2, *, fused_adam=True):
    """Seconds per step of train_classconditional (EMA, grad clip 1.0, fused Adam as `python -m ddpm train`
    builds it), median over `steps` steps; on a copy of `ddpm`. fused_adam=False: Adam's for-each
    implementation instead (the earlier setting that benchmarks/app_targets.py times as "before")."""
    ddpm = copy.deepcopy(ddpm)
    stamps = []
    optim = torch.optim.Adam(ddpm.parameters(), lr=2e-4, fused=fused_adam)
    train_classconditional(ddpm, _fake_batches(ddpm, warmup + steps + 1, batch), 1, optim, "cpu",
                           ema=EMA(ddpm, 0.999), grad_clip=1.0, progress=False, max_steps=warmup + steps + 1,
                           callback=lambda step, loss: stamps.append(time.perf_counter()))
    return statistics.median(b - a for a, b in itertools.pairwise(stamps[warmup:]))


def train_reference(ddpm, batch, steps, warmup=2):
    """Seconds per step of the plain PyTorch step on the same network: forward, MSE, backward, Adam."""
    net = copy.deepcopy(ddpm.net).train()
    optim = torch.optim.Adam(net.parameters(), lr=2e-4)
    alpha_bar = ddpm.schedule.alpha_bar
    batches = iter(_fake_batches(ddpm, warmup + steps, batch))

    def step():
        x0, y = next(batches)
        t = torch.randint(0, len(alpha_bar), (batch,))
        eps = torch.randn_like(x0)
        a = alpha_bar[t].view(-1, 1, 1, 1)
        loss = F.mse_loss(net(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, y), eps)        # Eq. (4), unchecked
        optim.zero_grad()
        loss.backward()
        optim.step()
    return _median_time(step, steps, warmup)


def net_time(ddpm, batch, repeats):
    """Seconds per forward pass of the network alone, in inference mode."""
    x, t, y = torch.randn(batch, *ddpm.sample_shape), torch.full((batch,), 500), torch.randint(0, 10, (batch,))
    with torch.inference_mode():
        return _median_time(lambda: ddpm.net(x, t, y), repeats, warmup=2)


def step_time(ddpm, batch, n_steps):
    """Seconds per step of our DDIM loop (conditional, no guidance: one forward pass of `batch` images),
    and the fraction of each step spent outside the network (timed by hooks inside the same steps)."""
    x, y = torch.randn(batch, *ddpm.sample_shape), torch.randint(0, 10, (batch,))
    in_net, t_enter = [0.0], [0.0]
    hooks = [ddpm.net.register_forward_pre_hook(lambda *a: t_enter.__setitem__(0, time.perf_counter())),
             ddpm.net.register_forward_hook(lambda *a: in_net.__setitem__(0, in_net[0] + time.perf_counter() - t_enter[0]))]
    times, outside, start = [], [], time.perf_counter()
    try:
        for _ in sample_steps(ddpm, x, y=y, sampler="ddim", steps=n_steps + 2):
            now = time.perf_counter()
            times.append(now - start)
            outside.append((now - start - in_net[0]) / (now - start))
            in_net[0], start = 0.0, now
    finally:
        for h in hooks:
            h.remove()
    return statistics.median(times[2:]), statistics.median(outside[2:])


def compiled_forward(ddpm, batches, repeats):
    """Per batch size b, the network through `ddpm.compiled` against the eager network and the 2048^2 matmul,
    run alternately (repeats(b) rounds) so that the machine's drifting speed hits all three alike: rows of
    (b, seconds of the first call, which compiles, seconds per compiled forward, seconds per eager forward,
    matmul GFLOP/s alongside)."""
    fast, rows = compiled(ddpm), []
    mm, mm_flops, _ = _matmul()
    for b in batches:
        x, t, y = torch.randn(b, *ddpm.sample_shape), torch.full((b,), 500), torch.randint(0, 10, (b,))
        with torch.inference_mode():
            start = time.perf_counter()
            fast.net(x, t, y)
            first = time.perf_counter() - start
            t_fast, t_eager, t_mm = _interleaved(functools.partial(fast.net, x, t, y), functools.partial(ddpm.net, x, t, y),
                                                 mm, repeats=repeats(b))
        rows.append((b, first, t_fast, t_eager, mm_flops / t_mm / 1e9))
    return rows


def _start(ddpm, n_per_class, classes):
    """Labels (None: unconditional) and the seeded starting noise shared by both loops."""
    g = torch.Generator().manual_seed(0)
    y = None if classes is None else torch.tensor(classes).repeat_interleave(n_per_class)
    return y, torch.randn((n_per_class if y is None else len(y), *ddpm.sample_shape), generator=g), g


def our_steps(ddpm, n_per_class, classes, sampler, steps, guidance):
    """Our sampler, one x_{t_prev} per reverse step: `sample_steps`, as `sample` drains it."""
    y, x, g = _start(ddpm, n_per_class, classes)
    for step in sample_steps(ddpm, x, y=y, sampler=sampler, steps=steps, guidance_scale=guidance, generator=g):
        yield step.x_prev


def diffusers_scheduler(sampler, schedule, steps):
    """(diffusers' scheduler that does what our `sampler` does, set to its steps; its step's extra arguments)."""
    # diffusers is imported here only: the package loads it nowhere else unless a diffusers model is read
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
    common = dict(num_train_timesteps=schedule.T, beta_schedule="linear", beta_start=float(schedule.betas[0]),
                  beta_end=float(schedule.betas[-1]))
    peers = {   # as tests/test_sampling.py and tests/test_dpm_solver.py check them
        "ddpm": lambda: (DDPMScheduler(variance_type="fixed_large", clip_sample=True, **common), {}),  # sigma_t^2 = beta_t
        # use_clipped_model_output: as our ddim_step, eps re-derived from the clipped x0_hat
        "ddim": lambda: (DDIMScheduler(timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=True, **common),
                         dict(use_clipped_model_output=True)),
        # thresholding at 1.0 = clipping x0_hat
        "dpmpp_2m": lambda: (DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, thresholding=True,
                                                         timestep_spacing="trailing", sample_max_value=1.0, **common), {}),
    }
    if sampler not in peers:
        raise ValueError(f"the bench has no diffusers peer for sampler {sampler!r}; peers: {list(peers)}")
    scheduler, step_kwargs = peers[sampler]()
    scheduler.set_timesteps(schedule.T if get_sampler(sampler).all_steps else steps)
    return scheduler, step_kwargs


def diffusers_steps(ddpm, n_per_class, classes, sampler, steps, guidance):
    """The same sampling with diffusers' scheduler around the same network and the same guidance, one x per step."""
    scheduler, step_kwargs = diffusers_scheduler(sampler, ddpm.schedule, steps)
    y, x, g = _start(ddpm, n_per_class, classes)
    n = len(x)
    guided = y is not None and guidance != 1.0
    if y is None:
        y = torch.full((n,), ddpm.null_class)
    y_in = torch.cat([y, torch.full_like(y, ddpm.null_class)]) if guided else y
    with torch.inference_mode():
        for t in scheduler.timesteps:
            x_in = torch.cat([x, x]) if guided else x
            eps = ddpm.net(x_in, t, y_in)
            if guided:
                eps_cond, eps_uncond = eps.chunk(2)
                eps = eps_uncond + guidance * (eps_cond - eps_uncond)
            x = scheduler.step(eps, t, x, generator=g, **step_kwargs).prev_sample
            yield x


def _run(steps, limit=None):
    """The last x of a step generator, or its x after `limit` steps."""
    return collections.deque(itertools.islice(steps, limit), maxlen=1).pop()


def ours(ddpm, n_per_class, classes, sampler, steps, guidance, limit=None):
    """Our sampler end to end: `sample` (or its first `limit` steps)."""
    if limit is not None:
        return _run(our_steps(ddpm, n_per_class, classes, sampler, steps, guidance), limit)
    return sample(ddpm, n_per_class, classes, sampler=sampler, steps=steps, guidance_scale=guidance,
                  generator=torch.Generator().manual_seed(0))


def diffusers_loop(ddpm, n_per_class, classes, sampler, steps, guidance, limit=None):
    """diffusers' loop end to end (or its first `limit` steps)."""
    return _run(diffusers_steps(ddpm, n_per_class, classes, sampler, steps, guidance), limit)


def lockstep(steps_a, steps_b, limit=None):
    """Seconds spent inside each of two step generators advanced alternately, one step each (a b, b a, ...),
    up to `limit` steps: a drift of the machine's speed during the run hits both alike. The first step of
    each includes its setup (coefficients, scheduler)."""
    gens, spent = (steps_a, steps_b), [0.0, 0.0]
    for i in itertools.count():
        if i == limit:
            break
        for k in ((0, 1) if i % 2 == 0 else (1, 0)):
            start = time.perf_counter()
            done = next(gens[k], None) is None
            spent[k] += time.perf_counter() - start
        if done:
            break
    return tuple(spent)


def _resblock_out_of_place(block, x, emb):
    """ResBlock.forward as it was before its SiLU and adds went in place: the same numbers, more memory passes."""
    h = block.conv1(F.silu(block.norm1(x))) + block.emb(emb)[:, :, None, None]
    return block.skip(x) + block.conv2(block.dropout(F.silu(block.norm2(h))))


CHANGES = ("channels_last", "in_place", "attention")


@contextlib.contextmanager
def undone(net, change):
    """`net` with one kept speed change undone: "channels_last" (NCHW activations: ddpm.unet.cpu_layout leaves
    them as they are), "in_place" (ResBlock's out-of-place form) or "attention" (the fused
    F.scaled_dot_product_attention at every size instead of the written-out softmax). The first and the last
    are module-wide in ddpm.unet, so every network runs without them while inside."""
    if change not in CHANGES:
        raise ValueError(f"unknown change {change!r}; choose one of {list(CHANGES)}")
    with contextlib.ExitStack() as stack:
        if change == "channels_last":
            stack.enter_context(mock.patch.object(unet, "cpu_layout", lambda h: h))
        if change == "attention":
            stack.enter_context(mock.patch.object(unet, "WRITTEN_OUT_MAX_POSITIONS", 0))
        if change == "in_place":
            for block in (m for m in net.modules() if isinstance(m, ResBlock)):
                block.forward = functools.partial(_resblock_out_of_place, block)
                stack.callback(delattr, block, "forward")        # back to the class's forward
        yield net


COMPILED = "ddpm.compiled (torch.compile, weights frozen in)"


def ablations(ddpm, batches=(4, 16, 100), repeats=40, compile=True):
    """The network as shipped against the network with one thing changed, run alternately, per batch size:
    rows of (change, batch, seconds as shipped, seconds changed, note). The changes undo each kept speed
    change, swap PATCH2 for FULL_RES, and (with `compile`) try the network of `ddpm.compiled`, whose first
    call per batch size compiles (the note gives how long)."""
    full_res = random_model("full_res").net
    fast = compiled(ddpm).net if compile else None
    rows = []
    for b in batches:
        x, t, y = torch.randn(b, *ddpm.sample_shape), torch.full((b,), 500), torch.randint(0, 10, (b,))
        shipped = functools.partial(ddpm.net, x, t, y)
        changes = [("NCHW activations instead of channels_last", functools.partial(_without, ddpm.net, "channels_last", shipped)),
                   ("out-of-place SiLU and adds in ResBlock", functools.partial(_without, ddpm.net, "in_place", shipped)),
                   ("fused attention kernel (F.scaled_dot_product_attention)",
                    functools.partial(_without, ddpm.net, "attention", shipped))]
        if ddpm.net.patch_size == 2:
            changes.append(("FULL_RES shape instead of PATCH2", functools.partial(full_res, x, t, y)))
        if fast is not None:
            changes.append((COMPILED, functools.partial(fast, x, t, y)))
        with torch.inference_mode():
            for change, fn in changes:
                shipped()                                     # oneDNN builds kernels for a new size on first use
                start = time.perf_counter()
                fn()
                first = time.perf_counter() - start
                note = f"first call at this batch size: {first:.0f} s" if change == COMPILED else ""
                n = max(4, repeats * 16 // max(b, 16))
                rows.append((change, b, *_interleaved(shipped, fn, repeats=n), note))
    return rows


def _interleaved(*fns, repeats):
    """Median seconds of each function, run in turn with the order rotated every round (a b, b a, a b, ...
    for two) so that a burst of load, or running first, favours none."""
    times = [[] for _ in fns]
    for i in range(repeats):
        order = list(range(len(fns)))
        order = order[i % len(fns):] + order[:i % len(fns)]
        for k in order:
            start = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - start)
    return tuple(statistics.median(t) for t in times)


def _without(net, change, forward):
    with undone(net, change):
        forward()


def main(argv=None):
    p = argparse.ArgumentParser(prog="ddpm bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats; long runs timed on their first steps and scaled")
    p.add_argument("--out", default=None,
                   help="also write a Markdown page to this file: what was measured, on which machine, and the table")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before measuring")
    p.add_argument("--net", default="patch2", choices=sorted(NETS), help="network shape (see ddpm/unet.py)")
    p.add_argument("--ablations", action="store_true",
                   help="instead of the main table: the network as shipped against it without each kept change, "
                        "with the other shape, and through ddpm.compiled (about 3 minutes)")
    p.add_argument("--playground", action="store_true",
                   help="instead of the main table: the 2-D playground's default run, SDEdit and interpolation with "
                        "the bundled MNIST model (about 15 s)")
    p.add_argument("--compile", action="store_true",
                   help="also time the network at batch 16 and 100 compiled (ddpm.compiled), against eager and the "
                        "matmul in alternating runs: about 40 s of compiling per batch size")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ablations:
        return _print_ablations(args)
    if args.playground:
        return _print_playground(args)
    return _print_main(args)


# The main table's end-to-end sampling runs: (images per class, classes (None: unconditional), sampler, steps,
# guidance scale s)
RUNS = ((1, tuple(range(10)), "ddim", 50, 3.0), (10, tuple(range(10)), "ddim", 50, 3.0), (4, None, "ddpm", None, 1.0))
# --quick times a run on its first steps, at most this many images x steps (at least 2 steps), and scales the time
QUICK_IMAGE_STEPS = 200


def _run_name(ddpm, n, classes, sampler, steps, guidance):
    images = f"{n} images" if classes is None else f"{len(classes)} classes x {n}"
    guided = f"guided (s={guidance:g})" if guidance != 1.0 else "unguided" + (" (null class)" if classes is None else "")
    return f"{images}, {guided} {get_sampler(sampler).title(steps, ddpm.T)}"


def _print_main(args):
    quick = args.quick
    load_before = os.getloadavg()
    t0 = time.perf_counter()

    ddpm = random_model(args.net)
    mm, mm_name = matmul_gflops()
    f_fwd, f_train = forward_flops(ddpm), train_flops(ddpm)
    rows = []

    def row(name, seconds, unit, flops=None, ratio=None, note="", mm_rate=None):
        mm_rate = mm_rate or mm
        rate = f"{flops / seconds / 1e9:.1f} ({100 * flops / seconds / 1e9 / mm_rate:.0f}%)" if flops else ""
        rows.append((name, unit(seconds), rate, f"{ratio:.2f}" if ratio else "", note))

    # training
    batch = 128
    n_train = 3 if quick else 6
    # alternating, best of each: the first training call of a process runs cold (on the AMD EPYC machine 614-639
    # img/s against 790-880 warm), which read as our loop 1.3x slower than the plain step
    s_ours, s_ref = [], []
    for _ in range(1 if quick else 2):
        s_ours.append(train_ours(ddpm, batch, n_train))
        s_ref.append(train_reference(ddpm, batch, n_train))
    s_ours, s_ref = min(s_ours), min(s_ref)
    ips = lambda s: f"{batch / s:.1f} img/s"
    row("train, batch 128: train_classconditional (EMA, clip)", s_ours, ips, f_train * batch, s_ours / s_ref,
        "ratio vs plain step" + ("" if quick else "; best of 2 alternating runs each"))
    row("train, batch 128: plain PyTorch step (fwd, MSE, bwd, Adam)", s_ref, ips, f_train * batch)

    # sampling, per step
    ms = lambda s: f"{1e3 * s:.1f} ms"
    overhead = {}
    n_steps = lambda b: (6 if quick else 15) if b < 100 else (3 if quick else 6)
    for b in (1, 16, 100):
        s_step, overhead[b] = step_time(ddpm, b, n_steps(b))
        s_net = net_time(ddpm, b, n_steps(b))
        row(f"sampling step, batch {b} (DDIM, unguided)", s_step, ms, f_fwd * b,
            note=f"network alone {1e3 * s_net:.1f} ms; {100 * overhead[b]:.1f}% of the step outside the network")

    if args.compile:
        fresh_inductor_cache()
        for b, first, t_fast, t_eager, mm_b in compiled_forward(ddpm, (16, 100), n_steps):
            eager_pct = 100 * f_fwd * b / t_eager / 1e9 / mm_b
            row(f"network forward, batch {b}, compiled (opt-in)", t_fast, ms, f_fwd * b, mm_rate=mm_b,
                note=f"`ddpm.compiled`, first call compiled {first:.0f} s; in alternating runs: eager "
                     f"{1e3 * t_eager:.1f} ms ({eager_pct:.0f}%), compiled / eager {t_fast / t_eager:.2f}, "
                     f"matmul {mm_b:.1f} GFLOP/s")

    # sampling, end to end, against diffusers
    secs = lambda s: f"{s:.2f} s"
    for loop in ((ddpm, *run) for run in RUNS):
        _, n, classes, sampler, steps, s = loop
        total = ddpm.T if get_sampler(sampler).all_steps else steps
        per_step_images = n * (1 if classes is None else len(classes)) * (2 if s != 1.0 else 1)
        limit = max(2, QUICK_IMAGE_STEPS // per_step_images) if quick and total * per_step_images > QUICK_IMAGE_STEPS else None
        # one step of each first: oneDNN builds its kernels for a new batch size on first use, a cost
        # that would otherwise be charged to whichever loop runs first
        ours(*loop, 1)
        diffusers_loop(*loop, 1)
        timings = [lockstep(our_steps(*loop), diffusers_steps(*loop), limit) for _ in range(2 if quick else 3)]
        t_ours, t_peer = (statistics.median(times) for times in zip(*timings, strict=True))
        ratio = statistics.median(a / b for a, b in timings)
        scale = total / limit if limit else 1.0
        diff = (ours(*loop, 1) - diffusers_loop(*loop, 1)).abs().max().item()
        note = f"diffusers {t_peer * scale:.2f} s; max abs difference after one step {diff:.1e}"
        if limit:
            note += f"; first {limit} steps x {scale:.0f}"
        row(_run_name(*loop), t_ours * scale, secs, f_fwd * per_step_images * total, ratio, note)

    load_after = os.getloadavg()
    lines = [
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {'quick' if quick else 'full'} run, "
        f"{time.perf_counter() - t0:.0f} s; load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after",
        f"network `{args.net}`: {f_fwd / 1e6:.1f} MFLOP per image forward, {f_train / 1e6:.1f} MFLOP per image train "
        f"step; dense fp32 matmul (2048^2, {mm_name}): {mm:.1f} GFLOP/s",
        "per-step time outside the network (hooks inside the loop): "
        + ", ".join(f"batch {b} {100 * o:.1f}%" for b, o in overhead.items()),
        "",
        "| figure | time | GFLOP/s (% of mm) | ours / peer | note |",
        "|---|---|---|---|---|",
    ] + [f"| {' | '.join(r)} |" for r in rows]
    _emit("\n".join(lines), args, "main")
    return rows


def fresh_inductor_cache():
    """Point inductor at an empty cache, so that torch.compile's first call costs what it costs a new Space."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ddpm-bench-inductor-")


def _print_ablations(args):
    fresh_inductor_cache()
    t0 = time.perf_counter()
    rows = ablations(random_model(args.net), repeats=10 if args.quick else 40)
    lines = [f"torch {torch.__version__}, threads {torch.get_num_threads()}, network `{args.net}`, forward pass in "
             f"inference mode, median of alternating runs, {time.perf_counter() - t0:.0f} s",
             "",
             "| change | batch | as shipped | changed | changed / shipped | note |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {c} | {b} | {1e3 * a:.1f} ms | {1e3 * w:.1f} ms | {w / a:.2f} | {note} |" for c, b, a, w, note in rows]
    _emit("\n".join(lines), args, "ablations")
    return rows


def playground_rows(seed=0):
    """(figure, seconds, note) rows: the playground's default 2-D run by the package's own train and sample, and
    SDEdit and interpolation on the bundled MNIST model, each as the app runs them (without drawing figures)."""
    r, rows = points.RECIPE, []
    data = points.make(r["shape"], 4000, generator=torch.Generator().manual_seed(seed))
    model = points.recipe_model(r, seed=seed)
    start = time.perf_counter()
    losses = train(model, points.loader(data, r["batch"], seed=seed), None, torch.optim.Adam(model.parameters(), lr=r["lr"]),
                   "cpu", max_seconds=r["seconds"], progress=False)
    rows.append(("2-D playground: default training run (two moons)", time.perf_counter() - start,
                 f"{len(losses)} steps of Algorithm 1, batch {r['batch']}, MLP {r['depth']} x {r['width']}, T = {r['T']}"))
    start = time.perf_counter()
    samples = sample(model, 2000, clip_x0=False, generator=torch.Generator().manual_seed(seed + 1))
    sw = sliced_wasserstein(samples, data[:2000], generator=torch.Generator().manual_seed(0))
    floor = sliced_wasserstein(data[2000:], data[:2000], generator=torch.Generator().manual_seed(0))
    rows.append(("2-D playground: 2000 samples, Algorithm 2", time.perf_counter() - start,
                 f"sliced Wasserstein to the data {sw:.3f} (data vs data {floor:.3f})"))
    mnist = load_pretrained("mnist")
    x0 = torch.full((1, 1, 28, 28), -1.0)
    x0[..., 4:24, 12:16] = 1.0                                            # a drawn "1": a white bar on black
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    y = torch.tensor([1])
    sdedit, interpolation = ("ddim", 20), ("dpmpp_2m", 10)                  # the sketch and interpolation tabs' own
    start = time.perf_counter()
    for t_start in (99, 299, 499, 699, 899):
        for _ in sample_steps(mnist, sample_xt(x0, t_start, eps, mnist.schedule.alpha_bar), y=y, sampler=sdedit[0],
                              steps=sdedit[1], guidance_scale=2.0, t_start=t_start):
            pass
    rows.append((f"SDEdit strip: 5 values of t_start, {get_sampler(sdedit[0]).title(sdedit[1], mnist.T)}, guided (s=2), "
                 "mnist", time.perf_counter() - start, "the strip the sketch tab shows after its run"))
    z = slerp(*(torch.randn(1, 28, 28, generator=torch.Generator().manual_seed(k)) for k in (0, 1)), torch.linspace(0, 1, 10))
    start = time.perf_counter()
    for _ in sample_steps(mnist, z, y=torch.full((10,), 3), sampler=interpolation[0], steps=interpolation[1],
                          guidance_scale=2.0):
        pass
    rows.append((f"interpolation: 10 images, {get_sampler(interpolation[0]).title(interpolation[1], mnist.T)}, guided "
                 "(s=2), mnist", time.perf_counter() - start, "slerp between two seeds"))
    return rows


def _print_playground(args):
    t0 = time.perf_counter()
    rows = playground_rows()
    lines = [f"torch {torch.__version__}, threads {torch.get_num_threads()}, {time.perf_counter() - t0:.0f} s", "",
             "| figure | time | note |", "|---|---|---|"]
    lines += [f"| {name} | {seconds:.2f} s | {note} |" for name, seconds, note in rows]
    _emit("\n".join(lines), args, "playground")
    return rows


# What each table measures: the paragraph above it on the page that --out writes
MEASURED = {
    "main": ("Speed of the package's own loops",
             "Training throughput (`train_classconditional` with EMA and gradient clipping, and a plain PyTorch step "
             "on the same network), the time of one sampling step, and whole sampling runs of our loop against the "
             "same network and guidance driven by diffusers' schedulers (the two loops advanced in lockstep, one "
             "step of each in turn). The model is MNIST-shaped (28x28, 10 classes) with random weights: speed does "
             "not depend on the weights' values. GFLOP/s count the network's FLOPs (torch's FlopCounterMode); "
             "\"% of mm\" is that rate as a fraction of this machine's dense fp32 matmul rate (a 2048 x 2048 "
             "product through MKL or oneDNN, whichever is faster here). \"ours / peer\" < 1: our loop is faster."),
    "ablations": ("What each kept speed change buys",
                  "The network's forward pass as shipped against the same network with one change undone "
                  "(NCHW activations, out-of-place ResBlock, the fused attention kernel), with the other "
                  "28x28 shape, and through `ddpm.compiled`; the two run alternately, per batch size."),
    "playground": ("The playground, SDEdit and interpolation",
                   "The 2-D playground's default training run and 2000 samples, and the sketch tab's SDEdit strip "
                   "and an interpolation with the bundled MNIST model, by the package's own functions."),
}


def machine():
    """Where the figures were measured: CPU model, logical CPUs, torch threads, torch and Python versions."""
    cpu = platform.processor() or platform.machine()
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads; torch {torch.__version__}, "
            f"Python {platform.python_version()}, {platform.system()}")


def page(title, what, table, command):
    """A Markdown page: what was measured, on which machine, by which command, and the table as printed."""
    return "\n".join([f"# {title}", "", what, "", f"Machine: {machine()}.", "",
                      f"Measured and written by `{command}`; run it again to replace this page.", "", table, ""])


def _emit(text, args, mode):
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(page(*MEASURED[mode], text, f"python -m ddpm bench {' '.join(args.argv)}"))


if __name__ == "__main__":
    main()
