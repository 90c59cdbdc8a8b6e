"""The app's jobs: each runs inside its visitor's session, can be stopped, and ends within a wall-time cap.

A heavy handler is marked `@holds_session(kind)`: while it runs its session exists and is not evicted, and
`session.stops[kind]` is its JobStop. A job is stopped by its Stop button (`stopper(kind)`), by a newer job of
its session, when its visitor leaves (`cancel`), and after settings().max_job_seconds of wall time; it checks
between its steps (`step_check`) and keeps what it made. After each job the freed memory goes back to the
system (`trim_memory`).
"""
import contextlib
import functools
import inspect
import threading

import gradio as gr

from ..memory import return_freed_memory
from .cores import take_share
from .registry import registry, session_id
from .settings import settings


# what each kind of job is called where a job it stopped says why
JOB_NAMES = {"reverse": "a reverse run (tab 2)", "grid": "a class grid (tab 3)", "finetune": "a fine-tune (tab 4)",
             "sdedit": "a sketch-to-image run (tab 5)", "interpolate": "an interpolation (tab 5)",
             "playground": "a 2-D training run (tab 6)", "explore": "a comparison (tab 7)",
             "sweep": "a curve measurement (tab 7)", "neighbours": "a neighbour search (tab 7)"}


class JobStop(threading.Event):
    """A job's stop signal, and why it was given (shown to the visitor)."""
    reason = None

    def stop(self, reason):
        if not self.is_set():
            self.reason = reason
            self.set()


class Stopped(Exception):
    """Raised by `step_check` inside a job that was asked to stop; the handler says why."""


def step_check(stop):
    """A per-step callback for `sample`: the job's share of the cores, and the end of the job once `stop` is set."""
    def check(*_):
        take_share()
        if stop.is_set():
            raise Stopped(stop.reason)
    return check


def trim_memory():
    """Hand the memory freed by a finished job back to the system (glibc's malloc_trim).

    glibc keeps freed heap pages for the process, per thread arena; the training tensors of a fine-tune
    (gradients, Adam moments, activations) are freed into arenas of Gradio's worker threads, so without this the
    server's RSS climbed by 30-450 MB a round under load with fine-tunes (831 -> 2139 MB in 8 rounds) (docs/reliability.md).
    Called after every job and by the periodic sweep, unless settings().malloc_trim is off (to
    measure what it does); a no-op where the C library is not glibc. Within a job, between its steps, freed memory
    is kept for reuse (ddpm/memory.py: keep_freed_memory, set by app.py)."""
    if settings().malloc_trim:
        return_freed_memory()


@contextlib.contextmanager
def job(sid, kind):
    """`with job(sid, kind) as session:` around a job's work: the session exists and is not evicted until the job
    ends (also when its stream is closed early), and `session.stops[kind]` is the job's JobStop. One heavy job per
    session: a new one stops the session's running jobs (they end after their current step, keeping what they
    made). Every job is stopped after settings().max_job_seconds of wall time."""
    reg = registry()
    session, stop, cap = reg.session(sid), JobStop(), settings().max_job_seconds
    timer = threading.Timer(cap, stop.stop, args=(f"the time cap of {cap:g} s per job",))
    timer.daemon = True
    with reg.lock:
        for other in session.stops.values():         # the stopped tab says which job took its place
            other.stop(f"{JOB_NAMES.get(kind, 'a newer job')} of this visitor started (one job at a time)")
        session.stops[kind] = stop
        session.jobs += 1
    timer.start()
    try:
        yield session
    finally:
        timer.cancel()
        with reg.lock:
            session.jobs -= 1
            if session.stops.get(kind) is stop:
                del session.stops[kind]
        trim_memory()


def stop(sid, kind, reason="Stop was pressed"):
    """Ask session `sid`'s running job of this kind ("reverse", "finetune", ...) to stop after its current step."""
    event = getattr(registry().peek(sid), "stops", {}).get(kind)
    if event is not None:
        event.stop(reason)


def cancel(sid, reason="its visitor left"):
    """Stop every running job of session `sid` (its visitor left, or its connection closed)."""
    session = registry().peek(sid)
    for event in list(session.stops.values()) if session is not None else []:
        event.stop(reason)


def holds_session(kind):
    """Mark an app handler (a function, or a generator that streams) as a job of `kind` of its visitor's session:
    the session is created and is not evicted while the job runs, and the job can be stopped (see `job`)."""
    def mark(handler):
        signature = inspect.signature(handler)

        def sid_of(args, kwargs):
            return session_id(signature.bind_partial(*args, **kwargs).arguments.get("request"))

        if inspect.isgeneratorfunction(handler):
            @functools.wraps(handler)
            def streamed(*args, **kwargs):
                with job(sid_of(args, kwargs), kind):
                    yield from handler(*args, **kwargs)
            return streamed

        @functools.wraps(handler)
        def call(*args, **kwargs):
            with job(sid_of(args, kwargs), kind):
                return handler(*args, **kwargs)
        return call
    return mark


def stopper(kind):
    """The Stop button's handler for jobs of `kind`: a cheap call, it never creates a session."""
    def stop_job(request: gr.Request = None):
        stop(session_id(request), kind)
    stop_job.__doc__ = f"Ask this session's running {kind} job to stop after its current step; what it made is kept."
    stop_job.__name__ = f"{kind}_stop"
    return stop_job
