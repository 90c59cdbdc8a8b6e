"""Tiny models for the app tests: a models folder laid out like pretrained/ (no bundled model needed), and the app
on them in headless Debian chromium."""
import contextlib
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file

import ddpm
from ddpm.app import registry
from ddpm.eval.judge import Judge
from ddpm.pretrained import BUNDLED_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"          # Debian's: `playwright install` cannot download a browser here
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-gpu"]
TINY_NET = dict(base_channels=8, channel_mults=(1, 2), attn_levels=(1,), emb_channels=32, groups=4)
CLASS_NAMES = {
    "mnist": [f"{i} - {w}" for i, w in enumerate("zero one two three four five six seven eight nine".split())],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}


def make_models_dir(root, per_class=3, judges=()):
    """Write <root>/{mnist,fashion_mnist}/ with a tiny model (T = 100) and per_class random examples per class.
    The mnist one works on 2x2 patches like new 28x28 models (ddpm.unet.PATCH2), the other at full resolution.
    judges: the names of the models that also get a judge classifier with random weights (its verdicts exist,
    they mean nothing)."""
    for k, (name, names) in enumerate(CLASS_NAMES.items()):
        torch.manual_seed(k)
        net = dict(TINY_NET, patch_size=2) if name == "mnist" else TINY_NET
        model = ddpm.DDPM(num_classes=10, class_names=names, net=net, T=100, dataset=name)
        folder = os.path.join(root, name)
        model.save_pretrained(folder)
        images = torch.stack([stroke(i % 10, i // 10) for i in range(10 * per_class)])
        save_file({"images": images, "labels": torch.arange(10 * per_class) % 10},
                  os.path.join(folder, "examples.safetensors"))
        if name in judges:
            Judge(dataset=name).eval().save(folder)
    return str(root)


def stroke(c, k):
    """A white stroke on black whose angle encodes the class c (k shifts it a little): uint8 [28, 28]."""
    img = Image.new("L", (28, 28), 0)
    angle = math.pi * c / 10
    dx, dy = 9 * math.cos(angle), 9 * math.sin(angle)
    ImageDraw.Draw(img).line([(14 - dx + k, 14 - dy), (14 + dx + k, 14 + dy)], fill=255, width=3)
    return torch.as_tensor(np.array(img))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(models_dir, log_path, timeout=120, env=None, root=ROOT):
    """Run `python app.py` on a free port with the tiny models (models_dir None: the bundled ones, with judges),
    and `env` on top; returns (process, url)."""
    port = free_port()
    base = dict(DDPM_APP_MODELS=str(models_dir), DDPM_APP_JUDGE="0") if models_dir else {}
    env = {**os.environ, **base, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False", "DDPM_APP_MAX_TRAIN_SECONDS": "30", **(env or {})}
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}:\n{open(log_path).read()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"app.py did not answer on {url} within {timeout} s:\n{open(log_path).read()}")


def stop_app(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextlib.contextmanager
def app_in_chromium(root):
    """The app on tiny models (mnist with a judge) in `root`, and headless chromium: yields (browser, url)."""
    from playwright import sync_api      # here, not above: the tests that need no browser run without playwright
    proc, url = start_app(make_models_dir(root / "models", judges=("mnist",)), root / "app.log", env={"DDPM_APP_JUDGE": "1"})
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                yield browser, url
            finally:
                browser.close()
    finally:
        stop_app(proc)


@contextlib.contextmanager
def judged_registry(root):
    """The app's registry on tiny models in `root` (mnist with a judge), judges on; the bundled models after."""
    registry.set_registry(make_models_dir(root, judges=("mnist",)), use_judges=True)
    try:
        yield root
    finally:
        registry.set_registry(BUNDLED_DIR)
