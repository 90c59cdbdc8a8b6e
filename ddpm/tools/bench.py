"""Speed benchmark: training throughput, sampling time, the diffusers loop as a peer, and the hardware limit.

    python -m ddpm bench            # full run (a few minutes on 2 cores)
    python -m ddpm bench --quick    # short run: fewer repeats; long sampling runs timed on their first steps and scaled
    python -m ddpm bench --out artifacts/bench.md
    python -m ddpm bench --compile    # also: the network at batch 16 and 100 through `ddpm.compiled` (opt-in)
    python -m ddpm bench --ablations  # instead: the network against it without each kept change, and compiled
    python -m ddpm bench --targets    # instead: what app users wait for, with the bundled models (issue 15's targets)

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
import contextlib
import copy
import functools
import itertools
import os
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ..diffusion import DDPM
from ..sampling import compiled, sample, sample_steps
from ..training import EMA, train_classconditional
from ..unet import FULL_RES, PATCH2, Attention, ResBlock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))     # the checkout (app.py)


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


def train_ours(ddpm, batch, steps, warmup=2, *, before=False):
    """Seconds per step of train_classconditional (EMA, grad clip 1.0, fused Adam as `python -m ddpm train`
    builds it), median over `steps` steps. before=True: as training ran before issue 15 (Adam's for-each
    implementation, NCHW activations, the fused attention kernel)."""
    ddpm = copy.deepcopy(ddpm)
    ddpm.net.channels_last_on_cpu = not before
    for block in ddpm.net.modules():
        if isinstance(block, Attention):
            block.fused_on_cpu = before
    stamps = []
    optim = torch.optim.Adam(ddpm.parameters(), lr=2e-4, fused=not before)
    train_classconditional(ddpm, _fake_batches(ddpm, warmup + steps + 1, batch), 1, optim, "cpu",
                           ema=EMA(ddpm, 0.999), grad_clip=1.0, progress=False, max_steps=warmup + steps + 1,
                           callback=lambda step, loss: stamps.append(time.perf_counter()))
    return statistics.median([b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1:])])


def _train_child(threads, model, batch, steps, before):
    """The body of train_in_child's fresh process: prints seconds per step and minor page faults per step."""
    import resource

    from ..memory import keep_freed_memory
    from ..pretrained import load_pretrained
    torch.set_num_threads(threads)
    keep_freed_memory()                                   # a no-op under DDPM_KEEP_FREED_MEMORY=0 ("before")
    ddpm = load_pretrained(model).train()
    train_ours(ddpm, batch, 2, before=before)             # a process's first training call runs cold
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = train_ours(ddpm, batch, steps, before=before)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(seconds, faults / (2 + steps + 1))              # train_ours runs warmup (2) + steps + 1 steps


def train_in_child(model, batch, steps, *, before=False):
    """(seconds per step, minor page faults per step) of train_ours on a bundled model in a fresh interpreter
    with this process's torch threads: "before" with DDPM_KEEP_FREED_MEMORY=0, as training ran before issue 15
    (the allocator's setting is process-wide and cannot be undone, so the two cannot share a process)."""
    import subprocess
    import sys
    code = (f"from ddpm.tools.bench import _train_child; "
            f"_train_child({torch.get_num_threads()}, {model!r}, {batch}, {steps}, {before})")
    env = {**os.environ, "DDPM_KEEP_FREED_MEMORY": "0" if before else "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(f"the training benchmark's child process failed:\n{out.stderr[-2000:]}")
    seconds, faults = out.stdout.split()[-2:]
    return float(seconds), float(faults)


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
            t_fast, t_eager, t_mm = _interleaved(lambda: fast.net(x, t, y), lambda: ddpm.net(x, t, y), mm,
                                                 repeats=repeats(b))
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


def diffusers_steps(ddpm, n_per_class, classes, sampler, steps, guidance):
    """The same sampling with diffusers' scheduler around the same network and the same guidance, one x per step."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
    s = ddpm.schedule
    common = dict(num_train_timesteps=s.T, beta_schedule="linear", beta_start=float(s.betas[0]),
                  beta_end=float(s.betas[-1]), clip_sample=True)
    if sampler == "dpmpp_2m":                  # as tests/test_dpm_solver.py: thresholding at 1.0 = clipping x0_hat
        del common["clip_sample"]
        scheduler = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing",
                                                thresholding=True, sample_max_value=1.0, **common)
        scheduler.set_timesteps(steps)
        step_kwargs = {}
    elif sampler == "ddpm":
        scheduler = DDPMScheduler(variance_type="fixed_large", **common)   # sigma_t^2 = beta_t, as our default
        scheduler.set_timesteps(s.T)
        step_kwargs = {}
    else:
        scheduler = DDIMScheduler(timestep_spacing="trailing", set_alpha_to_one=True, **common)
        scheduler.set_timesteps(steps)
        step_kwargs = dict(use_clipped_model_output=True)        # as our ddim_step: eps re-derived from clipped x0_hat
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
    for x in itertools.islice(steps, limit):
        pass
    return x


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


@contextlib.contextmanager
def undone(net, change):
    """`net` with one kept speed change undone: "channels_last" (NCHW activations), "in_place" (ResBlock) or
    "attention" (the fused F.scaled_dot_product_attention instead of the written-out softmax)."""
    if change not in ("channels_last", "in_place", "attention"):
        raise ValueError(f"unknown change {change!r}; choose 'channels_last', 'in_place' or 'attention'")
    blocks = [m for m in net.modules() if isinstance(m, ResBlock)] if change == "in_place" else []
    attention = [m for m in net.modules() if isinstance(m, Attention)] if change == "attention" else []
    channels_last = net.channels_last_on_cpu
    net.channels_last_on_cpu = channels_last and change != "channels_last"
    for block in blocks:
        block.forward = functools.partial(_resblock_out_of_place, block)
    fused_before = [vars(block).get("fused_on_cpu") for block in attention]
    for block in attention:
        block.fused_on_cpu = True
    try:
        yield net
    finally:
        net.channels_last_on_cpu = channels_last
        for block in blocks:
            del block.forward
        for block, before in zip(attention, fused_before):
            if before is None:
                del block.fused_on_cpu                          # back to the class's setting
            else:
                block.fused_on_cpu = before


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
        shipped = lambda net=ddpm.net: net(x, t, y)

        def without(change):
            with undone(ddpm.net, change):
                shipped()
        changes = [("NCHW activations instead of channels_last", functools.partial(without, "channels_last")),
                   ("out-of-place SiLU and adds in ResBlock", functools.partial(without, "in_place")),
                   ("fused attention kernel (F.scaled_dot_product_attention)", functools.partial(without, "attention"))]
        if ddpm.net.patch_size == 2:
            changes.append(("FULL_RES shape instead of PATCH2", lambda: shipped(full_res)))
        if fast is not None:
            changes.append((COMPILED, lambda: shipped(fast)))
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


def main(argv=None):
    p = argparse.ArgumentParser(prog="ddpm bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats; long runs timed on their first steps and scaled")
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before measuring")
    p.add_argument("--net", default="patch2", choices=sorted(NETS), help="network shape (see ddpm/unet.py)")
    p.add_argument("--ablations", action="store_true",
                   help="instead of the main table: the network as shipped against it without each kept change, "
                        "with the other shape, and through ddpm.compiled (about 3 minutes)")
    p.add_argument("--playground", action="store_true",
                   help="instead of the main table: the 2-D playground's default run, SDEdit and interpolation with "
                        "the bundled MNIST model (about 15 s)")
    p.add_argument("--targets", action="store_true",
                   help="instead of the main table: the app's grid and first reverse frame through a real server "
                        "(gradio_client), our DPM-Solver++ loop against diffusers' and training against the matmul "
                        "rate, with the bundled models and the app's default sampler (about 3 minutes)")
    p.add_argument("--before-models", default=None,
                   help="with --targets: a models folder as ddpm/bundled was before, served with the tabs' earlier "
                        "defaults for the 'before' column (default: this checkout's models)")
    p.add_argument("--compile", action="store_true",
                   help="also time the network at batch 16 and 100 compiled (ddpm.compiled), against eager and the "
                        "matmul in alternating runs: about 40 s of compiling per batch size")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ablations:
        return _print_ablations(args)
    if args.playground:
        return _print_playground(args)
    if args.targets:
        return _print_targets(args)
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
            pct = lambda s: f"{100 * f_fwd * b / s / 1e9 / mm_b:.0f}%"
            row(f"network forward, batch {b}, compiled (opt-in)", t_fast, ms, f_fwd * b, mm_rate=mm_b,
                note=f"`ddpm.compiled`, first call compiled {first:.0f} s; in alternating runs: eager {1e3 * t_eager:.1f} ms "
                     f"({pct(t_eager)}), compiled / eager {t_fast / t_eager:.2f}, matmul {mm_b:.1f} GFLOP/s")

    # sampling, end to end, against diffusers
    secs = lambda s: f"{s:.2f} s"
    runs = [("10 classes x 1, guided (s=3) DDIM-50", 1, list(range(10)), "ddim", 50, 3.0, 50, 2 * 10),
            ("10 classes x 10, guided (s=3) DDIM-50", 10, list(range(10)), "ddim", 50, 3.0, 50, 2 * 100),
            ("4 images DDPM-1000, unguided (null class)", 4, None, "ddpm", None, 1.0, 1000, 4)]
    for name, n, classes, sampler, steps, s, total, per_step_images in runs:
        limit = None
        if quick and total * per_step_images > 1000:
            limit = max(2, 1000 // per_step_images)
        # one step of each first: oneDNN builds its kernels for a new batch size on first use, a cost
        # that would otherwise be charged to whichever loop runs first
        ours(ddpm, n, classes, sampler, steps, s, 1)
        diffusers_loop(ddpm, n, classes, sampler, steps, s, 1)
        loop = (ddpm, n, classes, sampler, steps, s)
        timings = [lockstep(our_steps(*loop), diffusers_steps(*loop), limit) for _ in range(2 if quick else 3)]
        t_ours, t_peer = (statistics.median(times) for times in zip(*timings))
        ratio = statistics.median(a / b for a, b in timings)
        scale = total / limit if limit else 1.0
        diff = (ours(ddpm, n, classes, sampler, steps, s, 1) - diffusers_loop(ddpm, n, classes, sampler, steps, s, 1)).abs().max().item()
        note = f"diffusers {t_peer * scale:.2f} s; max abs difference after one step {diff:.1e}"
        if limit:
            note += f"; first {limit} steps x {scale:.0f}"
        row(name, t_ours * scale, secs, f_fwd * per_step_images * total, ratio, note)

    load_after = os.getloadavg()
    lines = [
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {'quick' if quick else 'full'} run, "
        f"{time.perf_counter() - t0:.0f} s; load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after",
        f"network `{args.net}`: {f_fwd / 1e6:.1f} MFLOP per image forward, {f_train / 1e6:.1f} MFLOP per image train step; "
        f"dense fp32 matmul (2048^2, {mm_name}): {mm:.1f} GFLOP/s",
        "per-step time outside the network (hooks inside the loop): " + ", ".join(f"batch {b} {100 * o:.1f}%" for b, o in overhead.items()),
        "",
        "| figure | time | GFLOP/s (% of mm) | ours / peer | note |",
        "|---|---|---|---|---|",
    ] + [f"| {' | '.join(r)} |" for r in rows]
    _emit("\n".join(lines), args.out)
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
    _emit("\n".join(lines), args.out)
    return rows


def playground_rows(seed=0):
    """(figure, seconds, note) rows: the playground's default 2-D run by the package's own train and sample, and
    SDEdit and interpolation on the bundled MNIST model, each as the app runs them (without drawing figures)."""
    from .. import points
    from ..diffusion import sample_xt
    from ..eval.metrics import sliced_wasserstein
    from ..pretrained import load_pretrained
    from ..sampling import slerp
    from ..training import train
    r, rows = points.RECIPE, []
    data = points.make(r["shape"], 4000, generator=torch.Generator().manual_seed(seed))
    model = points.recipe_model(r, seed=seed)
    start = time.perf_counter()
    losses = train(model, points.loader(data, r["batch"], seed=seed), None, torch.optim.Adam(model.parameters(), lr=r["lr"]), "cpu",
                   max_seconds=r["seconds"], progress=False)
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
    start = time.perf_counter()
    for t_start in (99, 299, 499, 699, 899):
        for _ in sample_steps(mnist, sample_xt(x0, t_start, eps, mnist.schedule.alpha_bar), y=y, sampler="ddim",
                              steps=20, guidance_scale=2.0, t_start=t_start):
            pass
    rows.append(("SDEdit strip: 5 values of t_start, DDIM-20, guided (s=2), mnist", time.perf_counter() - start,
                 "the strip the sketch tab shows after its run"))
    z = slerp(*(torch.randn(1, 28, 28, generator=torch.Generator().manual_seed(k)) for k in (0, 1)), torch.linspace(0, 1, 10))
    start = time.perf_counter()
    for _ in sample_steps(mnist, z, y=torch.full((10,), 3), sampler="dpmpp_2m", steps=10, guidance_scale=2.0):
        pass
    rows.append(("interpolation: 10 images, DPM-Solver++-10, guided (s=2), mnist", time.perf_counter() - start,
                 "slerp between two seeds"))
    return rows


def _print_playground(args):
    t0 = time.perf_counter()
    rows = playground_rows()
    lines = [f"torch {torch.__version__}, threads {torch.get_num_threads()}, {time.perf_counter() - t0:.0f} s", "",
             "| figure | time | note |", "|---|---|---|"]
    lines += [f"| {name} | {seconds:.2f} s | {note} |" for name, seconds, note in rows]
    _emit("\n".join(lines), args.out)
    return rows


APP_PY = os.path.join(ROOT, "app.py")
TARGETS = {"grid default": 3.0, "grid 10 x 10": 4.0, "first frame": 0.3, "dpmpp ratio": 1.0, "train % of mm": 60.0,
           "compare first frame": 0.5, "compare": 6.0}


def app_default(model, guidance=2.0):
    """The sampler and steps the app's grid and reverse tabs take for a bundled model (its quality-per-cost
    table, ddpm.eval.evaluate.default_for), or DDIM-25, the grid tab's own default, without one."""
    from ..eval.evaluate import default_for
    from ..pretrained import bundled_folder
    return default_for(bundled_folder(model), guidance) or ("ddim", 25)


@contextlib.contextmanager
def app_server(threads, timeout=180, models_dir=None, keep_freed_memory=True):
    """`python app.py` of this checkout on a free loopback port with the bundled models (or the models folder
    `models_dir`), freed memory kept for reuse or (False) returned to the system as before issue 15; yields
    its URL."""
    import socket
    import subprocess
    import sys
    import urllib.request
    if not os.path.isfile(APP_PY):
        raise FileNotFoundError(f"--targets starts the app: {APP_PY} is missing (run it from a checkout)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False", "DDPM_APP_TORCH_THREADS": str(threads),
           "DDPM_KEEP_FREED_MEMORY": "1" if keep_freed_memory else "0",
           **({"DDPM_APP_MODELS": os.path.abspath(models_dir)} if models_dir else {})}
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, APP_PY], cwd=os.path.dirname(APP_PY), env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}/", time.time() + timeout
    try:
        while True:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"app.py did not start on {url}; its log: {log.name}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def first_output_seconds(client, args, api_name, stop_api):
    """Seconds from submitting a streaming call to its first output; the run is then stopped."""
    start = time.perf_counter()
    job = client.submit(*args, api_name=api_name)
    while not job.outputs():
        if job.done():
            raise RuntimeError(f"{api_name} ended without an output: {job.exception()}")
        time.sleep(0.002)
    seconds = time.perf_counter() - start
    client.predict(api_name=stop_api)
    job.result(timeout=120)
    return seconds


# the sampling tabs' (sampler, steps) before the quality-per-cost defaults (issue 15): grid DDIM-25, reverse DDIM-50
BEFORE = {"grid": ("ddim", 25), "reverse": ("ddim", 50)}


def _label(sampler, steps):
    return f"{'DPM-Solver++' if sampler == 'dpmpp_2m' else sampler.upper()}-{steps}"


def _server_rows(url, settings, repeats):
    """{figure: (seconds, note)} of the grid tab and the reverse tab's first frame through one running server;
    settings(model, tab) -> (sampler, steps)."""
    from gradio_client import Client

    from ..pretrained import BUNDLED
    client, out = Client(url, verbose=False), {}
    for model in BUNDLED:
        names = [c[0] if isinstance(c, (list, tuple)) else c for c in client.predict(model, api_name="/grid_classes")["choices"]][:10]
        sampler, steps = settings(model, "grid")
        for per_class, key in ((8, "grid default"), (10, "grid 10 x 10")):
            call = lambda: client.predict(model, names, per_class, 2.0, sampler, steps, 0, api_name="/grid")
            call()                                      # the first call loads the model and its judge
            out[(model, key)] = (statistics.median(_timed(call) for _ in range(repeats)), _label(sampler, steps),
                                 f"median of {repeats} after one warm-up")
        sampler, steps = settings(model, "reverse")
        frame = [first_output_seconds(client, (model, names[0], sampler, steps, 0.0, 2.0, k, 4), "/reverse",
                                      "/reverse_stop") for k in range(repeats + 2)]
        out[(model, "first frame")] = (statistics.median(frame[1:]), _label(sampler, steps),
                                       f"median of {len(frame) - 1} after one warm-up; all: "
                                       f"{', '.join(f'{v:.2f}' for v in frame)} s")
    return out, client


def _explore_rows(client, repeats):
    """The Explore tab through the server: the first streamed frame of a 3-column comparison and the whole
    default comparison (the tab's default scene: 3 columns x 8 images), on the first bundled model."""
    from ..pretrained import BUNDLED
    _, n, seed, *settings = client.predict("?tab=explore", api_name="/scene")      # the default scene's values
    args = (BUNDLED[0], n, seed, *settings)
    client.predict(*args, api_name="/compare")                                        # warm-up
    first = [first_output_seconds(client, args, "/compare", "/compare_stop") for _ in range(repeats + 1)]
    whole = [_timed(lambda: client.predict(*args, api_name="/compare")) for _ in range(repeats)]
    return [(f"{BUNDLED[0]}: explore tab, first streamed frame of a 3-column comparison (the default scene)",
             statistics.median(first), None, TARGETS["compare first frame"], f"median of {len(first)} after one warm-up"),
            (f"{BUNDLED[0]}: explore tab, default comparison, 3 columns x {n} images, judge included",
             statistics.median(whole), None, TARGETS["compare"], f"median of {repeats} after one warm-up")]


def target_rows(threads, repeats=3, quick=False, before_models=None):
    """(figure, value, value before, target, note) rows: what a Space visitor waits for and the loops' cost.

    "After" is this checkout's app with its defaults (the quality-per-cost tables); "before" is, in the same run,
    the sampling tabs' earlier defaults (BEFORE) served by `before_models` (a models folder as ddpm/bundled was
    before, e.g. with the FULL_RES FashionMNIST model), or by this checkout's models when it is None; training
    "before" is the earlier optimizer and layout (train_ours(before=True)). Both "before"s run with freed memory
    returned to the system (DDPM_KEEP_FREED_MEMORY=0), as everything ran before keep_freed_memory."""
    from ..pretrained import BUNDLED, load_pretrained
    rows = []
    with app_server(threads) as url:
        after, client = _server_rows(url, lambda model, tab: app_default(model), repeats)
        explore_rows = _explore_rows(client, repeats)
    with app_server(threads, models_dir=before_models, keep_freed_memory=False) as url:
        before, _ = _server_rows(url, lambda model, tab: BEFORE[tab], repeats)
    for (model, key), (value, label, note) in after.items():
        old, old_label, _ = before[(model, key)]
        what = {"grid default": "grid tab, 10 classes x 8, guided (s=2)", "grid 10 x 10": "grid tab, 10 classes x 10, "
                "guided (s=2)", "first frame": "reverse tab, first streamed frame after Start (batch 4)"}[key]
        rows.append((f"{model}: {what}; before {old_label}, after {label}", value, old, TARGETS[key],
                     f"through the server (gradio_client){', judge included' if 'grid' in key else ''}; {note}"))
    rows += explore_rows
    ddpm = load_pretrained(BUNDLED[0])
    sampler, steps = app_default(BUNDLED[0])
    loop = (ddpm, 8, list(range(10)), "dpmpp_2m", steps if sampler == "dpmpp_2m" else 10, 2.0)
    ours(*loop, 1), diffusers_loop(*loop, 1)                            # oneDNN's kernels for this batch size
    timings = [lockstep(our_steps(*loop), diffusers_steps(*loop)) for _ in range(repeats)]
    diff = (ours(*loop, 1) - diffusers_loop(*loop, 1)).abs().max().item()
    rows.append((f"{BUNDLED[0]}: our DPM-Solver++(2M)-{loop[4]} loop / diffusers' DPMSolverMultistepScheduler loop, "
                 "10 classes x 8, guided (s=2), lockstep", statistics.median(a / b for a, b in timings), None,
                 TARGETS["dpmpp ratio"], f"ours {statistics.median(a for a, _ in timings):.2f} s, diffusers "
                 f"{statistics.median(b for _, b in timings):.2f} s; max abs difference after one step {diff:.1e}"))
    batch = 128
    mm_before, mm_name = matmul_gflops()
    n_steps = 3 if quick else 6
    old_runs, new_runs = [], []
    for _ in range(2):                                   # alternate the two, so the machine's drift hits both
        old_runs.append(train_in_child(BUNDLED[0], batch, n_steps, before=True))
        new_runs.append(train_in_child(BUNDLED[0], batch, n_steps))
    (s_old, faults_old), (s_new, faults_new) = min(old_runs), min(new_runs)
    mm = statistics.mean([mm_before, matmul_gflops()[0]])
    flops = train_flops(ddpm) * batch
    rows.append((f"{BUNDLED[0]}: training step, batch 128 (train_classconditional, EMA, clip), % of the matmul rate; "
                 "before: for-each Adam, NCHW, fused attention kernel, freed memory returned to the system; after: "
                 "fused Adam, channels_last, attention as two matmuls, keep_freed_memory", 100 * flops / s_new / 1e9 / mm,
                 100 * flops / s_old / 1e9 / mm, TARGETS["train % of mm"],
                 f"after {batch / s_new:.0f} img/s ({flops / s_new / 1e9:.1f} GFLOP/s), before {batch / s_old:.0f} img/s; "
                 f"minor page faults per step after {faults_new:,.0f}, before {faults_old:,.0f}; "
                 f"each a fresh process, best of 2 alternating runs each; matmul ({mm_name}, the faster library here) "
                 f"{mm_before:.1f} GFLOP/s before, {mm:.1f} the mean of before and after"))
    return rows


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _print_targets(args):
    t0, load = time.perf_counter(), os.getloadavg()[0]
    threads = torch.get_num_threads()
    rows = target_rows(threads, repeats=2 if args.quick else 3, quick=args.quick, before_models=args.before_models)
    lines = [f"torch {torch.__version__}, threads {threads} (the app's too), {time.perf_counter() - t0:.0f} s; load "
             f"average (1 min) {load:.2f} before, {os.getloadavg()[0]:.2f} after; before: "
             + (f"models from {args.before_models}" if args.before_models else "this checkout's models")
             + ", freed memory returned to the system (DDPM_KEEP_FREED_MEMORY=0)", "",
             "| figure | before | after | target | met | note |", "|---|---|---|---|---|---|"]
    for name, value, old, target, note in rows:
        ratio = "/ diffusers" in name
        pct = "% of the matmul" in name
        shown = lambda v: "-" if v is None else f"{v:.2f}" if ratio else f"{v:.0f}%" if pct else f"{v:.2f} s"
        goal = f">= {target:.0f}%" if pct else f"<= {target:.2f}" if ratio else f"< {target:g} s"
        met = value >= target if pct else value <= target if ratio else value < target
        lines.append(f"| {name} | {shown(old)} | {shown(value)} | {goal} | {'yes' if met else '**no**'} | {note} |")
    _emit("\n".join(lines), args.out)
    return rows


def _emit(text, out):
    print(text)
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
