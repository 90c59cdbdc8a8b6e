"""The app's settings: one field per DDPM_APP_* environment variable, read once per process.

    settings()           the process's Settings, read from the environment on first use
    load_settings(env)   read and check every variable of `env` (a dict); a bad value raises ValueError naming it
    use_settings(s)      make `s` the process's settings (tests; None reads the environment again)

A variable that is unset or blank takes its default (DDPM_APP_HUB_MODELS="" means no Hub models). The name of a
field is its variable's, lower-cased, without DDPM_APP_: DDPM_APP_SESSION_JOBS is `settings().session_jobs`.
docs/deploying.md has the table and what to set on a Space and on a lecture laptop.
"""
import contextlib
import dataclasses
import math
import os
import re
from dataclasses import dataclass

from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..pretrained import BUNDLED_DIR

PREFIX = "DDPM_APP_"


@dataclass(frozen=True)
class Settings:
    # --- heavy jobs running at once, all visitors together (app.py's concurrency groups); they share the cores
    sampling_concurrency: int = 2      # sampling jobs (reverse runs, grids, SDEdit, comparisons, curves); 2
    train_concurrency: int = 2         # training jobs (fine-tuning, the 2-D playground); 2
    # --- the queue's guards (guard.py)
    session_jobs: int = 2              # heavy jobs of one session, running or waiting; a new one stops the older; 2
    max_waiting: int = 32              # heavy jobs waiting, all sessions together; 32
    address_jobs: int = 16             # heavy jobs of one network address, all its sessions; max(session_jobs, max_waiting // 2)
    proxy_hops: int = 0                # trusted proxies in front: the address is the proxy_hops-th of X-Forwarded-For
                                       # from the right (0: the peer's); 1 when SPACE_ID is set (a Space), else 0
    session_calls: int = 8             # light calls (forward process, pickers, scrubbing) of one session waiting; 8
    address_calls: int = 128           # light calls of one network address waiting, all its sessions; 128 (half the queue)
    address_upload_mb: float = 256     # MB of uploads one network address may send in 10 minutes; 256
    max_tmp_mb: float = 1024           # MB of Gradio's cache plus the sessions' files; the sweep removes the oldest past it; 1024
    sweep_s: float = 60                # seconds between two sweeps of the temp folders (one also runs at start); 60
    min_file_age_s: float = 120        # files younger than this are never swept: a page may still be fetching them; 120
    malloc_trim: bool = True           # hand freed memory back to the system after each job and sweep (0: never, to
                                       # measure what it does); 1
    # --- models and sessions (registry.py, jobs.py)
    models: str = BUNDLED_DIR          # folder of the bundled models, one sub-folder each; the installed pretrained/
    judge: bool = True                 # load the judge classifiers beside the models (0: the judge notes say they are off); 1
    hub_models: tuple[str, ...] = ("google/ddpm-cifar10-32",)   # Hub ids the pickers list, downloaded on first pick
                                                                 # (comma-separated, "" for none); google/ddpm-cifar10-32
    max_job_seconds: float = 360       # wall-time cap of every job, after which it stops and keeps what it made; 360
    max_sessions: int = 256            # sessions held at once; past it, idle ones go (those without fine-tuned models
                                       # first), else the newcomer's address's own; 256
    address_sessions: int = 128        # sessions of one network address held at once; past it its own go; max_sessions // 2
    session_idle_s: float = 600        # a session idle this long may be evicted for another address's; 600
    max_held_models: int = 48          # fine-tuned models held, all sessions together (3 per session at most); 48
    # --- inputs and cores (inputs.py, cores.py)
    torch_threads: int | None = None   # CPU cores the jobs share; unset: the container's CPU quota, else the CPUs
    max_train_seconds: int = 300       # the fine-tuning budget slider's top, in seconds; 300
    max_playground_seconds: int = 60   # the 2-D playground's training-time slider's top, in seconds; 60


def _whole(low):
    def read(name, raw):
        if not re.fullmatch(r"[0-9]+", raw) or int(raw) < low:
            raise ValueError(f"{name}={raw!r}: give a whole number >= {low}")
        return int(raw)
    return read


def _number(low, *, above=False):
    def read(name, raw):
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or (above and value == low):
            raise ValueError(f"{name}={raw!r}: give a number {'>' if above else '>='} {low}")
        return value
    return read


def _switch(name, raw):
    if raw not in ("0", "1"):
        raise ValueError(f"{name}={raw!r}: give 1 (on, the default) or 0 (off)")
    return raw == "1"


def _folder(name, raw):
    if not os.path.isdir(raw):
        raise ValueError(f"{name}={raw!r}: give a folder that exists, holding one sub-folder per model")
    return raw


def _hub_ids(name, raw):
    ids = tuple(part.strip() for part in raw.split(",") if part.strip())
    for repo_id in ids:
        try:
            validate_repo_id(repo_id)
        except HFValidationError:
            raise ValueError(f"{name}={raw!r}: {repo_id!r} is not a Hub model id; give ids such as owner/name, "
                             "separated by commas, or an empty value for none") from None
    return ids


READERS = {
    "sampling_concurrency": _whole(1), "train_concurrency": _whole(1),
    "session_jobs": _whole(1), "max_waiting": _whole(1), "address_jobs": _whole(1), "proxy_hops": _whole(0),
    "session_calls": _whole(1), "address_calls": _whole(1), "address_upload_mb": _number(0),
    "max_tmp_mb": _number(0), "sweep_s": _number(0, above=True),
    "min_file_age_s": _number(0), "malloc_trim": _switch,
    "models": _folder, "judge": _switch, "hub_models": _hub_ids, "max_job_seconds": _number(0, above=True),
    "max_sessions": _whole(1), "address_sessions": _whole(1), "session_idle_s": _number(0), "max_held_models": _whole(0),
    "torch_threads": _whole(1), "max_train_seconds": _whole(5), "max_playground_seconds": _whole(1),
}


def variable(field):
    """The environment variable of a Settings field: max_waiting -> DDPM_APP_MAX_WAITING."""
    return PREFIX + field.upper()


def load_settings(environ=os.environ):
    """Settings from `environ`, every DDPM_APP_* variable checked: a bad value, or a variable that is no setting
    (a misspelt name would otherwise be ignored without a word), raises ValueError naming it and what is allowed."""
    names = {variable(f.name): f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(k for k in environ if k.startswith(PREFIX) and k not in names)
    if unknown:
        raise ValueError(f"{unknown[0]} is not a setting of the app; the settings are {sorted(names)} "
                         "(docs/deploying.md)")
    values = {}
    for name, field in names.items():
        raw = environ.get(name, "").strip()
        if raw or (field == "hub_models" and name in environ):      # blank is the default, but "" lists no Hub model
            values[field] = READERS[field](name, raw)
    values.setdefault("address_jobs", max(values.get("session_jobs", Settings.session_jobs),
                                          values.get("max_waiting", Settings.max_waiting) // 2))
    values.setdefault("address_sessions", max(1, values.get("max_sessions", Settings.max_sessions) // 2))
    values.setdefault("proxy_hops", 1 if environ.get("SPACE_ID") else 0)    # a Space's visitors come through its proxy
    return Settings(**values)


_current = None


def settings():
    """The process's Settings, read from the environment the first time (two threads may both read it: same result)."""
    global _current
    if _current is None:
        _current = load_settings()
    return _current


def use_settings(new):
    """Make `new` the process's Settings (None: read the environment again on the next `settings()`); returns the
    previous ones, or None if none were read yet."""
    global _current
    previous, _current = _current, new
    return previous


@contextlib.contextmanager
def changed_settings(**changes):
    """`with changed_settings(max_job_seconds=0.3):` the process's settings with these fields changed, in the block."""
    previous = use_settings(dataclasses.replace(settings(), **changes))
    try:
        yield settings()
    finally:
        use_settings(previous)
