"""The image editors' blob store, bounded.

A sketchpad sends its drawing before the event that uses it: at every change the page posts the background, each
layer and the composite, one PNG a request, to POST /gradio_api/component_server (fn_name accept_blobs) under a
fresh id of its choosing, and the event's value names only that id. Gradio keeps every part under any id a client
sends, for ever, and grows a drawing's list of layers to any index it is sent (one request naming layer 20,000,000
held 153 MB). `bound(editor)` (guard.install calls it for every image editor) takes only what the app's sketchpads
send, and holds it within bounds:

- a part is a background, a composite or one of LAYERS layers, an image of at most images.MAX_SIDE squared pixels
  (read from its header), and a drawing's parts together at most images.DRAWING_PIXELS pixels;
- a session keeps its KEEP latest drawings (the page submits the latest; Gradio drops a drawing once used), and a
  drawing not used within MAX_AGE_S goes (`prune`, also run by the sweep);
- one network address holds at most ADDRESS_MB, its own oldest drawings going first; all together hold at most
  TOTAL_MB, past which a new part is refused: another address's drawing is never dropped for it.

A refusal is an HTTP error with a plain message, logged in one line.
"""
import io
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import gradio as gr
from fastapi import HTTPException
from gradio.components.image_editor import EditorDataBlobs

from .images import DRAWING_PIXELS, MAX_LAYERS, open_checked

LAYERS = MAX_LAYERS       # layer indexes 0 .. LAYERS - 1
KEEP = 3                  # drawings per session and editor: the latest, and those still on their way
MAX_AGE_S = 600
ADDRESS_MB = 64
TOTAL_MB = 512
ENTRY_BYTES = 4096        # what a drawing costs at least (its entry here), so tiny parts under many ids count too
PARTS = ("background", "composite", "layer")
log = logging.getLogger("ddpm.app")


@dataclass
class Drawing:
    editor: object
    sid: str | None
    address: str | None
    made: float
    parts: dict = field(default_factory=dict)       # (kind, index) -> (bytes, pixels)

    def bytes(self):
        return cost(self.parts)


def cost(parts):
    return max(ENTRY_BYTES, sum(size for size, _ in parts.values()))


_lock = threading.Lock()
_held = OrderedDict()        # (editor id, drawing id) -> Drawing, oldest first


def bound(editor, address):
    """Replace `editor`'s accept_blobs (an image editor of the app) with the bounded one; `address(request)` is the
    network address a request is counted under (guard.address)."""
    def accept_blobs(data, request: gr.Request):
        accept(editor, data, address(request))
    accept_blobs._is_server_fn = True               # what Gradio's component_server route looks for
    editor.accept_blobs = accept_blobs


def refuse(status, message):
    log.warning("refused accept_blobs: %s", message[:100])
    raise HTTPException(status_code=status, detail=message)


def _part(fields, files):
    kind, index, drawing = fields.get("type"), fields.get("index"), fields.get("id")
    if kind not in PARTS:
        refuse(400, f"a drawing's part is one of {list(PARTS)}")
    if kind == "layer":
        if not (isinstance(index, (str, int)) and str(index).isdigit() and int(index) < LAYERS):
            refuse(400, f"a drawing's layer index is a whole number below {LAYERS}")
        index = int(index)
    else:
        index = None
    if not isinstance(drawing, str) or not 0 < len(drawing) <= 64:
        refuse(400, "a drawing's id is a text of 1 to 64 characters")
    if len(files) != 1 or not isinstance(files[0][1], bytes):
        refuse(400, "a drawing's part is one image file")
    blob = files[0][1]
    try:
        with open_checked(io.BytesIO(blob), "the drawing's part", decode=False) as image:
            pixels = image.width * image.height
    except gr.Error as err:
        refuse(400, err.message)
    return kind, index, drawing, blob, pixels


def accept(editor, data, address):
    """Store one part of a drawing in `editor`'s blob store, as Gradio's accept_blobs does, within the bounds."""
    fields, files = getattr(data, "data", None), getattr(data, "files", None)
    if not isinstance(fields, dict) or not isinstance(files, list):
        refuse(400, "a drawing's part comes as a form with one image file")
    kind, index, drawing_id, blob, pixels = _part(fields, files)
    sid, now = fields.get("session_hash"), time.monotonic()
    with _lock:
        prune(now)
        key = (id(editor), drawing_id)
        drawing = _held.get(key)
        if drawing is not None and drawing.sid != sid:
            refuse(403, "this drawing id is another session's")
        if drawing is None:
            own = [k for k, d in _held.items() if d.editor is editor and d.sid == sid]
            for old in own[:max(0, len(own) - KEEP + 1)]:
                _drop(old)
            drawing = _held[key] = Drawing(editor, sid, address, now)
        if sum(p for part, (_, p) in drawing.parts.items() if part != (kind, index)) + pixels > DRAWING_PIXELS:
            refuse(413, f"a drawing's parts hold at most {DRAWING_PIXELS:,} pixels together")
        grow = cost({**drawing.parts, (kind, index): (len(blob), pixels)}) - drawing.bytes()
        while _bytes(lambda d: d.address == address) + grow > ADDRESS_MB * 2**20:
            old = next((k for k, d in _held.items() if d.address == address and k != key), None)
            if old is None:
                refuse(413, f"the drawings of one network address hold at most {ADDRESS_MB} MB")
            _drop(old)
        if _bytes(lambda d: True) + grow > TOTAL_MB * 2**20:
            refuse(503, "the server holds as many drawings as it can: try again in a minute")
        drawing.parts[(kind, index)] = (len(blob), pixels)
        parts = editor.blob_storage.get(drawing_id) or EditorDataBlobs(background=None, layers=[], composite=None)
        if kind == "layer":
            parts.layers.extend([None] * (index + 1 - len(parts.layers)))
            parts.layers[index] = blob
        else:
            setattr(parts, kind, blob)
        editor.blob_storage[drawing_id] = parts


def _bytes(pick):
    return sum(d.bytes() for d in _held.values() if pick(d))


def _drop(key):
    drawing = _held.pop(key)
    drawing.editor.blob_storage.pop(key[1], None)


def prune(now=None):
    """Forget the drawings that were used (Gradio dropped them) or are older than MAX_AGE_S (the lock held, or
    from the sweep)."""
    now = time.monotonic() if now is None else now
    for key, drawing in list(_held.items()):
        if key[1] not in drawing.editor.blob_storage or now - drawing.made > MAX_AGE_S:
            _drop(key)


def prune_now():
    with _lock:
        prune()
