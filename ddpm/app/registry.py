"""The app's model registry and its visitors' sessions.

Bundled models are sub-folders of one models folder (settings().models, default the bundled pretrained/), each with
model.safetensors + config.json and optionally examples.safetensors ("images" uint8 [N, 28, 28], "labels"
int64 [N]) and a judge; fine-tuned models live in a per-session registry keyed by Gradio's session hash, so
one visitor never sees or changes another visitor's models. The jobs that run in a session: jobs.py.

Session ids cost nothing to make, so what sessions hold is bounded, and paid for by whoever makes more: a session
remembers the network address that made it (CLIENT, set by guard.py for each call). Past a bound a session that
holds nothing in memory (its jobs kept no models, frames or drawings) may go at once; another address's session that
holds something goes only once it has been idle for settings().session_idle_s; else the newcomer's own address
pays with its least recently used session or model, and when none may go the newcomer is refused.
"""
import contextlib
import contextvars
import json
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import gradio as gr
import torch
from huggingface_hub import snapshot_download

from ..checkpoint import CheckpointError
from ..diffusion import load_model
from ..eval.evaluate import default_for
from ..eval.judge import load_judge
from ..pretrained import load_examples, load_pretrained
from .settings import settings

HUB_FILES = ["*.json", "*.safetensors", "*.md"]          # what a Hub model may bring: never a pickle
TMP_ROOT = os.path.join(tempfile.gettempdir(), "ddpm_app")       # one folder per server process, by its pid
CLIENT = contextvars.ContextVar("client_address", default=None)   # the network address of the call being served


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
    stops: dict = field(default_factory=dict)       # "reverse" / "finetune" / "grid" ... -> its running JobStop (jobs.py)
    frames: list = field(default_factory=list)      # the last reverse run: (x_t uint8, x0_hat uint8, caption)
    drawings: list = field(default_factory=list)    # sketches collected for fine-tuning, uint8 [28, 28]
    playground: dict = field(default_factory=dict)  # the last 2-D run: "model", "data", "losses"
    explore: list = field(default_factory=list)     # the last comparison: per tick, each column's x_t (uint8) + caption
    n_finetuned: int = 0
    jobs: int = 0                                   # jobs of this session running now: never evicted meanwhile
    address: str | None = None                      # the network address that made it
    used: float = field(default_factory=time.monotonic)   # when it last did or looked at something
    downloads: dict = field(default_factory=dict)   # output component id -> the cached file handed for download
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(dir=server_tmp()))

    def file(self, name):
        """A path for a file of this session (its folder made again if a sweep removed it)."""
        os.makedirs(self.workdir, exist_ok=True)
        return os.path.join(self.workdir, name)

    def drop_model(self, name):
        """Forget fine-tuned model `name` and its files (the folder save_pretrained wrote and its zip)."""
        self.models.pop(name, None)
        self.bases.pop(name, None)
        path = os.path.join(self.workdir, name)
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.remove(path + ".zip")

    def idle(self, now):
        return not self.jobs and now - self.used >= settings().session_idle_s

    def holds(self):
        """Whether it holds work in memory that its visitor would lose (a session without any is made again free)."""
        return bool(self.models or self.frames or self.drawings or self.playground or self.explore)


class Registry:
    """Bundled models, their examples and judges (loaded lazily, cached), and per-session models."""

    # Session ids come from the client, so they are untrusted: only work that needs a session creates one
    # (`session`); cheap calls (Stop, scrub, pickers) only look (`peek`). What is bounded is what sessions
    # hold (the module's docstring): fine-tuned models, which cost their maker real training time, go last.
    MAX_SESSION_MODELS = 3                                                   # fine-tuned models per session

    def __init__(self, models_dir, use_judges=True, hub_models=()):
        self.models_dir, self.use_judges, self.hub_models = models_dir, use_judges, list(hub_models)
        self.max_sessions, self.max_held_models = settings().max_sessions, settings().max_held_models   # the bounds below
        self._models, self._examples, self._judges = {}, {}, {}
        self._sessions = OrderedDict()
        # `lock` guards the sessions, and what a job changes in one (jobs.job); a download never blocks them
        self.lock, self._hub_lock = threading.Lock(), threading.Lock()

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
        """This visitor's session, created for work that needs one; past the bounds another goes (`_make_room`), or
        gr.Error says that the server holds all it can."""
        with self.lock:
            session = self._sessions.get(sid)
            if session is None:
                where = CLIENT.get()
                self._make_room(where)
                session = self._sessions[sid] = Session(address=where)
            session.used = time.monotonic()
            self._sessions.move_to_end(sid)
            self._evict_models(keep=sid)
            return session

    def forget(self, sid):
        """Drop session `sid` (its visitor left): its fine-tuned models, recorded frames and files."""
        with self.lock:
            session = self._sessions.pop(sid, None)
        if session is not None:
            shutil.rmtree(session.workdir, ignore_errors=True)

    def workdirs(self):
        """The folders of the sessions held now."""
        with self.lock:
            return {s.workdir for s in self._sessions.values()}

    def downloads(self):
        """The cached files handed to the sessions held now for download (guard.py notes them)."""
        with self.lock:
            return {path for s in self._sessions.values() for path in list(s.downloads.values())}

    def peek(self, sid):
        """This visitor's session if it exists, else None: for cheap calls, which never create or reorder one (a
        visitor who only looks, e.g. scrubs its frames, is not idle)."""
        session = self._sessions.get(sid)
        if session is not None:
            session.used = time.monotonic()
        return session

    def _victim(self, where, pick, now):
        """The least recently used session, not running a job, that `pick` accepts and that may go for a newcomer of
        address `where`: one that holds nothing, else one idle for session_idle_s (without fine-tuned models first),
        else one of `where`'s own."""
        sessions = sorted(((k, v) for k, v in self._sessions.items() if not v.jobs and pick(k, v)),
                          key=lambda kv: kv[1].used)
        for accept in (lambda v: not v.holds(), lambda v: v.idle(now) and not v.models, lambda v: v.idle(now),
                       lambda v: v.address == where and not v.models, lambda v: v.address == where):
            victim = next((k for k, v in sessions if accept(v)), None)
            if victim is not None:
                return victim
        return None

    def _make_room(self, where):
        """Before a session of address `where` is made (the lock held): evict one past address_sessions or
        max_sessions, counting only sessions without a job running (those are bounded by the job limits)."""
        limits, now = settings(), time.monotonic()
        waiting = [v for v in self._sessions.values() if not v.jobs]
        ours = [k for k, v in self._sessions.items() if v.address == where and not v.jobs]
        if len(ours) >= limits.address_sessions:     # the address's own least recently used session goes
            self._drop(min(ours, key=lambda k: self._sessions[k].used))
            waiting = [v for v in self._sessions.values() if not v.jobs]
        if len(waiting) >= self.max_sessions:
            victim = self._victim(where, lambda k, v: True, now)
            if victim is None:
                raise gr.Error(f"the server holds the work of {len(self._sessions)} visitors (at most "
                               f"{self.max_sessions}), all active in the last {limits.session_idle_s:g} s: try again "
                               "in a few minutes")
            self._drop(victim)

    def _drop(self, sid):
        shutil.rmtree(self._sessions.pop(sid).workdir, ignore_errors=True)

    def _evict_models(self, keep):
        """Past max_held_models (the lock held), fine-tuned models go, oldest first, from the least recently used
        session that may pay for `keep`'s address (`_victim`), `keep`'s own older ones last. When none may, the
        models stay over the bound: another address's active visitor never loses one."""
        where, now = self._sessions[keep].address, time.monotonic()
        while sum(len(v.models) for v in self._sessions.values()) > self.max_held_models:
            victim = self._victim(where, lambda k, v: v.models and k != keep, now)
            if victim is None and len(self._sessions[keep].models) > 1:
                victim = keep
            if victim is None:
                return
            self._sessions[victim].drop_model(next(iter(self._sessions[victim].models)))

    def model_names(self, sid=None):
        names = self.bundled() + self.hub_models
        own = self.peek(sid) if sid is not None else None
        return names + (list(own.models) if own is not None else [])

    def add_session_model(self, sid, name, ddpm, base):
        """Hold fine-tuned model `name` in session `sid`; its oldest past MAX_SESSION_MODELS goes, with its files."""
        s = self.session(sid)
        with self.lock:
            s.models[name], s.bases[name] = ddpm, base
            while len(s.models) > self.MAX_SESSION_MODELS:
                s.drop_model(next(iter(s.models)))
            self._evict_models(keep=sid)

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
        with self.lock:
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
        with self.lock:
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
        with self.lock:
            if name not in self._judges:
                try:
                    self._judges[name] = load_judge(os.path.join(self.models_dir, name))
                except (FileNotFoundError, CheckpointError):     # no judge here: the tab shows a note instead
                    self._judges[name] = None
            return self._judges[name]


_REGISTRY = None


def registry():
    """The app's Registry, made on first use from the settings (models, judge, hub_models)."""
    global _REGISTRY
    if _REGISTRY is None:
        s = settings()
        _REGISTRY = Registry(s.models, use_judges=s.judge, hub_models=s.hub_models)
    return _REGISTRY


def set_registry(models_dir, use_judges=True, hub_models=()):
    """Point the app at another models folder (tests use a folder of tiny models), and these Hub ids."""
    global _REGISTRY
    _REGISTRY = Registry(models_dir, use_judges, hub_models)
    return _REGISTRY
