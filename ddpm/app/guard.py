"""The public server's guards: per-session limits on queued and running jobs, heavy jobs apart from light calls,
jobs stopped when their visitor's connection closes, and temp folders bounded in size.

Gradio's queue takes every call of every visitor; it has one size limit for all and no notion of a session's
share. `install(demo)` wraps the queue's `push` (a call joins the queue) and `clean_events` (Gradio's cleanup
when a visitor's connection closes) and starts the sweep. The limits are settings (settings.py, docs/deploying.md):
heavy jobs of one session (session_jobs), of one network address (address_jobs) and waiting in all
(max_waiting); light calls of one session waiting (session_calls); the temp folders' size (max_tmp_mb).

A session's second heavy job waits for a free slot; when it starts it stops the first one (jobs.job), so a
visitor who presses Generate again gets the new job, not a queue of old ones. Light calls have their own
concurrency groups and never wait behind heavy jobs.

Session ids cost nothing to make, so one client with many ids could still take every waiting place; the address
limit (address_jobs) stops that at half of them. The address is the peer's as uvicorn reads it (it
already takes X-Forwarded-For from a proxy on loopback). Behind a proxy elsewhere, as on a Space (the peer is
then the proxy, an internal address shared by every visitor), proxy_hops = N takes the N-th address from
the right of X-Forwarded-For, the one the outermost trusted proxy wrote; a client can only forge those to its
left. It is 1 when SPACE_ID is set (a Hugging Face Space), else 0. A lecture hall behind one NAT shares one
address too: that is why the limit is half the waiting places, not a few jobs.
"""
import os
import shutil
import threading
import time

from gradio import route_utils
from gradio.utils import get_upload_folder

from .jobs import cancel, trim_memory
from .registry import TMP_ROOT, registry, server_tmp
from .settings import settings

HEAVY = {"sampling", "train"}                                   # the concurrency ids of the long jobs
SESSION_FILE_AGE_S = 3600


def address(request, hops=None):
    """The network address a request came from (see the module's docstring), or None when it has none; `hops`:
    the trusted proxies in front (settings().proxy_hops unless given)."""
    hops = settings().proxy_hops if hops is None else hops
    forwarded = [a.strip() for a in getattr(request, "headers", {}).get("x-forwarded-for", "").split(",") if a.strip()]
    if hops > 0 and forwarded:
        return forwarded[-min(hops, len(forwarded))]
    return getattr(getattr(request, "client", None), "host", None)


def refusal(queue, body, request=None):
    """The message that refuses this call, or None to let it join the queue."""
    fn = route_utils.get_fn(queue.blocks, None, body)
    heavy, sid = fn.concurrency_id in HEAVY, body.session_hash
    waiting = [e for cid, q in queue.event_queue_per_concurrency_id.items() for e in q.queue if (cid in HEAVY) == heavy]
    running = [e for job in queue.active_jobs if job for e in job if e.alive and (e.concurrency_id in HEAVY) == heavy]
    mine = sum(e.session_hash == sid for e in waiting) + (sum(e.session_hash == sid for e in running) if heavy else 0)
    limits = settings()
    if heavy and mine >= limits.session_jobs:
        return (f"this session already has {mine} jobs running or waiting (at most {limits.session_jobs} per visitor): "
                "wait for one to finish, or press Stop")
    where = address(request)
    if heavy and where is not None:
        ours = sum(address(e.request) == where for e in waiting + running)
        if ours >= limits.address_jobs:
            return (f"your network address already has {ours} jobs running or waiting (at most {limits.address_jobs} "
                    "per address, all its sessions together): wait for one to finish")
    if heavy and len(waiting) >= limits.max_waiting:
        return (f"the server is busy: {len(waiting)} jobs are waiting (at most {limits.max_waiting}); try again in a "
                "minute (the forward-process tab works meanwhile)")
    if not heavy and mine >= limits.session_calls:
        return f"too many calls of this session at once ({mine} waiting, at most {limits.session_calls}); slow down"
    return None


def install(demo):
    """Guard `demo`'s queue (after `demo.queue(...)`), sweep the temp folders now and then every settings().sweep_s."""
    queue = demo._queue
    push, clean_events = queue.push, queue.clean_events

    async def guarded_push(body, request, username):
        if body.fn_index is not None and body.session_hash is not None:
            message = refusal(queue, body, request)
            if message is not None:
                return False, message, "queue_full"
        return await push(body, request, username)

    async def clean_and_stop(*, session_hash=None, event_id=None):
        await clean_events(session_hash=session_hash, event_id=event_id)
        if session_hash is not None:                    # the visitor's connection closed: its jobs end too
            cancel(session_hash, "the connection of this session closed")

    queue.push, queue.clean_events = guarded_push, clean_and_stop
    sweep()
    threading.Thread(target=_sweep_forever, daemon=True, name="ddpm-sweep").start()


def _sweep_forever():
    while True:
        time.sleep(settings().sweep_s)
        try:
            sweep()
        except OSError:                                 # a file vanished under us: the next sweep tries again
            pass


def _files(folder):
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            yield stat.st_mtime, stat.st_size, path


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(max_mb=None, now=None):
    """Remove what no one can need, then the oldest files past the size bound; returns the bytes left.

    1. Folders of dead servers (TMP_ROOT/<pid>) and session folders no live session owns (ended, evicted,
       or written by a job that finished after its visitor left).
    2. Session files older than an hour (what a visitor downloads is served from Gradio's own copy).
    3. While Gradio's cache and the session folders hold more than max_mb (settings().max_tmp_mb), the oldest
       files go first, never one younger than settings().min_file_age_s (a page may still be fetching it).
    It also hands freed memory back to the system (glibc's malloc_trim), see docs/reliability.md."""
    limits = settings()
    max_bytes, now = (limits.max_tmp_mb if max_mb is None else max_mb) * 2**20, now or time.time()
    mine = server_tmp()
    for name in os.listdir(TMP_ROOT):
        folder = os.path.join(TMP_ROOT, name)
        if folder != mine and (not name.isdigit() or not _alive(int(name))):
            shutil.rmtree(folder, ignore_errors=True)
    live = registry().workdirs()
    for name in os.listdir(mine):
        folder = os.path.join(mine, name)
        if folder not in live:
            shutil.rmtree(folder, ignore_errors=True)
    files = []
    for folder, is_session in ((mine, True), (get_upload_folder(), False)):
        for mtime, size, path in _files(folder):
            if is_session and now - mtime > SESSION_FILE_AGE_S:
                _remove(path)
            else:
                files.append((mtime, size, path))
    total = sum(size for _, size, _ in files)
    for mtime, size, path in sorted(files):
        if total <= max_bytes or now - mtime < limits.min_file_age_s:
            break
        if _remove(path):
            total -= size
    trim_memory()
    return total


def _remove(path):
    try:
        os.remove(path)
        return True
    except OSError:
        return False
