"""What a visitor of the deployed app waits for, against its targets (issue 15), before and after:

    python benchmarks/app_targets.py --threads 2
    python benchmarks/app_targets.py --threads 2 --before-models <folder> --out artifacts/targets.md

It starts `python app.py` of this checkout twice on a loopback port and times, through a real server
(gradio_client), the grid tab and the reverse tab's first streamed frame with the bundled models, and the Explore
tab's default comparison. "After" is this checkout's app with its defaults (the quality-per-cost tables); "before"
is, in the same run, the sampling tabs' earlier defaults (BEFORE) served by --before-models (a models folder as
the bundled models were before), or by this checkout's models. It also times the app's default sampling loop
against diffusers' scheduler loop, and a training step of the bundled MNIST model against the machine's matmul
rate in fresh processes, before (for-each Adam, NCHW activations, the fused attention kernel, freed memory
returned to the system) and after. The package's own speed table is `python -m ddpm bench`.
"""
import argparse
import contextlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import torch
from gradio_client import Client

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)                                      # the checkout: app.py and ddpm/
sys.path.insert(0, ROOT)
from ddpm.eval.evaluate import default_for  # noqa: E402
from ddpm.memory import keep_freed_memory  # noqa: E402
from ddpm.pretrained import BUNDLED, bundled_folder, load_pretrained  # noqa: E402
from ddpm.sampling import get_sampler  # noqa: E402
from ddpm.tools.bench import (diffusers_loop, diffusers_scheduler, diffusers_steps, lockstep, matmul_gflops, our_steps,  # noqa: E402
                              ours, page, train_flops, train_ours, undone)

APP_PY = os.path.join(ROOT, "app.py")
TARGETS = {"grid default": 3.0, "grid 10 x 10": 4.0, "first frame": 0.3, "loop ratio": 1.0, "train % of mm": 60.0,
           "compare first frame": 0.5, "compare": 6.0}
# the sampling tabs' (sampler, steps) before the quality-per-cost defaults (issue 15): grid DDIM-25, reverse DDIM-50
BEFORE = {"grid": ("ddim", 25), "reverse": ("ddim", 50)}
GRID_OWN = ("ddim", 25)          # the grid tab's own default, where a model has no quality-per-cost table


def app_default(model, guidance=2.0):
    """The sampler and steps the app's grid and reverse tabs take for a bundled model (its quality-per-cost
    table, ddpm.eval.evaluate.default_for), or the grid tab's own default without one."""
    return default_for(bundled_folder(model), guidance) or GRID_OWN


def train_step_seconds(ddpm, batch, steps, *, warmup=2, before=False):
    """Seconds per training step (ddpm.tools.bench.train_ours); before=True as training ran before issue 15:
    Adam's for-each implementation, NCHW activations and the fused attention kernel."""
    if not before:
        return train_ours(ddpm, batch, steps, warmup)
    with undone(ddpm.net, "channels_last"), undone(ddpm.net, "attention"):
        return train_ours(ddpm, batch, steps, warmup, fused_adam=False)


def _train_child(threads, model, batch, steps, before):
    """The body of train_in_child's fresh process: prints seconds per step and minor page faults per step."""
    torch.set_num_threads(threads)
    keep_freed_memory()                                   # a no-op under DDPM_KEEP_FREED_MEMORY=0 ("before")
    ddpm = load_pretrained(model).train()
    train_step_seconds(ddpm, batch, 2, before=before)     # a process's first training call runs cold
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = train_step_seconds(ddpm, batch, steps, before=before)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(seconds, faults / (2 + steps + 1))              # train_ours runs warmup (2) + steps + 1 steps


def train_in_child(model, batch, steps, *, before=False):
    """(seconds per step, minor page faults per step) of train_step_seconds on a bundled model in a fresh
    interpreter with this process's torch threads: "before" with DDPM_KEEP_FREED_MEMORY=0, as training ran
    before issue 15 (the allocator's setting is process-wide and cannot be undone, so the two cannot share a
    process)."""
    code = (f"import sys; sys.path.insert(0, {HERE!r}); from app_targets import _train_child; "
            f"_train_child({torch.get_num_threads()}, {model!r}, {batch}, {steps}, {before})")
    env = {**os.environ, "DDPM_KEEP_FREED_MEMORY": "0" if before else "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(f"the training benchmark's child process failed:\n{out.stderr[-2000:]}")
    seconds, faults = out.stdout.split()[-2:]
    return float(seconds), float(faults)


@contextlib.contextmanager
def app_server(threads, timeout=180, models_dir=None, keep_freed=True):
    """`python app.py` of this checkout on a free loopback port with the bundled models (or the models folder
    `models_dir`), freed memory kept for reuse or (False) returned to the system as before issue 15; yields
    its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False", "DDPM_APP_TORCH_THREADS": str(threads),
           "DDPM_KEEP_FREED_MEMORY": "1" if keep_freed else "0",
           **({"DDPM_APP_MODELS": os.path.abspath(models_dir)} if models_dir else {})}
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, APP_PY], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
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


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def first_output_seconds(client, api_name, stop_api, *args, **kwargs):
    """Seconds from submitting a streaming call to its first output; the run is then stopped."""
    start = time.perf_counter()
    job = client.submit(*args, **kwargs, api_name=api_name)
    while not job.outputs():
        if job.done():
            raise RuntimeError(f"{api_name} ended without an output: {job.exception()}")
        time.sleep(0.002)
    seconds = time.perf_counter() - start
    client.predict(api_name=stop_api)
    job.result(timeout=120)
    return seconds


def _server_rows(url, settings, repeats):
    """{(model, figure): (seconds, run's title, note)} of the grid tab and the reverse tab's first frame through one
    running server; settings(model, tab) -> (sampler, steps)."""
    client, out = Client(url, verbose=False), {}
    for model in BUNDLED:
        T = load_pretrained(model).T
        choices = client.predict(model, api_name="/grid_classes")["choices"]
        names = [c[0] if isinstance(c, (list, tuple)) else c for c in choices][:10]
        sampler, steps = settings(model, "grid")
        for per_class, key in ((8, "grid default"), (10, "grid 10 x 10")):
            grid = dict(model=model, classes=names, sampler=sampler, steps=steps, guidance=2.0, seed=0, per_class=per_class)
            client.predict(**grid, api_name="/grid")                      # the first call loads the model and its judge
            seconds = statistics.median(_timed(client.predict, **grid, api_name="/grid") for _ in range(repeats))
            out[(model, key)] = (seconds, get_sampler(sampler).title(steps, T), f"median of {repeats} after one warm-up")
        sampler, steps = settings(model, "reverse")
        frame = [first_output_seconds(client, "/reverse", "/reverse_stop", model=model, class_name=names[0], sampler=sampler,
                                      steps=steps, eta=0.0, guidance=2.0, seed=k, batch=4) for k in range(repeats + 2)]
        out[(model, "first frame")] = (statistics.median(frame[1:]), get_sampler(sampler).title(steps, T),
                                       f"median of {len(frame) - 1} after one warm-up; all: "
                                       f"{', '.join(f'{v:.2f}' for v in frame)} s")
    return out, client


def _explore_rows(client, repeats):
    """The Explore tab through the server: the first streamed frame of a 3-column comparison and the whole
    default comparison (the tab's default scene: 3 columns x 8 images), on the first bundled model."""
    _, n, seed, *settings = client.predict("?tab=explore", api_name="/scene")      # the default scene's values
    args = (BUNDLED[0], n, seed, *settings)
    client.predict(*args, api_name="/compare")                                        # warm-up
    first = [first_output_seconds(client, "/compare", "/compare_stop", *args) for _ in range(repeats + 1)]
    whole = [_timed(client.predict, *args, api_name="/compare") for _ in range(repeats)]
    return [(f"{BUNDLED[0]}: explore tab, first streamed frame of a 3-column comparison (the default scene)",
             statistics.median(first), None, TARGETS["compare first frame"], f"median of {len(first)} after one warm-up"),
            (f"{BUNDLED[0]}: explore tab, default comparison, 3 columns x {n} images, judge included",
             statistics.median(whole), None, TARGETS["compare"], f"median of {repeats} after one warm-up")]


def _loop_row(ddpm, repeats):
    """Our loop with the app's default sampler against diffusers' scheduler loop, in lockstep."""
    sampler, steps = app_default(BUNDLED[0])
    loop = (ddpm, 8, list(range(10)), sampler, steps, 2.0)
    ours(*loop, 1), diffusers_loop(*loop, 1)                            # oneDNN's kernels for this batch size
    timings = [lockstep(our_steps(*loop), diffusers_steps(*loop)) for _ in range(repeats)]
    diff = (ours(*loop, 1) - diffusers_loop(*loop, 1)).abs().max().item()
    peer = type(diffusers_scheduler(sampler, ddpm.schedule, steps)[0]).__name__
    return (f"{BUNDLED[0]}: our {get_sampler(sampler).title(steps, ddpm.T)} loop (the app's default) / diffusers' "
            f"{peer} loop, 10 classes x 8, guided (s=2), lockstep", statistics.median(a / b for a, b in timings), None,
            TARGETS["loop ratio"], f"ours {statistics.median(a for a, _ in timings):.2f} s, diffusers "
            f"{statistics.median(b for _, b in timings):.2f} s; max abs difference after one step {diff:.1e}")


def _training_row(ddpm, quick):
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
    return (f"{BUNDLED[0]}: training step, batch 128 (train_classconditional, EMA, clip), % of the matmul rate; "
            "before: for-each Adam, NCHW, fused attention kernel, freed memory returned to the system; after: "
            "fused Adam, channels_last, attention as two matmuls, keep_freed_memory", 100 * flops / s_new / 1e9 / mm,
            100 * flops / s_old / 1e9 / mm, TARGETS["train % of mm"],
            f"after {batch / s_new:.0f} img/s ({flops / s_new / 1e9:.1f} GFLOP/s), before {batch / s_old:.0f} img/s; "
            f"minor page faults per step after {faults_new:,.0f}, before {faults_old:,.0f}; "
            f"each a fresh process, best of 2 alternating runs each; matmul ({mm_name}, the faster library here) "
            f"{mm_before:.1f} GFLOP/s before, {mm:.1f} the mean of before and after")


def target_rows(threads, repeats=3, quick=False, before_models=None):
    """(figure, value, value before, target, note) rows: what a Space visitor waits for and the loops' cost.
    Both "before"s run with freed memory returned to the system (DDPM_KEEP_FREED_MEMORY=0), as everything ran
    before keep_freed_memory."""
    rows = []
    with app_server(threads) as url:
        after, client = _server_rows(url, lambda model, tab: app_default(model), repeats)
        explore_rows = _explore_rows(client, repeats)
    with app_server(threads, models_dir=before_models, keep_freed=False) as url:
        before, _ = _server_rows(url, lambda model, tab: BEFORE[tab], repeats)
    what = {"grid default": "grid tab, 10 classes x 8, guided (s=2)", "grid 10 x 10": "grid tab, 10 classes x 10, "
            "guided (s=2)", "first frame": "reverse tab, first streamed frame after Start (batch 4)"}
    for (model, key), (value, title, note) in after.items():
        old, old_title, _ = before[(model, key)]
        rows.append((f"{model}: {what[key]}; before {old_title}, after {title}", value, old, TARGETS[key],
                     f"through the server (gradio_client){', judge included' if 'grid' in key else ''}; {note}"))
    rows += explore_rows
    ddpm = load_pretrained(BUNDLED[0])
    rows.append(_loop_row(ddpm, repeats))
    rows.append(_training_row(ddpm, quick))
    return rows


def _cell(value, kind):
    return "-" if value is None else {"ratio": f"{value:.2f}", "pct": f"{value:.0f}%", "s": f"{value:.2f} s"}[kind]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and training steps")
    p.add_argument("--threads", type=int, default=None, help="torch threads here and in the app (default: torch's)")
    p.add_argument("--before-models", default=None,
                   help="a models folder as the bundled models were before, served with the tabs' earlier defaults "
                        "for the 'before' column (default: this checkout's models)")
    p.add_argument("--out", default=None, help="also write the table as a Markdown page to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0, load = time.perf_counter(), os.getloadavg()[0]
    threads = torch.get_num_threads()
    rows = target_rows(threads, repeats=2 if args.quick else 3, quick=args.quick, before_models=args.before_models)
    lines = [f"torch {torch.__version__}, threads {threads} (the app's too), {time.perf_counter() - t0:.0f} s; load "
             f"average (1 min) {load:.2f} before, {os.getloadavg()[0]:.2f} after; before: "
             + (f"models from {args.before_models}" if args.before_models else "this checkout's models")
             + ", freed memory returned to the system (DDPM_KEEP_FREED_MEMORY=0)", "",
             "| figure | before | after | target | met | note |", "|---|---|---|---|---|---|"]
    for name, value, old, target, note in rows:
        kind = "ratio" if "/ diffusers" in name else "pct" if "% of the matmul" in name else "s"
        goal = {"ratio": f"<= {target:.2f}", "pct": f">= {target:.0f}%", "s": f"< {target:g} s"}[kind]
        met = value >= target if kind == "pct" else value <= target if kind == "ratio" else value < target
        lines.append(f"| {name} | {_cell(old, kind)} | {_cell(value, kind)} | {goal} | {'yes' if met else '**no**'} | {note} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(page("What app visitors wait for", __doc__.split("\n\n", 2)[2].strip(), table,
                         f"python benchmarks/app_targets.py {' '.join(sys.argv[1:] if argv is None else argv)}"))
    return rows


if __name__ == "__main__":
    main()
