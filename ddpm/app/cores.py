"""The app's CPU cores, shared among the jobs running now (reverse runs, class grids, fine-tuning).

A job alone gets every core. Jobs that run at once split the cores (at least one thread each), so that
their threads do not outnumber the cores and spin against each other. On 2 cores a 10 x 10 guided
DDIM-50 grid through the app took 17-18 s alone, against 26-27 s with the earlier fixed one thread per
job, and 30 s each for two at once, against 28 s. Torch's thread count belongs
to the thread that sets it, and Gradio may run each step of a streamed handler on another worker
thread, so a streamed job sets its share again before every update it streams, and a long call (a
class grid) between sampling steps: a job's share shrinks when another job starts and grows back when
that one ends.
"""
import functools
import inspect
import os
import threading

import torch

from .settings import settings


def cpu_budget(cgroup="/sys/fs/cgroup/cpu.max"):
    """Cores the app may use: DDPM_APP_TORCH_THREADS (settings().torch_threads) if set, else the container's CPU
    quota (cgroup v2, as on a Hugging Face Space, where the host may show far more CPUs), else the CPUs it may run on."""
    if settings().torch_threads is not None:
        return settings().torch_threads
    try:
        with open(cgroup) as f:
            quota, period = f.read().split()
        if quota != "max":
            return max(1, int(quota) // int(period))
    except (OSError, ValueError):
        pass
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


CORES = cpu_budget()
_lock = threading.Lock()
_running = 0                     # jobs inside a `shares_cores` handler right now


def _count(change):
    global _running
    with _lock:
        _running += change


def threads_now():
    """Torch threads for the next step of a job: the cores divided among the running jobs."""
    return max(1, CORES // max(1, _running))


def take_share(*_):
    """Set this thread's torch threads to its job's share now (also a `sample(callback=)` between steps)."""
    torch.set_num_threads(threads_now())


def shares_cores(handler):
    """Make an app handler (a function, or a generator that streams) a job that takes its share of the cores."""
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def streamed(*args, **kwargs):
            _count(+1)
            steps = handler(*args, **kwargs)
            try:
                while True:
                    take_share()
                    try:
                        update = next(steps)
                    except StopIteration:
                        return
                    yield update
            finally:                                  # also when Gradio closes the stream early
                steps.close()
                _count(-1)
        return streamed

    @functools.wraps(handler)
    def call(*args, **kwargs):
        _count(+1)
        try:
            take_share()
            return handler(*args, **kwargs)
        finally:
            _count(-1)
    return call
