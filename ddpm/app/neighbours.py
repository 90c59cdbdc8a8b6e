"""Explore: nearest training neighbours of a generated grid. Is the model copying its training set?

Each sample is shown beside its 3 nearest training images by judge features and by pixels
(ddpm/eval/neighbours.py), read against how close held-out real images (the bundled test examples, never trained
on) lie to the same set. The set searched: the model's whole training set when DDPM_DATA holds it (indexed once
per process), else the bundled index beside the model (a stratified subset). `build(ex)` lays the section out in
the Explore tab and wires it.
"""
import os
import threading

import gradio as gr
import torch
from PIL import Image, ImageDraw

from ..checkpoint import CheckpointError
from ..data import DATASETS, DatasetCorruptedError, DatasetNotFoundError, to_uint8, to_unit_range
from ..eval.neighbours import (INDEX, SPACES, held_out_distances, index_from_data, index_images, judge_fingerprint,
                               load_index, nearest)
from ..plots import upscale
from ..sampling import sample
from .cores import shares_cores, take_share
from .inputs import LIMITS, check_int, check_sampling, class_names
from .jobs import Stopped, holds_session, step_check, stopper
from .registry import registry, session_id
from .widgets import TQDM_PROGRESS, Parts, by_name, image, sampling_job

NEIGHBOURS_HELP = (
    "**Is the model copying?** A sample that is a copy of a training image lies much closer to that image than "
    "new images do. Each row shows a sample, then its 3 nearest training images by the judge's features (*looks "
    "the same to a classifier*) and by pixels (*the same pixels*), each with its distance (smaller = closer). Read "
    "a distance against the reference: how close real test images, which the model never saw, lie to the same "
    "training images. A red frame marks a neighbour closer than 95% of real test images of its class are to theirs.")

K = 3                       # neighbours per space
LOW = 0.05                  # a sample closer than this quantile of the held-out distances is suspicious
MIN_HELD = 20               # held-out images a class needs for its own quantile; fewer: the quantile of all of them
SPACE_NAMES = {"features": "judge features", "pixels": "pixels"}
# the sheet: tiles upscaled SCALE times; pixels between tiles, between the three column groups, of the two text
# lines under each tile, of the column headers
SCALE, PAD, GAP, LABEL, HEADER = 4, 6, 24, 40, 34
RED = (200, 0, 0)


def row_height(image_size):
    """Pixels of one row of the sheet (a tile and its label) for images of image_size x image_size."""
    return image_size * SCALE + LABEL + PAD


_cache, _cache_lock, _key_locks = {}, threading.Lock(), {}


def _cached(key, make):
    """make() once per process for each key; requests that ask at once wait for the one that builds it. A build
    that fails leaves nothing behind: the next request tries again."""
    with _cache_lock:
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:
        if key not in _cache:
            _cache[key] = make()
        return _cache[key]


def _data_index(ddpm, judge):
    """(index, cache key, markdown of the set, note) for the whole training set under DDPM_DATA; index None when
    DDPM_DATA is unset or does not hold the model's dataset (the note says why)."""
    root = os.environ.get("DDPM_DATA")
    if not root or ddpm.dataset not in DATASETS:
        return None, None, None, ""
    key = ("data", ddpm.dataset, os.path.abspath(root), judge_fingerprint(judge))
    try:
        # the build is not stoppable: it is done once for every visitor of this process, and kept
        index = _cached(key, lambda: index_from_data(ddpm.dataset, root, judge, callback=take_share))
    except (DatasetNotFoundError, DatasetCorruptedError) as err:
        return None, None, None, f" (DDPM_DATA={root} does not hold it: {str(err).splitlines()[0]})"
    return index, key, f"the full training set from DDPM_DATA={root}: {index['n']:,} images", ""


def _bundled_index(reg, base):
    """(index, cache key, markdown of the set) of the bundled neighbours.safetensors beside `base`, or Nones."""
    folder = os.path.join(reg.models_dir, base)
    key = ("bundled", os.path.abspath(folder))
    if not os.path.isfile(os.path.join(folder, INDEX)):
        return None, None, None
    try:
        index = _cached(key, lambda: load_index(folder))
    except CheckpointError as err:                        # name the file, not the server's folder
        raise gr.Error(str(err).replace(os.path.join(reg.models_dir, ""), "")) from None
    subset = (f"{index['per_class']} per class, seed {index['seed']}" if index["per_class"] is not None
              else "the whole set")
    return index, key, f"the bundled index: {index['n']:,} of {index['n_total']:,} training images, {subset}"


def search_set(reg, model, base, ddpm):
    """What the search needs: (judge, index, markdown of the set searched, reference): the reference holds, per
    space, the distance of each held-out real image to its nearest index image [N], and "labels", their classes [N].

    Raises gr.Error naming everything missing: the judge, the held-out examples, an index of the training set."""
    bundled = base in reg.bundled()
    judge = reg.judge(base) if bundled else None
    has_examples = bundled and base in reg.datasets()
    missing = []
    if judge is None:
        missing.append("judge classifier (judge.safetensors beside the model"
                       + ("; judges are switched off here: DDPM_APP_JUDGE=0)" if not reg.use_judges else ")"))
    if not has_examples:
        missing.append("held-out real images (examples.safetensors beside the model, the reference distances)")
    index, key, searched, note = _data_index(ddpm, judge) if judge is not None else (None, None, None, "")
    if index is None and bundled:
        index, key, searched = _bundled_index(reg, base)
    if index is None and (judge is not None or not os.environ.get("DDPM_DATA")):
        missing.append(f"index of its training set ({INDEX} beside the model, written by `python -m ddpm neighbours "
                       f"--model <folder>`, or DDPM_DATA pointing at the dataset{note})")
    if missing:
        raise gr.Error(f"model {model!r} cannot be searched for training neighbours: it has no "
                       + "; no ".join(missing))
    if ddpm.dataset is not None and index["dataset"] != ddpm.dataset:
        raise gr.Error(f"the index beside {base!r} holds {index['dataset']} images, but model {model!r} learned "
                       f"{ddpm.dataset}")

    def measure():
        images, labels = reg.examples(base)
        held = to_unit_range(images)                                                    # [N, C, H, W]
        return {"labels": labels, **{space: held_out_distances(index, held, judge, space=space) for space in SPACES}}
    try:
        reference = _cached(("held_out", key, base), measure)
    except ValueError as err:                             # another judge's features, another image shape
        raise gr.Error(str(err)) from None
    return judge, index, searched + note, reference


@shares_cores
@holds_session("neighbours")
def neighbours_run(model, sampler, steps, guidance, seed, per_class, request: gr.Request = None,
                   progress=TQDM_PROGRESS):
    """per_class samples of every class, each beside its K nearest training images by judge features and by pixels.

    Returns (the sheet, one row per sample, as a PIL image; markdown: the set searched, the held-out reference
    and the verdict); a search stopped before it was done keeps the sheet shown and says why."""
    sid, reg = session_id(request), registry()
    ddpm = reg.model(model, sid)
    per_class = check_int("samples per class", per_class, "nn_per_class")
    steps, _, guidance, seed = check_sampling(ddpm, sampler, steps, 0.0, guidance, seed)
    if not ddpm.num_classes:                                # before any index is built for it
        raise gr.Error(f"model {model!r} is unconditional: the search samples per_class images of every class")
    judge, index, searched, reference = search_set(reg, model, reg.base_folder(model, sid), ddpm)
    stop = reg.session(sid).stops["neighbours"]
    try:
        x = sample(ddpm, per_class, list(range(ddpm.num_classes)), sampler=sampler, steps=steps,
                   guidance_scale=guidance, generator=torch.Generator().manual_seed(seed), progress=True,
                   callback=step_check(stop))       # per step: this job's share of the cores, and Stop
    except Stopped as why:
        return gr.update(), f"**Stopped** before the search was done: {why}."
    try:
        found = {space: nearest(index, x, judge, k=K, space=space) for space in SPACES}
    except ValueError as err:                             # an index of fewer than K images, of another image shape
        raise gr.Error(str(err)) from None
    classes = torch.arange(ddpm.num_classes).repeat_interleave(per_class)               # sample's order: by class
    threshold = {space: class_thresholds(reference[space], reference["labels"], classes) for space in SPACES}
    names = class_names(ddpm)
    labels = [names[c] for c in classes.tolist()]
    sheet = neighbour_sheet(x, labels, index, found, threshold, names)
    return sheet, neighbours_report(searched, reference, found, threshold, labels)


neighbours_stop = stopper("neighbours")


def class_thresholds(distances, held_labels, classes):
    """Per sample of class classes[b], the LOW quantile of the held-out distances [N] of that class [B]: real 1s lie
    far closer to training 1s than real 8s to training 8s. A class with fewer than MIN_HELD held-out images takes
    the quantile of all of them."""
    overall = distances.quantile(LOW)
    per_class = {c: distances[held_labels == c].quantile(LOW) if int((held_labels == c).sum()) >= MIN_HELD else overall
                 for c in classes.unique().tolist()}
    return torch.stack([per_class[c] for c in classes.tolist()])


def _tile(image):
    """One image [C, H, W] in [-1, 1] as an RGB PIL image, upscaled nearest-neighbour."""
    pixels = to_uint8(image[None])[0]                                                    # [H, W, C] uint8
    return upscale(Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels), SCALE).convert("RGB")


def neighbour_sheet(x, labels, index, found, threshold, names):
    """The sheet: one row per sample x [B, C, H, W] (labels: its class name), then its K nearest training images by
    judge features, then by pixels, each labelled with its distance and class (names: the class names of the
    index's labels); a neighbour closer than threshold[space][b], its sample's, is framed in red."""
    B, _, H, _ = x.shape
    tile, row = H * SCALE, row_height(H)
    left = [PAD + c * (tile + PAD) + GAP * ((c >= 1) + (c >= 1 + K)) for c in range(1 + 2 * K)]
    sheet = Image.new("RGB", (left[-1] + tile + PAD, HEADER + B * row), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((left[0], 8), "sample", fill="black", font_size=18)
    for g, space in enumerate(SPACES):
        draw.text((left[1 + g * K], 8), f"nearest by {SPACE_NAMES[space]}", fill="black", font_size=18)
    for b in range(B):
        top = HEADER + b * row
        sheet.paste(_tile(x[b]), (left[0], top))
        draw.text((left[0], top + tile + 2), f"#{b + 1}\n{labels[b]}", fill="black", font_size=15)
        for g, space in enumerate(SPACES):
            positions, distances = found[space][0][b], found[space][1][b]
            images = index_images(index, positions)
            for j, c in enumerate(index["labels"][positions].tolist()):
                x0, close = left[1 + g * K + j], bool(distances[j] < threshold[space][b])
                sheet.paste(_tile(images[j]), (x0, top))
                if close:
                    draw.rectangle((x0 - 3, top - 3, x0 + tile + 2, top + tile + 2), outline=RED, width=3)
                draw.text((x0, top + tile + 2), f"d = {float(distances[j]):.2f}\n{names[c] if c < len(names) else c}",
                          fill=RED if close else "black", font_size=15)
    return sheet


def neighbours_report(searched, reference, found, threshold, labels):
    """Markdown: the set searched, the held-out reference per space, how many samples lie closer, the verdict."""
    B, n_held = len(labels), len(reference[SPACES[0]])
    close = {space: (found[space][1][:, 0] < threshold[space]).nonzero()[:, 0].tolist() for space in SPACES}
    head = "| | " + " | ".join(SPACE_NAMES[s] for s in SPACES) + " |\n|---|" + "---|" * len(SPACES) + "\n"
    cells = [
        ("typical nearest distance of a held-out real image (median)",
         lambda s: f"{float(reference[s].quantile(0.5)):.2f}"),
        (f"{100 * LOW:.0f}% of held-out real images of the sample's class are closer than",
         lambda s: f"{float(threshold[s].min()):.2f} to {float(threshold[s].max()):.2f}"),
        ("median nearest distance of the samples", lambda s: f"{float(found[s][1][:, 0].quantile(0.5)):.2f}"),
        ("samples closer than that", lambda s: f"{len(close[s])} / {B}"),
    ]
    table = head + "\n".join(f"| {name} | " + " | ".join(cell(s) for s in SPACES) + " |" for name, cell in cells)
    if not any(close.values()):
        verdict = ("No sample is closer to its nearest training image than held-out real images typically are: "
                   "no sign of copying.")
    else:
        which = "; ".join(f"by {SPACE_NAMES[s]}: " + ", ".join(f"#{b + 1} ({labels[b]})" for b in close[s])
                          for s in SPACES if close[s])
        verdict = (f"Suspicious: {which}. Each lies closer to a training image than {100 * (1 - LOW):.0f}% of "
                   "held-out real images of its class lie to theirs. Look at its row: a neighbour that is the same "
                   f"image is a copy; a merely similar one can be chance ({100 * LOW:.0f}% of new images fall there "
                   "too).")
    return (f"**Searched:** {searched}.\n\n**Reference:** the {n_held:,} real test images bundled with the model "
            "(never trained on), against the same set. Distances: L2 over all pixels in [-1, 1] units, and L2 "
            f"between the judge's 128 features.\n\n{table}\n\n**Verdict:** {verdict}")


def build(ex):
    """The section in the current tab, under the comparison of `ex` (explore's Parts): it samples with ex's model
    and seed and with column A's sampler, steps and guidance. Its events wired; returns its Parts."""
    ui = Parts()
    gr.Markdown("#### Is the model copying? Nearest training images")
    gr.Markdown(NEIGHBOURS_HELP)
    with gr.Row():
        ui.per_class = gr.Slider(*LIMITS["nn_per_class"], value=1, step=1, label="samples per class", scale=2)
        ui.go = gr.Button("Sample with column A's sampler, steps and guidance, then search", variant="primary",
                          elem_id="nb_go", scale=2)
        ui.stop = gr.Button("Stop", variant="stop", scale=1)
    with gr.Row():
        ui.sheet = image("each sample, its nearest training images by judge features and by pixels", elem_id="nb_img",
                         scale=3, show_label=False)
        ui.report = gr.Markdown(elem_id="nb_text")

    ui.go.click(neighbours_run, inputs_kwargs=by_name(neighbours_run, ex.model, ex.seed, ui.per_class, sampler=ex.a_sampler,
                                                      steps=ex.a_steps, guidance=ex.a_guidance),
                outputs=[ui.sheet, ui.report], api_name="neighbours", **sampling_job())
    ui.stop.click(neighbours_stop, api_name="neighbours_stop", queue=False)
    return ui
