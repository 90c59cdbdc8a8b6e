"""The fast subset of the load-and-abuse script: a real server with tiny models, every probe of items 1-16 must
pass. The full run (bundled models, more rounds) is `python benchmarks/abuse.py` (docs/reliability.md describes
its probes)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_abuse_quick_every_probe_passes(tmp_path):
    out = tmp_path / "table.json"
    run = subprocess.Popen([sys.executable, os.path.join(ROOT, "benchmarks", "abuse.py"), "--quick", "--json", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = run.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        run.terminate()                                   # the script stops its server before it exits
        stdout, stderr = run.communicate(timeout=60)
    table = json.load(open(out)) if out.exists() else []
    failed = [r for r in table if r["result"] != "pass"]
    assert run.returncode == 0 and not failed and len(table) >= 29, stdout[-4000:] + stderr[-2000:]
    assert {r["item"] for r in table} == set(range(1, 17))
