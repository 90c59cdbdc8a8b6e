"""What a request may send before any of Gradio's handlers runs: `Gate`, an ASGI middleware (guard.app_kwargs()
installs it when the app launches).

- Uploads (POST /gradio_api/upload and /gradio_api/process_recording) of one network address: at most
  settings().address_upload_mb in WINDOW_S, counted as the bytes arrive, so a refused upload reaches the disk by
  one chunk at most. Gradio's upload names no session; a session's share is bounded where its files are used (a
  fine-tune takes inputs.LIMITS["uploads"] images of at most LIMITS["upload_mb"] each).
- A drawing's part (POST /gradio_api/component_server): one request at most one upload's size plus a form's
  fields, since Gradio reads every file of the form into memory before any handler (blobs.py bounds what is kept).
- Cancel (POST /gradio_api/cancel) only a job of the session that asks: Gradio removes any waiting job, and closes
  any running stream, whose event id it is given.

A refusal is an HTTP error with a plain message, logged in one line.
"""
import json
import logging
import time
from collections import deque

from starlette.requests import Request

from .inputs import LIMITS
from .settings import settings

WINDOW_S = 600
FORM_BYTES = 64 * 1024          # a form's fields around its file
CANCEL_BYTES = 4096             # a cancel names a session, an event and a function: a few hundred bytes
KEYS = 4096                     # addresses counted at once before the window forgets those with nothing in it
UPLOADS = ("upload", "process_recording")
log = logging.getLogger("ddpm.app")


class Window:
    """Bytes sent per key over the last `seconds` (used from the event loop only)."""

    def __init__(self, seconds):
        self.seconds, self.sent, self.total = seconds, {}, {}

    def used(self, key, now):
        sent = self.sent.get(key)
        while sent and now - sent[0][0] > self.seconds:
            self.total[key] -= sent.popleft()[1]
        if sent is not None and not sent:
            del self.sent[key], self.total[key]
        return self.total.get(key, 0)

    def add(self, key, size, now):
        if key not in self.sent and len(self.sent) >= KEYS:
            for old in list(self.sent):
                self.used(old, now)
        self.sent.setdefault(key, deque()).append((now, size))
        self.total[key] = self.total.get(key, 0) + size


class Gate:
    """The ASGI middleware; `address(request)` is the network address a request is counted under (guard.address)."""

    def __init__(self, app, address):
        self.app, self.address, self.uploads = app, address, Window(WINDOW_S)

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" and scope.get("method") == "POST" else ""
        route = path.rstrip("/").rpartition("/gradio_api/")[2] if "/gradio_api/" in path else None
        if route in UPLOADS:
            await self.upload(scope, receive, send)
        elif route == "component_server":
            await self.capped(scope, receive, send, LIMITS["upload_mb"][1] * 2**20 + FORM_BYTES)
        elif route == "cancel":
            await self.cancel(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def upload(self, scope, receive, send):
        where, now = self.address(Request(scope)), time.monotonic()
        limit = settings().address_upload_mb * 2**20

        def refusal():
            return (f"this network address sent {self.uploads.used(where, time.monotonic()) / 2**20:.0f} MB of uploads "
                    f"in the last {WINDOW_S // 60} minutes (at most {limit / 2**20:g} MB): try again later")
        length = _length(scope)
        if self.uploads.used(where, now) + (length or 0) > limit:
            return await respond(send, 429, refusal())

        def count(size):
            now = time.monotonic()
            self.uploads.add(where, size, now)
            return self.uploads.used(where, now) <= limit
        await self._counted(scope, receive, send, count, 429, refusal)

    async def capped(self, scope, receive, send, limit):
        def refusal():
            return f"a request here sends at most {limit / 2**20:.1f} MB"
        length, sent = _length(scope), [0]
        if length is not None and length > limit:
            return await respond(send, 413, refusal())

        def count(size):
            sent[0] += size
            return sent[0] <= limit
        await self._counted(scope, receive, send, count, 413, refusal)

    async def _counted(self, scope, receive, send, count, status, refusal):
        """Pass the request on while `count(bytes)` of each chunk says yes; else end its body there (the handler
        sees the client leave) and answer `status` with refusal() instead of whatever the handler answers."""
        over = False

        async def counted():
            nonlocal over
            message = await receive()
            if message["type"] == "http.request" and not count(len(message.get("body", b""))):
                over = True
                return {"type": "http.disconnect"}
            return message

        async def quiet(message):
            if not over:
                await send(message)
        try:
            await self.app(scope, counted, quiet)
        except Exception:
            if not over:
                raise
        if over:
            await respond(send, status, refusal())

    async def cancel(self, scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > CANCEL_BYTES:
                return await respond(send, 413, f"a cancel sends at most {CANCEL_BYTES} bytes")
        try:
            asked = json.loads(body)
            session, event = asked["session_hash"], asked["event_id"]
        except (ValueError, TypeError, KeyError):
            session = event = None           # not a cancel: Gradio refuses it as it would
        queue = getattr(getattr(scope.get("app"), "get_blocks", lambda: None)(), "_queue", None)
        if isinstance(session, str) and isinstance(event, str) and queue is not None \
                and event not in queue.pending_event_ids_session.get(session, ()):
            return await respond(send, 403, "a session cancels only its own jobs")
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, replay, send)


def _length(scope):
    value = dict(scope.get("headers") or []).get(b"content-length", b"")
    return int(value) if value.isdigit() else None


async def respond(send, status, message):
    log.warning("refused %s: %s", status, message[:100])
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
