"""`pip install .` (and `pip install -e .`) makes the package usable from any folder: `import ddpm`, the bundled
models (pretrained/ of the repository, installed as ddpm/bundled) and the `ddpm` console command.

Each install goes into a fresh virtual environment that sees this interpreter's packages (torch and friends)
through a .pth file, so that they are not installed again. It works whatever setuptools and wheel this
interpreter has: the build runs on them, offline, when they meet pyproject.toml's build requirement and can build
a wheel by themselves (bdist_wheel: setuptools >= 70.1, or the wheel package); otherwise pip builds in its usual
isolated environment, with a setuptools from the configured package index."""
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLONE = ("ddpm", "pretrained", "pyproject.toml", "README.md", "requirements.txt", "LICENSE")   # what `pip install .` reads


def _version(text):
    return tuple(int(v) for v in re.findall(r"\d+", text)[:2])


def builds_wheels_here():
    """Whether this interpreter's setuptools builds this project's wheel without downloading anything: it meets
    pyproject.toml's `setuptools>=N`, and has bdist_wheel (part of setuptools from 70.1, before that of wheel)."""
    try:
        have = _version(importlib.metadata.version("setuptools"))
    except importlib.metadata.PackageNotFoundError:
        return False
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        need = _version(re.search(r'"setuptools>=([\d.]+)"', f.read()).group(1))
    return have >= need and (have >= (70, 1) or importlib.util.find_spec("wheel") is not None)


def files_below(folder):
    """The files below `folder`, as relative paths, without Python's caches and Gradio's type stubs."""
    return sorted(os.path.relpath(os.path.join(d, name), folder) for d, dirs, names in os.walk(folder)
                  for name in names if "__pycache__" not in d and not name.endswith((".pyc", ".pyi")))


def fresh_venv(path):
    """A virtual environment without pip of its own whose Python also imports this interpreter's packages
    (a .pth file naming its site-packages: --system-site-packages would give the base installation's instead
    when this interpreter runs in a venv itself)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    with open(os.path.join(site, "outer_packages.pth"), "w") as f:
        f.write("\n".join(ours) + "\n")
    return python


@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_pip_install_gives_import_bundled_models_and_console_command(tmp_path, editable):
    elsewhere, source = tmp_path / "elsewhere", tmp_path / "source"
    elsewhere.mkdir()
    # a copy of what a clone holds, so that the build's own files (build/, *.egg-info) stay out of the checkout
    for name in CLONE:
        copy = shutil.copytree if os.path.isdir(os.path.join(ROOT, name)) else shutil.copy
        kwargs = dict(ignore=shutil.ignore_patterns("__pycache__")) if copy is shutil.copytree else {}
        copy(os.path.join(ROOT, name), source / name, **kwargs)
    python = fresh_venv(tmp_path / "venv")
    # this interpreter's pip installs into the venv (--python)
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    pip += ["--no-build-isolation"] if builds_wheels_here() else []
    built = subprocess.run(pip + (["-e", str(source)] if editable else [str(source)]), cwd=elsewhere,
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = ("import os, ddpm, ddpm.pretrained as p; m = ddpm.load_pretrained('mnist'); "
             "print(os.path.dirname(ddpm.__file__)); print(p.BUNDLED_DIR); print(m.num_classes, m.T)")
    out = subprocess.run([str(python), "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    package, bundled, shape = out.stdout.split("\n")[:3]
    if editable:
        assert package == str(source / "ddpm") and bundled == str(source / "pretrained")
    else:                        # the installed copy, its models under ddpm/bundled (pyproject's package-dir)
        assert package.startswith(str(tmp_path / "venv")) and bundled == os.path.join(package, "bundled")
        # every module and data file of the clone is installed (a package missing from pyproject's list is not)
        assert files_below(package) == sorted(files_below(source / "ddpm") + [os.path.join("bundled", name)
                                                                             for name in files_below(source / "pretrained")])
    assert shape == "10 1000"

    helped = subprocess.run([str(python.parent / "ddpm"), "--help"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert helped.returncode == 0 and "train" in helped.stdout and "sample" in helped.stdout, helped.stderr[-2000:]
    same = subprocess.run([str(python), "-m", "ddpm", "--help"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert same.stdout == helped.stdout
