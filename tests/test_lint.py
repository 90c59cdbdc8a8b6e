"""The house style that a machine can check: `ruff check` over the whole repository is clean, with the rules and
line length of pyproject.toml's [tool.ruff] (CI runs this file with the rest of the tests)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_check_is_clean():
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", ROOT], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
