"""Load and abuse of a real app server, as a hostile visitor of a public Space would try it (issue 17, items 1-9).

    python benchmarks/abuse.py            the full run with the bundled models (about 8 minutes on 2 cores)
    python benchmarks/abuse.py --quick    a subset with tiny models in about a minute (tests/test_abuse.py runs it)

It starts `python app.py` on a free loopback port with its own Gradio cache folder, drives it with raw HTTP
and gradio_client (loopback only, bounded in count and time), prints one table row per probe and exits 1 if
any probe failed. Every probe says what it measured; its limit is the behaviour the server promises.
"""
import argparse
import json
import os
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
HELD_MODELS = 16         # fine-tuned models the server holds (default 48): the load rounds reach it in 2 rounds


def row(item, probe, measured, limit, ok):
    ROWS.append((item, probe, measured, limit, "pass" if ok else "FAIL"))
    print(f"  {item:>3} | {probe} | {measured} | {limit} | {'pass' if ok else 'FAIL'}", flush=True)


class Server:
    def __init__(self, url, proc, cache):
        self.url, self.proc, self.cache = url.rstrip("/"), proc, cache
        config = httpx.get(f"{self.url}/config").json()
        self.fn = {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}

    def client(self, sid):
        c = Client(self.url + "/", verbose=False)
        c.session_hash = sid                                   # a session id of our choosing, as any client may
        return c

    def join(self, api, data, sid, address=None):
        """Join the queue with raw HTTP: (HTTP status, event id or the refusal's message). address: the client's
        network address as a proxy on loopback reports it (X-Forwarded-For, which uvicorn takes from loopback)."""
        r = httpx.post(f"{self.url}/gradio_api/queue/join", timeout=30,
                       headers={"x-forwarded-for": address} if address else None,
                       json={"data": data, "fn_index": self.fn[api], "session_hash": sid, "event_data": None})
        body = r.json()
        return r.status_code, body.get("event_id") or body.get("detail")

    def call(self, api, data, sid):
        """One call through the queue with raw HTTP (json.dumps writes NaN, as a crafted request may): the output,
        or RuntimeError with the server's message."""
        r = httpx.post(f"{self.url}/gradio_api/queue/join", timeout=30, headers={"content-type": "application/json"},
                       content=json.dumps({"data": data, "fn_index": self.fn[api], "session_hash": sid, "event_data": None}))
        if r.status_code != 200:
            raise RuntimeError(r.text)
        with httpx.stream("GET", f"{self.url}/gradio_api/queue/data", params={"session_hash": sid}, timeout=60) as s:
            for line in s.iter_lines():
                if line.startswith("data:") and '"process_completed"' in line:
                    message = json.loads(line[5:])
                    if not message.get("success"):
                        raise RuntimeError(message.get("output", {}).get("error") or message)
                    return message["output"]["data"]
        raise RuntimeError("the stream ended without a result")

    def stop(self, sid, api="/grid_stop"):
        """Press a Stop button of session sid; an older server without that endpoint has nothing to press."""
        if api.strip("/") in self.fn:
            self.client(sid).predict(api_name=api)

    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    def cpu_s(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def cache_mb(self, younger_than=None):
        paths = [os.path.join(r, n) for r, _, ns in os.walk(self.cache) for n in ns]
        now = time.time()
        return sum(os.path.getsize(p) for p in paths
                   if younger_than is None or now - os.path.getmtime(p) < younger_than) / 2**20

    def session_dirs(self):
        folder = os.path.join(tempfile.gettempdir(), "ddpm_app", str(self.proc.pid))
        return len(os.listdir(folder)) if os.path.isdir(folder) else 0


def forward_latency(server, sid, n):
    c = server.client(sid)
    times = []
    for k in range(n):
        start = time.perf_counter()
        c.predict("linear", 1000, 100 + k, 0, api_name="/forward")
        times.append(time.perf_counter() - start)
    return times


def classes(server, model="mnist"):
    return server.client("picker").predict(model, api_name="/grid_classes")["choices"]


def probe_queue_flood(server, quick):
    """Item 1: one session queued 66 grid jobs in 0.3 s and every other visitor got "Queue is full"."""
    names = [c[0] if isinstance(c, (list, tuple)) else c for c in classes(server)][:10]
    grid = ["mnist", names, 10, 2.0, "ddpm", 20, 0]
    busy = [server.join("grid", grid, f"busy-{k}") for k in range(2)]      # two visitors hold both sampling slots
    time.sleep(1.0)
    codes = [server.join("grid", grid, "flooder") for _ in range(20 if quick else 66)]
    taken = sum(code == 200 for code, _ in codes)
    refused = [msg for code, msg in codes if code != 200]
    row(1, f"both slots busy; one session joins {len(codes)} grid jobs", f"{taken} taken, {len(refused)} refused: "
        f"'{refused[0][:50]}...'" if refused else f"{taken} taken", "<= 2 taken (1 running + 1 waiting)",
        taken <= 2 and all("this session already has" in m for m in refused) and all(c == 200 for c, _ in busy))
    start = time.perf_counter()
    server.client("bystander").predict("linear", 1000, 300, 0, api_name="/forward")
    slider = time.perf_counter() - start
    code, _ = server.join("grid", ["mnist", names[:2], 1, 1.0, "ddim", 5, 0], "bystander")
    row(1, "meanwhile another visitor: forward slider, then a small grid", f"slider {slider:.2f} s, grid HTTP {code}",
        "slider answers (< 5 s), grid taken", slider < 5 and code == 200)
    for sid in ("busy-0", "busy-1", "flooder", "flooder"):    # the flooder's two start as the others stop
        server.stop(sid)
        time.sleep(0.5)
    server.stop("flooder")
    return names


def probe_many_ids(server, names, quick):
    """Item 1 (and per-address limits): one client with many made-up session ids takes every waiting place."""
    big, tiny = ["mnist", names, 10, 2.0, "ddpm", 20, 0], ["mnist", names[:1], 1, 1.0, "ddim", 2, 0]
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
    grid = ["mnist", names, 10, 2.0, "ddpm", 20, 0]
    code, _ = server.join("grid", grid, sid)
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
        f"{time.perf_counter() - left - 3:.0f}-{time.perf_counter() - left:.0f} s after (the grid alone takes > 6 s)", "< 0.3 cores (the grid stopped)",
        code == 200 and busy < 0.3)


def probe_eviction(server):
    """Item 2: 70 cheap calls with made-up session ids evicted a live visitor's fine-tuned model."""
    victim = server.client("victim")
    out = victim.predict("mnist", "classes", ["0 - zero"], "", None, "steps", 2, 5, api_name="/finetune")
    name = out[6]["value"] if isinstance(out[6], dict) else out[6]
    dirs = server.session_dirs()
    for k in range(70):
        c = server.client(f"made-up-{k}")
        for api in ("/reverse_stop", "/finetune_stop", "/grid_stop", "/playground_stop"):
            if api.strip("/") in server.fn:                    # an older server may lack some Stop buttons
                c.predict(api_name=api)
    after = server.session_dirs()
    choices = victim.predict(name, api_name="/reverse_classes")["choices"]
    row(2, "70 made-up session ids x 4 Stop calls", f"victim's model {'kept' if choices else 'LOST'}, session folders "
        f"{dirs} -> {after}", "model kept, no new folders", bool(choices) and after <= dirs)


def probe_paths(server, tmp):
    """Item 3: the dataset dropdown accepted a path and read examples.safetensors from it."""
    c = server.client("paths")
    refused = 0
    for bad in (os.path.join(ROOT, "pretrained", "mnist"),
                "mnist/../fashion_mnist", "/etc/passwd"):
        try:
            c.predict(bad, api_name="/forward_gallery")
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
        c.predict("linear", 1000, k % 999, k, api_name="/forward")
    grown = server.cache_mb()
    time.sleep(float(os.environ.get("ABUSE_SWEEP_S", 3)) + 2)
    swept, young = server.cache_mb(), server.cache_mb(younger_than=MIN_AGE_S)
    row(5, f"{moves} slider moves with DDPM_APP_MAX_TMP_MB={bound_mb:g}", f"cache {grown:.1f} MB, after a sweep "
        f"{swept:.1f} MB, of which {young:.1f} MB younger than {MIN_AGE_S} s", "<= the bound + files too young to go",
        swept <= bound_mb + young + 0.1)


def probe_caps(server, cap_s):
    """Item 6: a 5000-step fine-tune had no time cap; one session held both training slots."""
    c = server.client("trainer")
    start = time.perf_counter()
    status = c.predict("mnist", "classes", ["0 - zero"], "", None, "steps", 5000, 1000, api_name="/finetune")[4]
    took = time.perf_counter() - start
    row(6, "a 5000-step fine-tune", f"ended after {took:.0f} s: '{status[:50]}...'", f"<= {cap_s} s + 20 s",
        took <= cap_s + 20 and "time cap" in status)
    first = c.submit("mnist", "classes", ["1 - one"], "", None, "seconds", cap_s, 5, api_name="/finetune")
    time.sleep(2)
    second = c.predict("two_moons", "DDPM", None, "linear", 50, 2e-3, 0.4, 32, 2, 3e-3, 128, 2, 25,
                       api_name="/playground_train")
    first_status = first.result(timeout=cap_s + 60)[4]
    row(6, "one session starts a fine-tune, then a playground run", f"fine-tune: '{first_status[:60]}...'",
        "the first job stops, keeping its weights", "newer job" in first_status and "Done after" in second[2])


def probe_errors(server, tmp):
    """Item 8: a text file renamed .png showed the server's temp path; NaN t, an empty base: Python internals."""
    fake = os.path.join(tmp, "notes.png")
    open(fake, "w").write("not an image")
    c = server.client("errors")
    messages = []
    for call in (lambda: c.predict(handle_file(fake), api_name="/forward_upload"),
                 lambda: server.call("forward", [None, "linear", 1000, float("nan"), 0], "errors"),
                 lambda: c.predict("", "classes", ["0 - zero"], "", None, "steps", 2, 5, api_name="/finetune")):
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
    jobs = [c.submit("mnist", names[k], "ddim", 10, 0.0, 1.0, k, 1, api_name="/reverse") for k in range(2)]
    texts = [j.result(timeout=120)[2] for j in jobs]
    one_run = 10 + 1                                       # 10 step frames and the result, when a run is whole
    try:              # mixed frames would make 22 (and the run's last update would set the scrubber's maximum to 21)
        c.predict(one_run, api_name="/reverse_scrub")
        past = "frame 11 exists: frames of two runs"
    except Exception as err:                               # noqa: BLE001
        past = str(err)
    last = c.predict(one_run - 1, api_name="/reverse_scrub")[2]
    row(9, "two reverse runs (10 steps) at once in one session", f"{texts[0][:20]}... / {texts[1][:20]}...; "
        f"scrub 10: '{last[:40]}'; scrub 11: '{past[:40]}'", "at most one run's 11 frames",
        ("outside" in past or "greater than maximum value 10" in past) and "recorded frame" in last)
    try:
        c.predict(model="mnist", classes=[names[0], names[0]], sampler="ddim", steps=5, guidance=2.0, seed=0, per_class=10,
                  api_name="/grid")
        dup = "accepted"
    except Exception as err:                                     # noqa: BLE001
        dup = str(err)
    row(9, "a grid with a class chosen twice", dup[:70], "refused by name", "more than once" in dup)


def round_of_load(server, names, sessions, index):
    """`sessions` new visitors at once, each: forward slider, a reverse run, a small grid and a 2-step fine-tune
    (a model the server then holds); returns (errors, cross-talk)."""
    def visitor(k):
        c = server.client(f"load-{index}-{k}")
        c.predict("linear", 1000, 10 * k, k, api_name="/forward")
        text = c.predict("mnist", names[k % len(names)], "dpmpp_2m", 10, 0.0, 2.0, k, 4, api_name="/reverse")[2]
        c.predict(model="mnist", classes=[names[k % len(names)]], sampler="dpmpp_2m", steps=10, guidance=2.0, seed=k,
                  per_class=4, api_name="/grid")
        c.predict("mnist", "classes", [names[k % len(names)]], "", None, "steps", 2, 5, api_name="/finetune")
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
    rss = [server.rss_mb()]
    latencies, errors = [], 0
    for index in range(rounds):
        box = {}
        probe = threading.Thread(target=lambda: box.update(t=forward_latency(server, "watcher", slider_calls)))
        probe.start()
        e, _ = round_of_load(server, names, sessions, index)
        probe.join()
        errors += e
        latencies += box.get("t", [])
        rss.append(server.rss_mb())
    p50, p95 = np.percentile(latencies, 50), np.percentile(latencies, 95)
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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny models, fewer calls: about a minute")
    p.add_argument("--rounds", type=int, default=None, help="load rounds (default 2 quick, 6 full)")
    p.add_argument("--sessions", type=int, default=None, help="concurrent sessions per load round (4 quick, 8 full)")
    p.add_argument("--json", default=None, help="also write the table as JSON here")
    p.add_argument("--only", default=None, help="run only the probes of these items, e.g. 7 or 1,2")
    p.add_argument("--app", default=ROOT, help="the checkout whose app.py to start (an older one, to compare)")
    args = p.parse_args(argv)
    quick = args.quick
    rounds = args.rounds or (2 if quick else 6)
    tmp = tempfile.mkdtemp(prefix="abuse_")
    cache, bound, cap = os.path.join(tmp, "gradio_cache"), (0.5 if quick else 10), (5 if quick else 60)
    models = make_models_dir(os.path.join(tmp, "models")) if quick else None
    global MIN_AGE_S
    MIN_AGE_S = 2 if quick else 30       # under load a page fetches its images seconds after they are written
    env = {"GRADIO_TEMP_DIR": cache, "DDPM_APP_MIN_FILE_AGE_S": str(MIN_AGE_S), "DDPM_APP_MAX_TMP_MB": str(bound), "DDPM_APP_SWEEP_S": os.environ.get("ABUSE_SWEEP_S", "3"),
           "DDPM_APP_ADDRESS_JOBS": str(ADDRESS_JOBS), "DDPM_APP_MAX_HELD_MODELS": str(HELD_MODELS),
           "DDPM_APP_MAX_TRAIN_SECONDS": str(cap)}
    proc, url = start_app(models, os.path.join(tmp, "app.log"), env=env, root=args.app)
    print(f"server {url} (pid {proc.pid}), models {'tiny' if quick else 'bundled'}, log {tmp}/app.log\n"
          f"  item | probe | measured | limit | result", flush=True)
    start = time.perf_counter()
    try:
        server = Server(url, proc, cache)
        names = [c[0] if isinstance(c, (list, tuple)) else c for c in classes(server)][:10]
        probes = [(1, probe_queue_flood, (server, quick)), (1, probe_many_ids, (server, names, quick)),
                  (1, probe_killed_client, (server, names)),
                  (2, probe_eviction, (server,)), (3, probe_paths, (server, tmp)), (4, probe_bomb, (server, tmp)),
                  (5, probe_temp, (server, bound, 30 if quick else 300)), (6, probe_caps, (server, cap)),
                  (8, probe_errors, (server, tmp)), (9, probe_mixing, (server, names)),
                  (7, probe_load, (server, names, rounds, args.sessions or (4 if quick else 8), 8 if quick else 40))]
        only = {int(v) for v in args.only.split(",")} if args.only else None
        for item, probe, probe_args in probes:
            if only and item not in only:
                continue
            try:
                probe(*probe_args)
            except Exception as err:                             # noqa: BLE001 - an older server may lack an endpoint
                row(item, probe.__name__, f"the probe failed: {type(err).__name__}: {str(err)[:80]}", "", False)
    finally:
        stop_app(proc)
    print(f"\n{sum(r[4] == 'pass' for r in ROWS)} / {len(ROWS)} probes pass ({time.perf_counter() - start:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(zip(("item", "probe", "measured", "limit", "result"), r)) for r in ROWS], f, indent=1)
    return 0 if all(r[4] == "pass" for r in ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
