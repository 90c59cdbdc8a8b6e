"""The app's model registry and its visitors' sessions.

Bundled models are sub-folders of one models folder (DDPM_APP_MODELS, default the bundled pretrained/), each with
model.safetensors + config.json and optionally examples.safetensors ("images" uint8 [N, 28, 28], "labels"
int64 [N]) and a judge; fine-tuned models live in a per-session registry keyed by Gradio's session hash, so
one visitor never sees or changes another visitor's models.
"""
import contextlib
import functools
import inspect
import json
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import gradio as gr
import torch

from ..checkpoint import CheckpointError
from ..eval.evaluate import default_for
from ..eval.judge import load_judge
from huggingface_hub import snapshot_download

from ..diffusion import load_model
from ..memory import return_freed_memory
from ..pretrained import BUNDLED_DIR, load_examples, load_pretrained
from .cores import take_share

# Hub models a visitor may pick (DDPM_APP_HUB_MODELS, comma-separated; "" for none): downloaded on first pick
HUB_MODELS = [m.strip() for m in os.environ.get("DDPM_APP_HUB_MODELS", "google/ddpm-cifar10-32").split(",") if m.strip()]
HUB_FILES = ["*.json", "*.safetensors", "*.md"]


MAX_JOB_SECONDS = int(os.environ.get("DDPM_APP_MAX_JOB_SECONDS", 360))      # wall-time cap of every job


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


TRIM = os.environ.get("DDPM_APP_MALLOC_TRIM", "1") != "0"     # 0: never (to measure what it does)


def trim_memory():
    """Hand the memory freed by a finished job back to the system (glibc's malloc_trim).

    glibc keeps freed heap pages for the process, per thread arena; the training tensors of a fine-tune
    (gradients, Adam moments, activations) are freed into arenas of Gradio's worker threads, so without this the
    server's RSS climbed by 30-450 MB a round under load with fine-tunes (831 -> 2139 MB in 8 rounds) (README, Reliability). Called after
    every job and by the periodic sweep; a no-op where the C library is not glibc. Within a job, between its
    steps, freed memory is kept for reuse (ddpm/memory.py: keep_freed_memory, set by app.py)."""
    if TRIM:
        return_freed_memory()


TMP_ROOT = os.path.join(tempfile.gettempdir(), "ddpm_app")       # one folder per server process, by its pid


def server_tmp():
    """This server's temp folder, TMP_ROOT/<pid>: the sessions' folders live in it (see guard.sweep)."""
    folder = os.path.join(TMP_ROOT, str(os.getpid()))
    os.makedirs(folder, exist_ok=True)
    return folder


def session_id(request):
    """Gradio's per-browser session hash; tests pass any object with `session_hash`, or None."""
    return getattr(request, "session_hash", None) or "local"


@dataclass
class Session:
    models: "OrderedDict[str, object]" = field(default_factory=OrderedDict)   # fine-tuned DDPMs, by name
    bases: dict = field(default_factory=dict)       # fine-tuned name -> bundled folder its examples come from
    stops: dict = field(default_factory=dict)       # "reverse" / "finetune" / "grid" ... -> the running job's JobStop
    frames: list = field(default_factory=list)      # the last reverse run: (x_t uint8, x0_hat uint8, caption)
    drawings: list = field(default_factory=list)    # sketches collected for fine-tuning, uint8 [28, 28]
    playground: dict = field(default_factory=dict)  # the last 2-D run: "model", "data", "losses"
    explore: list = field(default_factory=list)     # the last comparison: per tick, each column's x_t (uint8) + caption
    n_finetuned: int = 0
    jobs: int = 0                                   # jobs of this session running now: never evicted meanwhile
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(dir=server_tmp()))

    def file(self, name):
        """A path for a file of this session (its folder made again if a sweep removed it)."""
        os.makedirs(self.workdir, exist_ok=True)
        return os.path.join(self.workdir, name)


class Registry:
    """Bundled models, their examples and judges (loaded lazily, cached), and per-session models."""

    # Session ids come from the client, so they are untrusted: only work that needs a session creates one
    # (`session`); cheap calls (Stop, scrub, pickers) only look (`peek`). What is bounded is what sessions
    # hold: fine-tuned models, which cost their maker real training time, go last.
    MAX_SESSIONS = int(os.environ.get("DDPM_APP_MAX_SESSIONS", 256))         # sessions held at once
    MAX_HELD_MODELS = int(os.environ.get("DDPM_APP_MAX_HELD_MODELS", 48))    # fine-tuned models over all sessions
    MAX_SESSION_MODELS = 3                                                   # fine-tuned models per session

    def __init__(self, models_dir, use_judges=True, hub_models=()):
        self.models_dir, self.use_judges, self.hub_models = models_dir, use_judges, list(hub_models)
        self._models, self._examples, self._judges = {}, {}, {}
        self._sessions = OrderedDict()
        self._lock, self._hub_lock = threading.Lock(), threading.Lock()   # a download never blocks the sessions

    def bundled(self):
        if not os.path.isdir(self.models_dir):
            return []
        return sorted((d for d in os.listdir(self.models_dir)
                       if os.path.isfile(os.path.join(self.models_dir, d, "config.json"))),
                      key=lambda d: (d != "mnist", d))          # MNIST first: the default of every tab

    def datasets(self):
        """Bundled folders that hold examples.safetensors."""
        if not os.path.isdir(self.models_dir):
            return []
        return sorted((d for d in os.listdir(self.models_dir)
                       if os.path.isfile(os.path.join(self.models_dir, d, "examples.safetensors"))),
                      key=lambda d: (d != "mnist", d))

    def session(self, sid):
        """This visitor's session, created for work that needs one; evicts others only past the bounds."""
        with self._lock:
            if sid not in self._sessions:
                self._sessions[sid] = Session()
            self._sessions.move_to_end(sid)
            self._evict(keep=sid)
            return self._sessions[sid]

    @contextlib.contextmanager
    def job(self, sid, kind):
        """`with registry().job(sid, kind) as session:` around a job's work: the session exists and is not
        evicted until the job ends (also when its stream is closed early), and `session.stops[kind]` is the job's
        JobStop. One heavy job per session: a new one stops the session's running jobs (they end after their
        current step, keeping what they made). Every job is stopped after MAX_JOB_SECONDS of wall time."""
        session, stop = self.session(sid), JobStop()
        timer = threading.Timer(MAX_JOB_SECONDS, stop.stop, args=(f"the time cap of {MAX_JOB_SECONDS} s per job",))
        timer.daemon = True
        with self._lock:
            for other in session.stops.values():
                other.stop("a newer job of this session started")
            session.stops[kind] = stop
            session.jobs += 1
        timer.start()
        try:
            yield session
        finally:
            timer.cancel()
            with self._lock:
                session.jobs -= 1
                if session.stops.get(kind) is stop:
                    del session.stops[kind]
            trim_memory()

    def stop(self, sid, kind, reason="Stop was pressed"):
        """Ask session `sid`'s running job of this kind ("reverse", "finetune", ...) to stop after its current step."""
        event = getattr(self.peek(sid), "stops", {}).get(kind)
        if event is not None:
            event.stop(reason)

    def cancel(self, sid, reason="its visitor left"):
        """Stop every running job of session `sid` (its visitor left, or its connection closed)."""
        session = self.peek(sid)
        for event in list(session.stops.values()) if session is not None else []:
            event.stop(reason)

    def workdirs(self):
        """The folders of the sessions held now."""
        with self._lock:
            return {s.workdir for s in self._sessions.values()}

    def peek(self, sid):
        """This visitor's session if it exists, else None: for cheap calls, which never create or reorder one."""
        return self._sessions.get(sid)

    def _evict(self, keep):
        """Drop least recently used sessions past the bounds (called with the lock held), and their files.

        Past MAX_SESSIONS, sessions without fine-tuned models go first; past MAX_HELD_MODELS, the least
        recently used session that holds models goes. The session at work (`keep`) stays."""
        def drop(pick):
            victim = next((k for k, v in self._sessions.items() if k != keep and not v.jobs and pick(v)), None)
            if victim is None:
                return False
            shutil.rmtree(self._sessions.pop(victim).workdir, ignore_errors=True)
            return True
        while len(self._sessions) > self.MAX_SESSIONS and (drop(lambda v: not v.models) or drop(lambda v: True)):
            pass
        while sum(len(v.models) for v in self._sessions.values()) > self.MAX_HELD_MODELS and drop(lambda v: v.models):
            pass

    def model_names(self, sid=None):
        names = self.bundled() + self.hub_models
        own = self.peek(sid) if sid is not None else None
        return names + (list(own.models) if own is not None else [])

    def add_session_model(self, sid, name, ddpm, base):
        s = self.session(sid)
        s.models[name], s.bases[name] = ddpm, base
        while len(s.models) > self.MAX_SESSION_MODELS:
            old, _ = s.models.popitem(last=False)
            s.bases.pop(old, None)
        with self._lock:
            self._evict(keep=sid)

    def model(self, name, sid=None):
        """A DDPM by name: this session's fine-tuned models first, then the bundled ones (loaded once)."""
        own = self.peek(sid) if sid is not None else None
        if own is not None and name in own.models:
            return own.models[name]
        if name in self.hub_models:
            return self._hub_model(name)
        if name not in self.bundled():
            raise gr.Error(f"model {name!r} is not available; choose one of {self.model_names(sid)}"
                           + ("" if self.bundled() else " (no bundled models yet)"))
        with self._lock:
            if name not in self._models:
                self._models[name] = load_pretrained(os.path.join(self.models_dir, name)).eval()
            return self._models[name]

    def _hub_model(self, repo_id):
        """A listed Hub model, downloaded the first time a visitor picks it (JSON and safetensors files only,
        never a pickle), then kept; a clear message when the Hub cannot be reached."""
        with self._hub_lock:
            if repo_id not in self._models:
                try:
                    folder = snapshot_download(repo_id, allow_patterns=HUB_FILES)
                except Exception as err:                     # offline, unknown repo, refused: say so, briefly
                    raise gr.Error(f"model {repo_id!r} could not be downloaded from the Hugging Face Hub "
                                   f"({type(err).__name__}); the bundled models {self.bundled()} work offline") from None
                try:
                    self._models[repo_id] = load_model(folder).eval()
                except (ValueError, OSError) as err:
                    raise gr.Error(f"model {repo_id!r} cannot be used here: {err}".replace(folder, repo_id)) from None
            return self._models[repo_id]

    def config(self, name):
        """The config.json of a bundled model (only the listed names)."""
        if name not in self.bundled():
            raise gr.Error(f"model {name!r} is not available; choose one of {self.bundled()}")
        with open(os.path.join(self.models_dir, name, "config.json")) as f:
            return json.load(f)

    def sampler_default(self, name, guidance):
        """(sampler, steps) from a bundled model's quality-per-cost table (the fewest steps whose FD is within 5% of
        DDIM-50's at this guidance), or None: not a bundled model, or no table beside it."""
        return default_for(os.path.join(self.models_dir, name), guidance) if name in self.bundled() else None

    def base_folder(self, name, sid=None):
        """The bundled folder whose examples and judge fit model `name`."""
        own = self.peek(sid) if sid is not None else None
        if own is not None and name in own.bases:
            return own.bases[name]
        return name

    def examples(self, name):
        """(images uint8 [N, H, W], labels [N]) of a dataset folder listed by `datasets()`; any other name (a path,
        `mnist/../x`) is refused by name, so a visitor reads nothing but the listed choices."""
        if name not in self.datasets():
            raise gr.Error(f"dataset {name!r} is not available; choose one of {self.datasets()}")
        with self._lock:
            if name not in self._examples:
                images, labels = load_examples(os.path.join(self.models_dir, name))
                if images.dtype != torch.uint8 or images.dim() != 3 or len(labels) != len(images):
                    raise gr.Error(f"the examples of {name!r} must hold 'images' uint8 [N, H, W] and 'labels' [N], got "
                                   f"{images.dtype} {tuple(images.shape)} and {tuple(labels.shape)}")
                self._examples[name] = (images, labels.long())
            return self._examples[name]

    def judge(self, name):
        """The judge classifier of bundled folder `name`, or None (no judge, or judges switched off)."""
        if not self.use_judges:
            return None
        with self._lock:
            if name not in self._judges:
                try:
                    self._judges[name] = load_judge(os.path.join(self.models_dir, name))
                except (FileNotFoundError, CheckpointError):     # no judge here: the tab shows a note instead
                    self._judges[name] = None
            return self._judges[name]


_REGISTRY = None


def registry():
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry(os.environ.get("DDPM_APP_MODELS", BUNDLED_DIR),
                             use_judges=os.environ.get("DDPM_APP_JUDGE", "1") != "0", hub_models=HUB_MODELS)
    return _REGISTRY


def set_registry(models_dir, use_judges=True, hub_models=()):
    """Point the app at another models folder (tests use a folder of tiny models), and these Hub ids."""
    global _REGISTRY
    _REGISTRY = Registry(models_dir, use_judges, hub_models)
    return _REGISTRY


def holds_session(kind):
    """Mark an app handler (a function, or a generator that streams) as a job of `kind` of its visitor's session:
    the session is created and is not evicted while the job runs, and the job can be stopped (see Registry.job)."""
    def mark(handler):
        signature = inspect.signature(handler)

        def sid_of(args, kwargs):
            return session_id(signature.bind_partial(*args, **kwargs).arguments.get("request"))

        if inspect.isgeneratorfunction(handler):
            @functools.wraps(handler)
            def streamed(*args, **kwargs):
                with registry().job(sid_of(args, kwargs), kind):
                    yield from handler(*args, **kwargs)
            return streamed

        @functools.wraps(handler)
        def call(*args, **kwargs):
            with registry().job(sid_of(args, kwargs), kind):
                return handler(*args, **kwargs)
        return call
    return mark


def stopper(kind):
    """The Stop button's handler for jobs of `kind`: a cheap call, it never creates a session."""
    def stop(request: gr.Request = None):
        registry().stop(session_id(request), kind)
    stop.__doc__ = f"Ask this session's running {kind} job to stop after its current step; what it made is kept."
    stop.__name__ = f"{kind}_stop"
    return stop


MODEL_PICKERS = 5          # the model dropdowns of tabs 2, 3, 5 (SDEdit, interpolation) and 7


def app_init(request: gr.Request = None):
    """On page load: the dataset picker, then every model picker, filled with what exists now."""
    reg = registry()
    datasets, models = reg.datasets(), reg.model_names(session_id(request))
    first = models[0] if models else None
    return (gr.update(choices=datasets, value=datasets[0] if datasets else None),
            *[gr.update(choices=models, value=first) for _ in range(MODEL_PICKERS)])


DEFAULT_GUIDANCE = 2.0              # the guidance slider's start value in every tab (app.py)


def sampler_for(fallback):
    """The handler for a sampling tab's model picker: when the model changes, the tab's sampler and steps move to
    that model's measured default (Registry.sampler_default) at the measured guidance nearest the tab's (1 for
    s <= 1, else 2), or to `fallback`, the tab's own (sampler, steps), for a model without a table (a visitor's
    fine-tuned one, a Hub one)."""
    def pick(model, guidance):
        measured = 1.0 if isinstance(guidance, (int, float)) and guidance <= 1.0 else DEFAULT_GUIDANCE
        choice = (registry().sampler_default(model, measured) if isinstance(model, str) else None) or fallback
        return gr.update(value=choice[0]), gr.update(value=choice[1])
    return pick


def model_picker(request: gr.Request = None):
    """A model picker's choices again (after fine-tuning added a model), keeping its value."""
    return gr.update(choices=registry().model_names(session_id(request)))


def end_session(request: gr.Request = None):
    """When a browser tab closes: stop its jobs, forget its fine-tuned models, recorded frames and files."""
    sid, reg = session_id(request), registry()
    reg.cancel(sid)
    with reg._lock:
        session = reg._sessions.pop(sid, None)
    if session is not None:
        shutil.rmtree(session.workdir, ignore_errors=True)
