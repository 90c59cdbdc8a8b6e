"""Tab 8: check my code. A student runs their own sample_xt or step of Algorithm 2 anywhere (any framework) on the
challenge file, uploads the outputs, and reads the verdict of `ddpm.exercise.check_outputs`: passed, the catalogued
mistake by name with the line that fixes it, or where the output is wrong; the picture puts their images above the
reference. No uploaded code runs: only numbers are read (.npz without pickles, or .safetensors, at most 5 MB), and a
refused upload is a plain-text error naming why. The tab opens on the verdict of an example upload with a known
mistake. `build()` lays the tab out and wires it.
"""
import atexit
import functools
import io
import os
import re
import shutil
import tempfile

import gradio as gr
import numpy as np
from safetensors.numpy import load_file

from ..exercise import (ITEMS, MISTAKES, SIGNATURES, UPLOAD_ITEMS, challenge_files, check_outputs, expected_arrays,
                        render_report, upload_instructions)
from .widgets import Parts, by_name, go_button, go_row, image, intro, pictured

ITEM_CHOICES = [("sample_xt (Eq. 4)", "sample_xt"), ("sample (Algorithm 2)", "sample"), ("train (Algorithm 1)", "train"),
                ("train_classconditional", "train_classconditional")]
DEFAULT_ITEM = "sample_xt"
SCALE = 8                  # each 8 x 8 image of the challenge drawn 64 px wide
UPLOAD_TYPES = [".npz", ".safetensors"]

LEAD = ("**Check your own code.** Pick a function of the sheet, download its challenge, run *your* function on it "
        "anywhere (NumPy, PyTorch, JAX, ...), upload the outputs and read the verdict: passed, or the mistake you made "
        "by name, with the line that fixes it. Nothing you upload runs here: only numbers are read.")


def _catalogue(item):
    return "\n".join(f"- `{m.id}`: `{m.notation}`" for m in MISTAKES.values() if m.item == item)


MORE = (f"The challenge holds fixed, seeded inputs: for `sample_xt` x_0, t and epsilon for T = 1000 and T = 100 "
        f"(t = 0 and T-1 included); for `sample` one step of Algorithm 2 per row, with eps_theta(x_t, t) of a model "
        f"whose answer is known exactly and the noise z to add, so no trained network is needed. Your outputs are "
        f"compared with the reference and with the catalogue `ddpm.exercise.MISTAKES` ({len(MISTAKES)} mistakes "
        f"students make); a mistake is named when its prediction fits every row. Own noise instead of the given one is "
        f"caught by a statistical test (false alarm below 1e-8).\n\n"
        f"The same check runs your function itself in a notebook: `ddpm.exercise.check_function(\"sample_xt\", "
        f"my_sample_xt)` (also `\"sample\"`, `\"train\"`, `\"train_classconditional\"`), as notebooks/sheet3.ipynb "
        f"does after each task.\n\n**The mistakes this tab names in sample_xt**\n\n{_catalogue('sample_xt')}\n\n"
        f"**... and in sample**\n\n{_catalogue('sample')}")

SNIPPETS = {
    "sample_xt": """```python
import numpy as np
from safetensors.numpy import load_file     # PyTorch: safetensors.torch.load_file, then .numpy() on the results

c = load_file("sample_xt.safetensors")
out = {f"x_t_{T}": my_sample_xt(c[f"x0_{T}"], c[f"t_{T}"], c[f"epsilon_{T}"], c[f"alphaBars_{T}"])
       for T in (1000, 100)}
np.savez("my_outputs.npz", **{k: np.asarray(v, dtype=np.float32) for k, v in out.items()})
```""",
    "sample": """```python
import numpy as np
from safetensors.numpy import load_file     # PyTorch: safetensors.torch.load_file, then .numpy() on the results

c = load_file("sample.safetensors")
out = {}
for T in (1000, 100):   # one step of Algorithm 2 per row: x_t, t, eps -> x_(t-1), adding sigma_t * z where you add noise
    out[f"x_prev_{T}"] = np.stack([my_step(c[f"x_t_{T}"][i], int(c[f"t_{T}"][i]), c[f"eps_{T}"][i], c[f"z_{T}"][i],
                                           c[f"betas_{T}"], c[f"alphas_{T}"], c[f"alpha_bar_{T}"]) for i in range(16)])
# optional: out["y"] = the labels your sample passes to the network for sample(ddpm, 2, classes=[2, 0, 1])
np.savez("my_outputs.npz", **{k: np.asarray(v, dtype=np.float32) for k, v in out.items()})
```""",
}


def _run_it(item):
    return (f"**{item} is checked by running it**, which this server never does with your code. In a notebook or "
            f"script, with the sheet's signature `{SIGNATURES[item]}`:\n\n```python\nimport ddpm.exercise\n"
            f"report = ddpm.exercise.check_function(\"{item}\", {item})\nprint(report)     # passed, or the mistake "
            f"by name\n```\n\nnotebooks/sheet3.ipynb does it after each task. Its mistakes:\n\n{_catalogue(item)}")


def instructions(item):
    """The steps for `item`: what to compute from the challenge and how to save it (markdown of our own text)."""
    if item not in UPLOAD_ITEMS:
        return _run_it(item)
    expected = expected_arrays(item)
    arrays = ", ".join(f"`{name}` {list(shape)}" for name, shape in expected.items())
    optional = " (`?`: optional)" if any(name.endswith("?") for name in expected) else ""
    return (f"**1.** Download the challenge. **2.** Run your `{SIGNATURES[item]}` on it and save the outputs as "
            f".npz (`np.savez`, numbers only: no pickles) or .safetensors, at most 5 MB: {arrays}{optional}. "
            f"**3.** Upload the file and press Check.\n\n{upload_instructions(item)}\n\n{SNIPPETS[item]}")


@functools.lru_cache(maxsize=None)
def _folder():
    folder = tempfile.mkdtemp(prefix="ddpm_app_check_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.lru_cache(maxsize=None)
def challenge_path(item):
    """The challenge file of `item`, copied into a temporary folder of this process: Gradio hands out files from
    there wherever the package is installed (not only from the working directory)."""
    path = os.path.join(_folder(), f"{item}.safetensors")
    shutil.copyfile(challenge_files(item), path)
    return path


def _example_sample_xt(c):
    """sample_xt with the weights of x0 and epsilon swapped (mistake xt_swapped), as a student writes it."""
    def my_sample_xt(x0, t, epsilon, alphaBars):
        a = alphaBars[t].reshape(-1, 1, 1, 1)
        return np.sqrt(1 - a) * x0 + np.sqrt(a) * epsilon
    return {f"x_t_{T}": my_sample_xt(c[f"x0_{T}"], c[f"t_{T}"], c[f"epsilon_{T}"], c[f"alphaBars_{T}"]) for T in (1000, 100)}


def _example_sample(c):
    """One step of Algorithm 2 with the sign of the noise term flipped (mistake sample_sign_flipped)."""
    def my_step(x, t, eps, z, betas, alphas, alpha_bar):
        sigma = np.sqrt(betas[t]) if t > 0 else 0.0
        return 1 / np.sqrt(alphas[t]) * (x + betas[t] / np.sqrt(1 - alpha_bar[t]) * eps) + sigma * z
    return {f"x_prev_{T}": np.stack([my_step(c[f"x_t_{T}"][i], int(c[f"t_{T}"][i]), c[f"eps_{T}"][i], c[f"z_{T}"][i],
                                             c[f"betas_{T}"], c[f"alphas_{T}"], c[f"alpha_bar_{T}"]) for i in range(16)])
            for T in (1000, 100)}


EXAMPLES = {"sample_xt": ("xt_swapped", _example_sample_xt), "sample": ("sample_sign_flipped", _example_sample)}


def example_upload(item):
    """The .npz bytes a student with the example mistake of `item` would upload."""
    arrays = EXAMPLES[item][1](load_file(challenge_files(item)))
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
    return buffer.getvalue()


def plain_markdown(text):
    """`text` shown as it is in a Markdown component: every markup character escaped."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~&$])", r"\\\1", str(text))


def verdict_markdown(report):
    """The verdict in words: a headline of our own, then the report's message and details as plain text."""
    head = (f"### {report.item}: passed" if report.passed else
            f"### {report.item}: mistake `{report.mistake}`" if report.mistake else
            f"### {report.item}: wrong, by a mistake that is not in the catalogue")
    lines = [head, ""] + [plain_markdown(line) + "  " for line in report.message.splitlines()]
    return "\n".join(lines + [""] + [f"- {plain_markdown(d)}" for d in report.details])


def _alt(report):
    what = "x_t" if report.item == "sample_xt" else "x_(t-1) of one step of Algorithm 2"
    return (f"Your {what} in the top row, the reference below, ordered by t; verdict: {report.verdict}.")


@functools.lru_cache(maxsize=None)
def _example(item):
    report = check_outputs(item, example_upload(item))
    note = (f"*An example: the verdict on the outputs of a student who made mistake `{EXAMPLES[item][0]}`. "
            "Upload your own outputs to check them.*\n\n")
    return render_report(report, scale=SCALE), _alt(report), note + verdict_markdown(report)


def check_item(item):
    """Everything the tab shows for `item` before an upload: (challenge download, instructions, picture, verdict,
    upload, Check button). An upload item opens on the example verdict of a known mistake; train and
    train_classconditional are checked by running them, in a notebook, so their upload is hidden."""
    if item not in ITEMS:
        raise gr.Error(f"item {item!r} is unknown; choose one of {list(ITEMS)}")
    if item not in UPLOAD_ITEMS:
        hidden = gr.update(visible=False)
        return (hidden, instructions(item), gr.update(), "*Nothing to upload for this item: see the steps below.*",
                hidden, gr.update(interactive=False))
    picture, alt, verdict = _example(item)
    shown = gr.update(visible=True)
    return (gr.update(value=challenge_path(item), visible=True), instructions(item), pictured(picture, alt), verdict,
            shown, gr.update(interactive=True))


def check_upload(item, upload):
    """Judge the uploaded file for `item` (`ddpm.exercise.check_outputs`): (picture, verdict markdown). A refused
    upload (a pickle, an object array, over 5 MB, wrong arrays, NaN) raises gr.Error naming why, in plain text."""
    if item not in UPLOAD_ITEMS:
        raise gr.Error(f"{item} is checked by running it in a notebook (ddpm.exercise.check_function), not from "
                       f"uploaded outputs; the items checked from outputs are {list(UPLOAD_ITEMS)}")
    if not upload:
        raise gr.Error("no file uploaded yet: save your outputs as .npz or .safetensors and upload them first")
    report = check_outputs(item, upload)
    if report.refused:
        raise gr.Error(report.message, title="Upload refused")
    return pictured(render_report(report, scale=SCALE), _alt(report)), verdict_markdown(report)


def build():
    """The tab in the current Blocks, its events wired; returns its Parts."""
    ui = Parts()
    with gr.Tab("8. Check my code", id="check"):
        intro(LEAD, MORE)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                with go_row():
                    ui.go = go_button("check", "▶ Check my outputs")
                ui.item = gr.Radio(ITEM_CHOICES, value=DEFAULT_ITEM, label="the sheet's function to check")
                ui.challenge = gr.DownloadButton("⬇ Download the challenge (.safetensors)", elem_id="check_download")
                ui.upload = gr.File(label="your outputs (.npz or .safetensors, at most 5 MB)",
                                    file_types=UPLOAD_TYPES, type="filepath", height=120, elem_id="check_upload")
            with gr.Column(scale=3):
                ui.picture = image("yours (top) and the reference (bottom)", main=True, height=260, elem_id="check-main")
                ui.verdict = gr.Markdown("*Opening an example verdict ...*", elem_id="check_verdict")
        ui.how = gr.Markdown(instructions(DEFAULT_ITEM), elem_id="check_how")

    # on page load and when the item changes
    gr.on(None, check_item, inputs_kwargs=by_name(check_item, ui.item),
          outputs=[ui.challenge, ui.how, ui.picture, ui.verdict, ui.upload, ui.go], api_name="check_item",
          concurrency_limit=4, concurrency_id="check", show_progress="hidden")
    ui.go.click(check_upload, inputs_kwargs=by_name(check_upload, ui.item, ui.upload), outputs=[ui.picture, ui.verdict],
                api_name="check", concurrency_limit=4, concurrency_id="check", show_progress="hidden")
    return ui
