"""The public server's guards: per-session and per-address limits on every call that joins the queue, heavy jobs
apart from light calls, jobs stopped when their visitor's connection closes, plain-text errors, and temp folders
bounded in size.

Gradio's queue takes every call of every visitor; it has one size limit for all and no notion of a session's
share. `install(demo)` wraps the queue's `push`, which every route that starts a call goes through (queue/join,
call/<api> and call/v2/<api>, whose body names no session: such a call is a session of its own, and meets the
address and total limits all the same), and closes /run/<api>, which would skip the queue (api_open off). The
limits are settings (settings.py, docs/deploying.md): heavy jobs of one session (session_jobs), of one network
address (address_jobs) and waiting in all (max_waiting); light calls of one session (session_calls) and of one
address (address_calls) waiting. What a request may send before any handler (uploads, a drawing's parts, cancel)
is gate.py's; the image editors' blob store is blobs.py's.

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

Every call is served with its address known to the registry (registry.CLIENT: who pays for a new session), its
errors made plain text (`plain`: Gradio renders a toast's text as HTML) and logged in one line, the files it hands
out for download kept while its session lives, and, for a light call that decodes images, the freed memory
handed back to the system as after a job.
"""
import html
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback

import anyio
import gradio as gr
from gradio import route_utils
from gradio.exceptions import Error
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from . import blobs
from .gate import Gate
from .jobs import cancel, trim_memory
from .registry import CLIENT, TMP_ROOT, registry, server_tmp
from .settings import settings

HEAVY = {"sampling", "train"}                                   # the concurrency ids of the long jobs
SESSION_FILE_AGE_S = 3600
SHOWN_CHARS = 600             # an error's text on the page: its head and its tail (what is allowed)
LOGGED_CHARS = 100            # an error's text in the log
IMAGE_INPUTS = (gr.Image, gr.ImageEditor)
DOWNLOADS = (gr.File, gr.DownloadButton)
log = logging.getLogger("ddpm.app")


def address(request, hops=None):
    """The network address a request came from (see the module's docstring), or None when it has none; `hops`:
    the trusted proxies in front (settings().proxy_hops unless given)."""
    hops = settings().proxy_hops if hops is None else hops
    forwarded = [a.strip() for a in getattr(request, "headers", {}).get("x-forwarded-for", "").split(",") if a.strip()]
    if hops > 0 and forwarded:
        return forwarded[-min(hops, len(forwarded))]
    return getattr(getattr(request, "client", None), "host", None)


def refusal(queue, body, request=None):
    """The message that refuses this call, or None to let it join the queue. A body without a session hash is a
    session of its own (Gradio gives it one when it joins)."""
    fn = route_utils.get_fn(queue.blocks, None, body)
    heavy, sid = fn.concurrency_id in HEAVY, body.session_hash
    waiting = [e for cid, q in queue.event_queue_per_concurrency_id.items() for e in q.queue if (cid in HEAVY) == heavy]
    running = [e for job in queue.active_jobs if job for e in job if e.alive and (e.concurrency_id in HEAVY) == heavy]
    counted = waiting + running if heavy else waiting
    mine = 0 if sid is None else sum(e.session_hash == sid for e in counted)
    where = address(request)
    ours = 0 if where is None else sum(address(e.request) == where for e in counted)
    limits = settings()
    if heavy and mine >= limits.session_jobs:
        return (f"this session already has {mine} jobs running or waiting (at most {limits.session_jobs} per visitor): "
                "wait for one to finish, or press Stop")
    if heavy and ours >= limits.address_jobs:
        return (f"your network address already has {ours} jobs running or waiting (at most {limits.address_jobs} "
                "per address, all its sessions together): wait for one to finish")
    if heavy and len(waiting) >= limits.max_waiting:
        return (f"the server is busy: {len(waiting)} jobs are waiting (at most {limits.max_waiting}); try again in a "
                "minute (the forward-process tab works meanwhile)")
    if not heavy and mine >= limits.session_calls:
        return f"too many calls of this session at once ({mine} waiting, at most {limits.session_calls}); slow down"
    if not heavy and ours >= limits.address_calls:
        return (f"too many calls of your network address at once ({ours} waiting, at most {limits.address_calls}); "
                "slow down")
    return None


def plain(text):
    """`text` for a toast, which Gradio renders as HTML: markup shown as text, no server path, at most SHOWN_CHARS
    characters (the head, and the tail, which says what is allowed)."""
    text = str(text)
    for path in sorted({os.getcwd(), get_upload_folder(), TMP_ROOT, tempfile.gettempdir(), sys.prefix}, key=len,
                       reverse=True):
        if len(path) > 1:
            text = text.replace(path, "…")
    if len(text) > SHOWN_CHARS:
        text = text[:SHOWN_CHARS * 2 // 3] + " … " + text[-SHOWN_CHARS // 3:]
    return html.escape(text, quote=False)


def _cut(text):
    return " ".join(str(text).split())[:LOGGED_CHARS]


def serve(demo, process_api):
    """Gradio's process_api (every call of every route) with what the module's docstring lists around it."""
    async def served(*args, **kwargs):
        block_fn = kwargs.get("block_fn", args[0] if args else None)
        fn = demo.fns[block_fn] if isinstance(block_fn, int) else block_fn
        name = getattr(fn, "api_name", None) or getattr(fn, "name", "a call")
        request = kwargs.get("request")
        request = request[0] if isinstance(request, list) and request else request
        client = CLIENT.set(address(request) if request is not None else None)
        try:
            output = await process_api(*args, **kwargs)
        except Error as err:
            log.warning("refused %s: %s", name, _cut(err.message))
            err.message, err.title, err.print_exception = plain(err.message), plain(err.title), False
            raise
        except Exception as err:                         # a value Gradio or a handler did not expect: say so, plainly
            where = traceback.extract_tb(err.__traceback__)[-1]
            log.warning("failed %s: %s: %s (%s:%s)", name, type(err).__name__, _cut(err), where.filename, where.lineno)
            raise gr.Error(f"the server could not handle this request ({type(err).__name__}): a value may not be one "
                           "this control takes; reload the page if it happens again", print_exception=False) from None
        finally:
            CLIENT.reset(client)
            if getattr(fn, "concurrency_id", None) not in HEAVY and any(isinstance(b, IMAGE_INPUTS)
                                                                         for b in getattr(fn, "inputs", [])):
                await anyio.to_thread.run_sync(trim_memory)      # a job trims after itself (jobs.job)
        _keep_downloads(fn, output, kwargs.get("session_hash"))
        return output
    return served


def _keep_downloads(fn, output, sid):
    """Note the cached files of `fn`'s download outputs in session `sid`, which the sweep keeps while it lives."""
    session = registry().peek(sid) if sid is not None else None
    if session is None or not isinstance(output, dict):
        return
    for block, value in zip(fn.outputs, output.get("data") or [], strict=False):
        path = isinstance(block, DOWNLOADS) and _path(value)
        if path:
            session.downloads[block._id] = os.path.abspath(path)


def _path(value):
    """The file a download output's value names (a file's data, an update holding one, or a diff that sets one)."""
    if isinstance(value, dict):
        if isinstance(value.get("path"), str):
            return value["path"]
        return _path(value.get("value"))
    if isinstance(value, (list, tuple)):
        return next((p for p in map(_path, value) if p), None)
    return None


def install(demo):
    """Guard `demo` (after `demo.queue(...)`, before its launch with app_kwargs()): the queue's limits, /run closed,
    every call served as `serve` says, the image editors' blob stores bounded (blobs.py), and the temp folders
    swept now and then every settings().sweep_s."""
    queue = demo._queue
    demo.api_open = False                                # /run/<api> would skip the queue and every limit here
    loose = [fn.api_name for fn in demo.fns.values() if fn.concurrency_id in HEAVY and not fn.queue]
    if loose:
        raise ValueError(f"heavy events must go through the queue, and {loose} have queue=False")
    push, clean_events, log_message = queue.push, queue.clean_events, queue.log_message

    async def guarded_push(body, request, username):
        if body.fn_index is not None:
            message = refusal(queue, body, request)
            if message is not None:
                log.warning("refused a call: %s", message)
                return False, message, "queue_full"
        return await push(body, request, username)

    async def clean_and_stop(*, session_hash=None, event_id=None):
        await clean_events(session_hash=session_hash, event_id=event_id)
        if session_hash is not None:                    # the visitor's connection closed: its jobs end too
            cancel(session_hash, "the connection of this session closed")

    def plain_log(event_id, log, title, *args, **kwargs):       # gr.Warning and gr.Info: toasts too
        log_message(event_id, plain(log), plain(title), *args, **kwargs)

    queue.push, queue.clean_events, queue.log_message = guarded_push, clean_and_stop, plain_log
    demo.process_api = serve(demo, demo.process_api)
    for block in demo.blocks.values():
        if isinstance(block, gr.ImageEditor):
            blobs.bound(block, address)
    sweep()
    threading.Thread(target=_sweep_forever, daemon=True, name="ddpm-sweep").start()


def app_kwargs():
    """What `demo.launch(app_kwargs=...)` takes for the guard: the ASGI middleware of gate.py."""
    return {"middleware": [Middleware(Gate, address=address)]}


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
       files go first, never one younger than settings().min_file_age_s (a page may still be fetching it), nor a
       file handed to a live session for download (its link must work while the visitor is there).
    It also forgets the image editors' drawings no one used (blobs.prune) and hands freed memory back to the
    system (glibc's malloc_trim), see docs/reliability.md."""
    blobs.prune_now()
    limits = settings()
    max_bytes, now = (limits.max_tmp_mb if max_mb is None else max_mb) * 2**20, now or time.time()
    mine = server_tmp()
    for name in os.listdir(TMP_ROOT):
        folder = os.path.join(TMP_ROOT, name)
        if folder != mine and (not name.isdigit() or not _alive(int(name))):
            shutil.rmtree(folder, ignore_errors=True)
    live, handed = registry().workdirs(), registry().downloads()
    for name in os.listdir(mine):
        folder = os.path.join(mine, name)
        if folder not in live:
            shutil.rmtree(folder, ignore_errors=True)
    files = []
    for folder, is_session in ((mine, True), (get_upload_folder(), False)):
        for mtime, size, path in _files(folder):
            if is_session and now - mtime > SESSION_FILE_AGE_S:
                _remove(path)
            elif os.path.abspath(path) not in handed:
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
