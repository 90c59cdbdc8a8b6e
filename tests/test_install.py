"""`pip install .` (and `pip install -e .`) makes the package usable from any folder: `import ddpm`, the bundled
models, and the `ddpm` console command. Each install goes into a fresh virtual environment that sees the
machine's torch and friends (--system-site-packages), so nothing is downloaded."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_pip_install_gives_import_bundled_models_and_console_command(tmp_path, editable):
    venv, elsewhere, source = tmp_path / "venv", tmp_path / "elsewhere", tmp_path / "source"
    elsewhere.mkdir()
    # a copy of what a clone holds, so that the build's own files (build/, *.egg-info) stay out of the checkout
    shutil.copytree(os.path.join(ROOT, "ddpm"), source / "ddpm", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    # no pip (nor an old setuptools) of the venv's own: this machine's pip installs into it, building with the
    # setuptools that torch brought along
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python, command = venv / "bin" / "python", venv / "bin" / "ddpm"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(pip + (["-e", str(source)] if editable else [str(source)]), check=True, cwd=elsewhere)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = ("import ddpm, os, sys; m = ddpm.load_pretrained('mnist'); "
             "print(os.path.dirname(ddpm.__file__)); print(m.num_classes, m.T)")
    out = subprocess.run([str(python), "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    where, shape = out.stdout.split("\n")[:2]
    expected = str(source / "ddpm") if editable else str(venv)
    assert where.startswith(expected), (where, expected)
    assert shape == "10 1000"
    helped = subprocess.run([str(command), "--help"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert helped.returncode == 0 and "train" in helped.stdout and "sample" in helped.stdout
    same = subprocess.run([str(python), "-m", "ddpm", "--help"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert same.stdout == helped.stdout
