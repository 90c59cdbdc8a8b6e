"""The server's guards without a server (ddpm/app/guard.py, gate.py, blobs.py): the address a request is counted
under, the queue's limits for calls with and without a session, plain-text errors, the routes' byte budgets and
cancel, the image editors' blob store, what a made-up session can evict, and the downloads the sweep keeps."""
import asyncio
import io
import json
import os
import time
from types import SimpleNamespace

import gradio as gr
import pytest
from fastapi import HTTPException
from gradio.queueing import Event
from PIL import Image

from ddpm.app import blobs, gate, guard, registry
from ddpm.app.guard import address, plain, refusal
from ddpm.app.settings import changed_settings


def request(peer, forwarded=None):
    return SimpleNamespace(client=SimpleNamespace(host=peer), headers={"x-forwarded-for": forwarded} if forwarded else {})


def test_the_peer_address_without_proxies():
    assert address(request("1.2.3.4", "6.6.6.6"), hops=0) == "1.2.3.4"
    assert address(SimpleNamespace(client=None, headers={}), hops=0) is None


def test_behind_one_proxy_the_last_forwarded_address_counts_and_a_forged_one_does_not():
    space_proxy = "10.16.3.80"
    assert address(request(space_proxy, "81.2.3.4"), hops=1) == "81.2.3.4"
    assert address(request(space_proxy, "6.6.6.6, 81.2.3.4"), hops=1) == "81.2.3.4"     # the client wrote 6.6.6.6
    assert address(request(space_proxy, "6.6.6.6, 81.2.3.4, 10.0.0.1"), hops=2) == "81.2.3.4"
    assert address(request(space_proxy), hops=1) == space_proxy                        # no header: the peer


# ------------------------------------------------------------------ the queue's limits

@pytest.fixture
def queue():
    with gr.Blocks() as demo:
        button = gr.Button()
        button.click(lambda: None, concurrency_id="sampling", concurrency_limit=2, api_name="heavy")
        button.click(lambda: None, api_name="light")
    demo.queue()
    for fn in demo.fns.values():
        demo._queue.create_event_queue_for_fn(fn)
    return demo._queue


def wait(queue, fn_index, sid, peer):
    """A call of session `sid` (None: Gradio gives it one of its own) from `peer`, waiting in the queue."""
    fn = queue.blocks.fns[fn_index]
    event = Event(sid, fn, request(peer), None)
    queue.event_queue_per_concurrency_id[fn.concurrency_id].queue.append(event)


def body(fn_index, sid=None):
    return SimpleNamespace(fn_index=fn_index, session_hash=sid)


def test_calls_without_a_session_meet_the_address_and_the_total_limits(queue):
    """Hole: /gradio_api/call/<api> names no session, and only bodies that named one were checked."""
    with changed_settings(session_jobs=2, address_jobs=3, max_waiting=5, address_calls=2, proxy_hops=0):
        for _ in range(3):
            assert refusal(queue, body(0), request("6.6.6.6")) is None
            wait(queue, 0, None, "6.6.6.6")
        assert "your network address already has 3 jobs" in refusal(queue, body(0), request("6.6.6.6"))
        assert refusal(queue, body(0), request("7.7.7.7")) is None          # each call a session of its own
        for k in range(2):
            wait(queue, 0, f"s{k}", f"8.8.8.{k}")
        assert "the server is busy: 5 jobs are waiting" in refusal(queue, body(0), request("9.9.9.9"))
        for _ in range(2):                                                     # light calls: an address's share too
            wait(queue, 1, None, "6.6.6.6")
        assert "too many calls of your network address at once (2 waiting" in refusal(queue, body(1), request("6.6.6.6"))
        assert refusal(queue, body(1), request("7.7.7.7")) is None


def test_install_closes_the_run_route_and_refuses_a_heavy_event_outside_the_queue(monkeypatch):
    monkeypatch.setattr(guard, "sweep", lambda: 0)
    monkeypatch.setattr(guard, "_sweep_forever", lambda: None)
    with gr.Blocks() as demo:
        gr.Button().click(lambda: None, concurrency_id="sampling", api_name="heavy")
        sketch = gr.Sketchpad()
    demo.queue()
    guard.install(demo)
    assert demo.api_open is False and sketch.accept_blobs._is_server_fn
    with gr.Blocks() as loose:
        gr.Button().click(lambda: None, concurrency_id="sampling", queue=False, api_name="heavy")
    loose.queue()
    with pytest.raises(ValueError, match=r"heavy events must go through the queue, and \['heavy'\] have queue=False"):
        guard.install(loose)


# ------------------------------------------------------------------ plain text

def test_an_error_text_is_plain_hides_server_paths_and_keeps_its_head_and_tail():
    """Hole: a link's value quoted in the error toast, which Gradio renders as HTML, showed a link and a form."""
    shown = plain("scene \"<a href='x'>click</a><img src=y><form>\" is unknown & so on")
    assert "<" not in shown and "&lt;a href='x'&gt;click&lt;/a&gt;" in shown and "&amp; so on" in shown
    assert os.getcwd() not in plain(f"cannot read {os.getcwd()}/app.py") and "…/app.py" in plain(f"{os.getcwd()}/app.py")
    long = plain("value " + "x" * 10_000 + " is not allowed; choose one of ['a', 'b']")
    assert len(long) <= guard.SHOWN_CHARS + 3 and long.startswith("value xxx") and long.endswith("['a', 'b']")


def handler(value):
    if value == "boom":
        return 1 / 0
    raise gr.Error(f"{value!r} <b>no</b>")


def test_every_call_is_served_plainly_an_unexpected_exception_becomes_our_message(caplog):
    """Hole: raw Python messages (e.g. unhashable type: 'list') reached users; each refusal logged a traceback
    quoting its value."""
    with gr.Blocks() as demo:
        text = gr.Textbox()
        text.submit(handler, text, api_name="f")

    async def process_api(*args, **kwargs):
        return handler(kwargs["inputs"][0])
    served = guard.serve(demo, process_api)
    for value, shown in (("x" * 5000, "&lt;b&gt;no&lt;/b&gt;"), ("boom", "the server could not handle this request "
                                                                          "(ZeroDivisionError)")):
        with pytest.raises(gr.Error) as err:
            asyncio.run(served(block_fn=demo.fns[0], inputs=[value], request=request("1.2.3.4")))
        assert shown in err.value.message and not err.value.print_exception
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("refused f: 'xxxx") and len(lines[0]) < 120                # one line, the value cut
    assert lines[1].startswith("failed f: ZeroDivisionError: division by zero (")


# ------------------------------------------------------------------ what a request may send (gate.py)

READ = {"bytes": 0}


async def reader(scope, receive, send):
    """An app that reads the whole body (as Gradio's upload does) and answers 200."""
    more, READ["bytes"] = True, 0
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise OSError("the client left")
        READ["bytes"] += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def make_gate():
    return gate.Gate(reader, address=lambda r: r.client.host)


def run_gate(the_gate, path, body, peer="1.2.3.4", headers=(), queue=None):
    """One POST through `the_gate`, in chunks of 1000 bytes: (status, detail, bytes the app read)."""
    chunks = [body[i:i + 1000] for i in range(0, len(body), 1000)] or [b""]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
    READ["bytes"] = 0
    scope = {"type": "http", "method": "POST", "path": path, "headers": list(headers), "client": (peer, 1),
             "app": SimpleNamespace(get_blocks=lambda: SimpleNamespace(_queue=queue))}
    asyncio.run(the_gate(scope, receive, send))
    detail = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(detail or b"{}").get("detail"), READ["bytes"]


def test_uploads_of_one_address_stop_at_its_budget_as_the_bytes_arrive():
    """Hole: 300 uploads of 5 MB took 7 s and filled the disk past the temp limit before any sweep."""
    the_gate = make_gate()
    with changed_settings(address_upload_mb=0.01):                      # 10,485 bytes in 10 minutes
        assert run_gate(the_gate, "/gradio_api/upload", b"x" * 6000)[0] == 200
        status, detail, read = run_gate(the_gate, "/gradio_api/upload", b"x" * 6000)     # no length given: counted
        assert status == 429 and "uploads in the last 10 minutes (at most 0.01 MB)" in detail and read < 6000
        assert run_gate(the_gate, "/gradio_api/upload", b"x" * 10, headers=[(b"content-length", b"10")])[0] == 429
        assert run_gate(the_gate, "/gradio_api/upload", b"x" * 6000, peer="5.5.5.5")[0] == 200   # another address
        assert run_gate(the_gate, "/gradio_api/queue/join", b"x" * 20000)[0] == 200             # not an upload


def test_the_upload_window_forgets_old_bytes_and_then_quiet_addresses(monkeypatch):
    window = gate.Window(10)
    window.add("a", 5, now=0)
    window.add("b", 5, now=0)
    assert window.used("a", now=5) == 5 and window.used("a", now=11) == 0 and set(window.sent) == {"b"}
    monkeypatch.setattr(gate, "KEYS", 1)                         # past KEYS addresses the quiet ones are forgotten
    window.add("c", 1, now=20)
    assert set(window.sent) == {"c"} and window.used("c", now=20) == 1


def test_a_drawings_part_is_one_uploads_size_at_most():
    status, detail, _ = run_gate(make_gate(), "/gradio_api/component_server", b"x" * (6 * 2**20))
    assert status == 413 and "at most 5.1 MB" in detail


def test_cancel_takes_only_a_job_of_the_session_that_asks():
    """Hole: /gradio_api/cancel removed another session's waiting job given its event id."""
    queue = SimpleNamespace(pending_event_ids_session={"owner": {"e1"}})
    ask = lambda sid: json.dumps({"session_hash": sid, "fn_index": 0, "event_id": "e1"}).encode()   # noqa: E731
    the_gate = make_gate()
    assert run_gate(the_gate, "/gradio_api/cancel", ask("other"), queue=queue)[:2] == (403, "a session cancels only "
                                                                                        "its own jobs")
    status, _, read = run_gate(the_gate, "/gradio_api/cancel", ask("owner"), queue=queue)
    assert status == 200 and read == len(ask("owner"))                          # passed on, body and all


# ------------------------------------------------------------------ the image editors' blobs (blobs.py)

def png(side, mode="L"):
    buffer = io.BytesIO()
    Image.new(mode, (side, side), 255).save(buffer, "PNG")
    return buffer.getvalue()


def part(editor, drawing, sid="s", kind="layer", index=0, blob=None, where="1.2.3.4"):
    fields = {"type": kind, "index": "null" if index is None else str(index), "id": drawing, "session_hash": sid}
    blobs.accept(editor, SimpleNamespace(data=fields, files=[("blob", blob or png(8))]), where)


@pytest.fixture
def editor():
    blobs.prune(now=time.monotonic() + blobs.MAX_AGE_S + 1)            # nothing left from another test
    return gr.Sketchpad()


def test_a_drawing_holds_what_a_sketchpad_sends_and_nothing_else(editor):
    """Hole: layer index 20,000,000 of a 10-byte file held 153 MB."""
    for bad, status, message in ((dict(index=20_000_000), 400, "a whole number below 4"),
                                 (dict(kind="mask"), 400, "is one of ['background', 'composite', 'layer']"),
                                 (dict(blob=b"0123456789"), 400, "is not a readable image"),
                                 (dict(blob=png(4097)), 400, "has more than 4096 x 4096 pixels")):
        with pytest.raises(HTTPException) as err:
            part(editor, "d", **bad)
        assert err.value.status_code == status and message in err.value.detail
    part(editor, "d", kind="background", index=None)
    part(editor, "d", index=2)
    stored = editor.blob_storage["d"]
    assert stored.background is not None and stored.layers[:2] == [None, None] and len(stored.layers) == 3
    with pytest.raises(HTTPException, match="another session's"):
        part(editor, "d", sid="intruder")


def test_a_session_keeps_its_latest_drawings_and_an_address_its_share(editor, monkeypatch):
    """Hole: 40 blobs of 1 MB under new ids were all kept."""
    for k in range(10):
        part(editor, f"d{k}")
    assert sorted(editor.blob_storage) == ["d7", "d8", "d9"]
    monkeypatch.setattr(blobs, "ADDRESS_MB", 3 * blobs.ENTRY_BYTES / 2**20)     # 3 small drawings
    for k in range(5):
        part(editor, f"n{k}", sid=f"made-up-{k}", blob=png(300, "RGBA"), where="6.6.6.6")
    assert sum(d.startswith("n") for d in editor.blob_storage) == 3                  # its own oldest went
    assert {"d7", "d8", "d9"} <= set(editor.blob_storage)                            # another address's stayed
    blobs.prune(now=time.monotonic() + blobs.MAX_AGE_S + 1)
    assert not editor.blob_storage


# ------------------------------------------------------------------ what a made-up session can evict (registry.py)

@pytest.fixture
def reg(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "server_tmp", lambda: str(tmp_path))
    return registry.Registry(str(tmp_path / "no-models"))


def make(reg, sid, where):
    token = registry.CLIENT.set(where)
    try:
        return reg.session(sid)
    finally:
        registry.CLIENT.reset(token)


def test_made_up_sessions_evict_their_own_address_not_an_active_visitor(reg):
    """Hole: 270 add_drawing calls from made-up session ids evicted a visitor's playground model and frames."""
    with changed_settings(address_sessions=4, session_idle_s=600):
        reg.max_sessions = 6
        visitor = make(reg, "visitor", "1.1.1.1")
        visitor.frames.append("a frame")
        for k in range(50):
            make(reg, f"made-up-{k}", "6.6.6.6").drawings.append("a drawing")
        assert reg.peek("visitor") is visitor and sum(s.address == "6.6.6.6" for s in reg._sessions.values()) == 4
        make(reg, "empty", "2.2.2.2")                         # a session whose job kept nothing
        make(reg, "other", "2.2.2.3").drawings.append("a drawing")
        assert reg.peek("empty") is None                      # it went first, at no one's cost
        with pytest.raises(gr.Error, match=r"the server holds the work of 6 visitors \(at most 6\), all active in the "
                                           "last 600 s"):
            make(reg, "newcomer", "3.3.3.3")
        visitor.used -= 601                                   # an idle session may go for another address
        make(reg, "newcomer", "3.3.3.3")
        assert reg.peek("visitor") is None


def test_an_address_pays_for_its_own_models_and_a_session_keeps_only_their_files(reg):
    """Hole: 48 one-step fine-tunes from one address evicted another address's model; folders kept every fine-tune."""
    reg.max_held_models = 3
    model = SimpleNamespace()
    make(reg, "visitor", "1.1.1.1")
    reg.add_session_model("visitor", "v-1", model, "mnist")
    for k in range(3):
        make(reg, f"tuner-{k}", "6.6.6.6")
        for n in range(1, 5):
            name = f"t{k}-{n}"
            reg.add_session_model(f"tuner-{k}", name, model, "mnist")
            os.makedirs(reg.peek(f"tuner-{k}").file(name))
            open(reg.peek(f"tuner-{k}").file(name) + ".zip", "w").close()
    assert list(reg.peek("visitor").models) == ["v-1"]
    assert sum(len(s.models) for s in reg._sessions.values()) == 3
    last = reg.peek("tuner-2")
    assert sorted(os.listdir(last.workdir)) == sorted(f"{n}{e}" for n in last.models for e in ("", ".zip"))


def test_the_sweep_keeps_files_handed_to_a_live_session_for_download(tmp_path, monkeypatch):
    """Hole: past the temp bound the sweep deleted the checkpoint zips that live visitors had just been given."""
    cache, mine = tmp_path / "gradio", tmp_path / "ddpm_app" / str(os.getpid())
    cache.mkdir()
    mine.mkdir(parents=True)
    monkeypatch.setattr(guard, "get_upload_folder", lambda: str(cache))
    monkeypatch.setattr(guard, "TMP_ROOT", str(tmp_path / "ddpm_app"))
    monkeypatch.setattr(guard, "server_tmp", lambda: str(mine))
    old = time.time() - 7200
    for name in ("handed.zip", "other.png"):
        (cache / name).write_bytes(b"x" * 2**20)
        os.utime(cache / name, (old, old))
    session = registry.registry().session("downloader")
    with gr.Blocks() as demo:
        download = gr.File()
        gr.Button().click(lambda: None, outputs=download)
    guard._keep_downloads(demo.fns[0], {"data": [{"path": str(cache / "handed.zip"), "meta": {}}]}, "downloader")
    guard.sweep(max_mb=0)
    assert sorted(p.name for p in cache.iterdir()) == ["handed.zip"]
    registry.registry().forget("downloader")
    guard.sweep(max_mb=0)
    assert not list(cache.iterdir()) and session.downloads
