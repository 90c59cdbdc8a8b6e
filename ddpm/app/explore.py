"""Tab 7, Explore: change one choice of DDPM at a time and compare up to three runs side by side, judged.

Every column starts from the same x_T and draws its step noises z from a generator seeded alike, so two
columns differ only by the settings that differ. The columns advance together (step-synchronised: at tick k
of K, a column of n steps has done ceil(k n / K) of them), stream together and are scrubbed together.

The ablation switches change exactly one thing each:
    no_z     every z of Alg. 2, line 4 (and of DDIM with eta > 0) is 0: sigma_t z vanishes
    wrong_t  the network is always told t = T/2, whatever step the sampler is at
    clip     x0_hat is clipped to [-1, 1] before the update (off: the raw prediction, which can leave [-1, 1])
A scene is every setting of the tab as a URL query string: a link restores it, and the presets are scenes. A
column's setting has one name everywhere, in the handlers, the page and the links: a_sampler, b_steps, c_no_z, ...
`build()` lays the tab out (with the curves of curves.py and the neighbour search of neighbours.py) and wires it.
"""
import copy
import inspect
import math
import time
import urllib.parse
from collections import deque
from dataclasses import asdict, dataclass, fields, replace

import gradio as gr
import torch
from PIL import Image, ImageDraw

from ..data import to_uint8, to_unit_range
from ..eval.evaluate import calls_per_image
from ..sampling import SAMPLERS, VARIANCES, sample_steps, timesteps
from . import curves, neighbours, openers
from .cores import shares_cores
from .explain import EXPLORE, LEADS, SOURCES
from .images import show
from .inputs import LIMITS, check_int, check_sampling, class_names, sampler_row
from .jobs import JobStop, holds_session, stopper
from .registry import registry, session_id
from .widgets import (FEW_STEPS, SAMPLER_CHOICES, Parts, by_name, code, go_button, go_row, image, intro, model_input, openers_job,
                      pictured, sampling_job, seed_input)

NAMES = ("A", "B", "C")
MAX_FRAMES = 60            # recorded ticks per comparison (the scrubber)
STREAM_EVERY_S = 0.25      # at most ~4 updates a second
SCALE = 4                  # nearest-neighbour upscaling of each 28 x 28 tile
RIGHT, WRONG = (0, 114, 178), (213, 94, 0)     # the judge's verdicts, Okabe-Ito blue and vermillion (colour-blind safe)


@dataclass
class Column:
    """One column's settings; the defaults are column A of the default scene."""
    on: bool = True                # column A is always on
    sampler: str = "dpmpp_2m"
    steps: int = 10                # DDIM / DPM-Solver++ (DDPM always walks all T)
    eta: float = 0.0               # DDIM only: 0 deterministic, 1 DDPM's posterior noise
    guidance: float = 2.0          # s = 1 + w; 1 = no guidance
    variance: str = "beta"         # DDPM only: sigma_t^2 = beta_t or beta_tilde_t
    clip: bool = True              # clip x0_hat to [-1, 1]
    no_z: bool = False             # ablation: z = 0 in Alg. 2, line 4
    wrong_t: bool = False          # ablation: the network is told t = T/2

    def steps_or_none(self):
        """`steps` as sample_steps takes it: None for a sampler that always walks all T steps."""
        return None if sampler_row(self.sampler).all_steps else self.steps

    def has_noise(self):
        return not sampler_row(self.sampler).deterministic(self.eta)

    def label(self, conditional=True):
        """The settings in a line; a setting that changes nothing here says so."""
        row = sampler_row(self.sampler)
        parts = [f"{row.short}, {'all T' if row.all_steps else self.steps} steps",
                 f"s = {self.guidance:g}" if conditional else "no classes, so no guidance"]
        parts += [f"η = {self.eta:g}"] if row.uses_eta else []
        parts += ["σ² = β̃" if self.variance == "beta_tilde" else "σ² = β"] if takes(row, "variance") else []
        parts += [] if self.clip else ["no clipping"]
        parts += [("no z" if self.has_noise() else "no z (no effect: this sampler adds no z)")] if self.no_z else []
        parts += ["told t = T/2"] if self.wrong_t else []
        return " · ".join(parts)


FIELDS = [f.name for f in fields(Column)]
PREFIXES = [name.lower() for name in NAMES]
SETTINGS = [f"{p}_{f}" for p in PREFIXES for f in FIELDS]          # every column's settings by name: a_on, ..., c_wrong_t


def takes(row, keyword):
    """Whether a sampler's step function uses `keyword` (each takes the keywords it uses and the rest as **_)."""
    return keyword in inspect.signature(row.step).parameters


def no_noise(shape, generator=None, device=None):
    """The `randn` of the "no z" ablation: every z of Alg. 2, line 4 is 0, so x_{t-1} is the posterior mean."""
    return torch.zeros(shape, device=device)


def told_wrong_t(ddpm):
    """A view of `ddpm` (the same weights) whose network is always told t = T // 2: the ablation that shows what
    the time input is for."""
    t_fixed = ddpm.T // 2
    wrong = copy.copy(ddpm)                                  # shares the network; only `eps` is its own
    wrong.eps = lambda x_t, t, y=None: type(ddpm).eps(ddpm, x_t, torch.full_like(t, t_fixed), y)
    return wrong


def column_run(ddpm, x_T, y, col, seed):
    """The reverse run of one column: sample_steps from x_T with its settings and its own generator, seeded
    alike in every column (the same stream of step noises)."""
    model = told_wrong_t(ddpm) if col.wrong_t else ddpm
    return sample_steps(model, x_T.clone(), y=y, sampler=col.sampler, steps=col.steps_or_none(),
                        eta=col.eta, guidance_scale=col.guidance if y is not None else 1.0, clip_x0=col.clip,
                        variance=col.variance, generator=torch.Generator().manual_seed(seed + 1),
                        randn=no_noise if col.no_z else torch.randn)


def columns_from(settings):
    """The columns' settings by name (SETTINGS: a_on, a_sampler, ..., c_wrong_t) -> three Columns."""
    missing, unknown = [k for k in SETTINGS if k not in settings], sorted(set(settings) - set(SETTINGS))
    if missing or unknown:
        raise gr.Error(f"the comparison takes the settings {SETTINGS}; missing {missing}, unknown {unknown}")
    return [Column(**{f: settings[f"{p}_{f}"] for f in FIELDS}) for p in PREFIXES]


def settings_of(cols):
    """Three Columns -> their settings by name, in SETTINGS order."""
    return {f"{p}_{f}": v for p, col in zip(PREFIXES, cols, strict=True) for f, v in asdict(col).items()}


def check_column(ddpm, name, col):
    """The column's settings checked (gr.Error naming the column, the value and what is allowed)."""
    try:
        for flag in ("on", "clip", "no_z", "wrong_t"):
            if not isinstance(getattr(col, flag), bool):
                raise gr.Error(f"{flag} = {getattr(col, flag)!r} must be true or false")
        if col.variance not in VARIANCES:
            raise gr.Error(f"variance {col.variance!r} is unknown; choose one of {list(VARIANCES)}")
        steps, eta, guidance, _ = check_sampling(ddpm, col.sampler, col.steps, col.eta, col.guidance, 0)
        return replace(col, steps=steps or col.steps, eta=float(eta), guidance=float(guidance))
    except gr.Error as e:
        raise gr.Error(f"column {name}: {e.message}") from None


def verdicts(judge, x):
    """The judge's class and confidence (softmax probability) for every image: (classes [B], confidences [B])."""
    with torch.no_grad():
        p = judge(x).softmax(1)
    conf, pred = p.max(1)
    return pred, conf


def judged_tiles(x, y, pred, conf, names, n_known=None):
    """Images [B, C, H, W] in rows of up to 4, each with the judge's verdict under it: the class it sees and its
    confidence, blue when that is the asked class, orange and marked "no" when it is not (colour-blind safe), grey
    when nothing was asked (unconditional samples) or the asked class is one the judge never saw (a fine-tuned new
    class)."""
    per_row = min(4, len(x))
    tiles = [show(x[i:i + 1], SCALE) for i in range(len(x))]
    w, h = tiles[0].width, tiles[0].height
    cap, pad = 20, 6
    rows = math.ceil(len(tiles) / per_row)
    canvas = Image.new("RGB", (per_row * (w + pad), rows * (h + cap + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, per_row)
        x0, y0 = c * (w + pad), r * (h + cap + pad)
        canvas.paste(tile, (x0, y0))
        if pred is None:
            continue
        asked = y is not None and (n_known is None or int(y[i]) < n_known)
        right = asked and int(pred[i]) == int(y[i])
        seen = names[int(pred[i])] if names else str(int(pred[i]))
        text = f"{seen.split(' - ')[0][:7]} {100 * float(conf[i]):.0f}%" + ("" if right or not asked else " no")
        colour = RIGHT if right else WRONG if asked else (90, 90, 90)
        draw.text((x0 + 2, y0 + h + 1), text, fill=colour, font_size=15)
    return canvas


def _caption(col, step, n_steps, conditional, schedule):
    """The column's settings, where it is, and the range of the network's x0_hat before any clipping (Eq. 15):
    what clipping would cut off."""
    if step is None:
        return f"**{col.label(conditional)}**  \nnot started"
    t_prev = "clean" if step.t_prev < 0 else step.t_prev
    alpha_bar = schedule.at(step.t).alpha_bar
    raw = (step.x_t - math.sqrt(1 - alpha_bar) * step.eps_hat) / math.sqrt(alpha_bar)
    return (f"**{col.label(conditional)}**  \nstep {step.i + 1} / {n_steps}, t = {step.t} → {t_prev} · x̂₀ before "
            f"clipping in [{float(raw.min()):.1f}, {float(raw.max()):.1f}]")


def _summary(col, y, pred, conf, n_known, calls, seconds):
    head = f"**{col.label(y is not None)}** — {calls} network calls per image, {seconds:.1f} s"
    if pred is None:
        return head + "  \n*No judge classifier for this model: the images are not checked.*"
    asked = (y < n_known) if (y is not None and n_known is not None) else torch.ones(len(pred), dtype=torch.bool)
    if y is None or not asked.any():
        return head + f"  \njudge: {'nothing was asked (no classes)' if y is None else 'classes it never saw'}; " \
                      f"mean confidence {100 * float(conf.mean()):.0f}% in what it sees"
    hits, judged = int((pred == y)[asked].sum()), int(asked.sum())
    skipped = f"; {len(y) - judged} of a class the judge never saw, not judged" if judged < len(y) else ""
    return (head + f"  \n**judge: {hits} / {judged} show the asked class** ({100 * hits / judged:.0f}%), "
            f"mean confidence {100 * float(conf[asked].mean()):.0f}%{skipped}")


@shares_cores
@holds_session("explore")
def compare_run(model, n, seed, request: gr.Request = None, **settings):
    """Run the enabled columns from one x_T, step-synchronised, and stream them.

    settings: every column's settings by name (SETTINGS, see `Column`). Yields 3 x (image, markdown), the scrubber
    and a status line; the last update has the final images with the judge's verdicts under them."""
    sid, reg = session_id(request), registry()
    ddpm = reg.model(model, sid)
    n, seed = check_int("images per column", n, "batch"), check_int("seed", seed)
    cols = columns_from(settings)
    for k in active_columns(cols):
        cols[k] = check_column(ddpm, NAMES[k], cols[k])
    session = reg.session(sid)
    ticks = session.explore = []          # this run's own record: (per column uint8 x_t or None, captions)
    yield from compare_walk(model, sid, ddpm, cols, n, seed, session.stops["explore"], ticks)


def active_columns(cols):
    """The columns that run: A always, B and C when switched on (a column switched off is not checked)."""
    return [k for k, col in enumerate(cols) if col.on is True or k == 0]


def compare_walk(model, sid, ddpm, cols, n, seed, stop, ticks):
    """The comparison of checked columns, streamed as `compare_run` yields it; records its ticks in `ticks`."""
    reg = registry()
    active = active_columns(cols)
    names = class_names(ddpm)
    y = torch.arange(n) % ddpm.num_classes if ddpm.num_classes else None      # classes 0, 1, 2, ... in turn
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn((n, *ddpm.sample_shape), generator=g)                          # Alg. 2, line 1: one x_T
    runs = {k: column_run(ddpm, x_T, y, cols[k], seed) for k in active}
    n_steps = {k: len(timesteps(cols[k].sampler, ddpm.T, cols[k].steps_or_none())) for k in active}
    K = max(n_steps.values())
    last_step, done, spent = {k: None for k in active}, {k: 0 for k in active}, {k: 0.0 for k in active}
    stride, shown = math.ceil(K / MAX_FRAMES), 0.0

    def record(tick):
        ticks.append([to_uint8(last_step[k].x_prev if tick == K else last_step[k].x_t) if k in runs else None
                      for k in range(len(NAMES))] + [f"tick {tick} / {K}"])

    def frame():
        return [(show(last_step[k].x_t.clamp(-1, 1), SCALE, nrow=min(4, n)),
                 _caption(cols[k], last_step[k], n_steps[k], y is not None, ddpm.schedule))
                if k in runs else (None, "*column off*") for k in range(len(NAMES))]

    for tick in range(1, K + 1):
        for k in active:
            target = math.ceil(tick * n_steps[k] / K)
            start = time.perf_counter()
            while done[k] < target:
                last_step[k] = next(runs[k])
                done[k] += 1
            spent[k] += time.perf_counter() - start
        if tick % stride == 0 or tick == K:
            record(tick)
        if tick == 1 or stop.is_set() or time.perf_counter() - shown > STREAM_EVERY_S:
            shown = time.perf_counter()
            yield (*[v for pair in frame() for v in pair], gr.update(), f"tick {tick} / {K}")
        if stop.is_set():
            if not ticks or ticks[-1][-1] != f"tick {tick} / {K}":            # a stopped run keeps its last state
                record(tick)
            break
    base = reg.base_folder(model, sid)
    judge = reg.judge(base)
    n_known = reg.config(base).get("num_classes") if base in reg.bundled() else None   # a fine-tune may add a class
    out = []
    for k in range(len(NAMES)):
        if k not in runs:
            out += [None, "*column off*"]
            continue
        step = last_step[k]
        x = step.x_prev.clamp(-1, 1)
        pred, conf = verdicts(judge, x) if judge is not None else (None, None)
        calls = calls_per_image(dict(steps=n_steps[k], guidance=cols[k].guidance if y is not None else 1.0))
        summary = _summary(cols[k], y, pred, conf, n_known, calls, spent[k])
        out += [pictured(judged_tiles(x, y, pred, conf, names, n_known),
                         f"column {NAMES[k]}: {n} images by {model}, {summary.split(' — ')[0].strip('*')}" +
                         ("" if pred is None else "; under each the class the judge reads and its confidence")),
                summary + (f"  \n**stopped at step {done[k]} / {n_steps[k]}** ({stop.reason})" if done[k] < n_steps[k]
                           else "")]
    status = (f"**Done**: {len(runs)} columns from one x_T (seed {seed}), {n} images each, `{model}`" if not stop.is_set()
              else f"**Stopped** ({stop.reason}); what was made is shown")
    yield (*out, gr.update(minimum=0, maximum=len(ticks) - 1, value=len(ticks) - 1, step=1, interactive=True), status)


def explore_opening(model, request: gr.Request = None):
    """What the tab opens on for `model`: the default scene, run to the end, made once per model (openers.py); the
    scrubber stays off (it scrubs the visitor's own runs)."""
    sid = session_id(request)
    if not model:
        return (gr.update(),) * (2 * len(NAMES) + 2)
    ddpm = registry().model(model, sid)
    _, n, seed, cols = parse_scene(SCENES[DEFAULT_SCENE][1])
    cols = [check_column(ddpm, NAMES[k], col) for k, col in enumerate(cols)]

    def make():
        *out, _, status = deque(compare_walk(model, sid, ddpm, cols, n, seed, JobStop(), []), maxlen=1)[0]
        return (*out, gr.update(value=0, interactive=False),
                status + f" — *the tab opens on the default scene of `{model}`; press Compare to run yours*")

    return openers.cached(openers.shared_key(model, sid, "explore", n, seed, tuple(map(str, cols))), make)


compare_stop = stopper("explore")


def compare_scrub(frame, request: gr.Request = None):
    """Recorded tick `frame` of this session's last comparison: the three columns' x_t and a caption."""
    session = registry().peek(session_id(request))
    ticks = getattr(session, "explore", None) or []
    if not ticks:
        raise gr.Error("nothing recorded yet: press Compare first")
    frame = int(frame or 0)
    if not 0 <= frame < len(ticks):
        raise gr.Error(f"frame {frame} is outside [0, {len(ticks) - 1}]")
    *images, caption = ticks[frame]
    return (*[None if im is None else show(to_unit_range(im), SCALE, nrow=min(4, len(im))) for im in images],
            f"recorded {caption}")


# ---------------------------------------------------------------------------------------------- scenes
# A scene is the whole tab as a query string: tab=explore, model, n, seed and, per column, its fields
# (prefix a_, b_, c_). Every value is checked when a scene is opened.
SCENE_KEYS = {"model", "n", "seed", *SETTINGS}


def default_columns():
    """Columns A, B, C of the default scene."""
    return [Column(), Column(sampler="ddim"), Column(sampler="ddim", eta=1.0)]


def scene_query(model, n, seed, **settings):
    """The query string that restores this view ("?tab=explore&model=..."); model None leaves it out (a preset
    keeps the model the visitor picked). settings: every column's, by name (SETTINGS)."""
    cols = columns_from(settings)
    pairs = [("tab", "explore")] + ([("model", model)] if model is not None else []) + [("n", int(n)), ("seed", int(seed))]
    pairs += [(k, (int(v) if isinstance(v, bool) else v)) for k, v in settings_of(cols).items()]
    return "?" + urllib.parse.urlencode(pairs)


def _parse_value(key, text, default):
    """One query value as the type of its default, or gr.Error naming the key, the value and what is allowed."""
    try:
        if isinstance(default, bool):
            if text not in ("0", "1", "true", "false"):
                raise ValueError
            return text in ("1", "true")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        return text
    except ValueError:
        kind = "0 or 1" if isinstance(default, bool) else type(default).__name__
        raise gr.Error(f"the link's {key} = {text!r} is not a valid value (expected {kind})") from None


def parse_scene(query):
    """A query string (with or without "?") -> (model or None, n, seed, [Column] x 3); unknown keys refused."""
    query = query.strip()
    query = query.split("?", 1)[1] if "?" in query else query          # a whole link, or its query string
    # keys starting with "__" are Gradio's and the host's own (?__theme=dark), not the scene's
    params = {k: v for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items() if not k.startswith("__")}
    unknown = sorted(set(params) - SCENE_KEYS - {"tab", "scene"})
    if unknown:
        raise gr.Error(f"the link has unknown settings {unknown}; a scene link holds only {sorted(SCENE_KEYS)}")
    one = {k: v[-1] for k, v in params.items()}
    if "scene" in one:
        if one["scene"] not in SCENES:
            raise gr.Error(f"scene {one['scene']!r} is unknown; choose one of {list(SCENES)}")
        extra = sorted(set(one) - {"tab", "scene", "model"})
        if extra:
            raise gr.Error(f"the link names scene {one['scene']!r} and also {extra}: give a scene (and a model) or "
                           f"settings, not both")
        return (one.get("model") or None, *parse_scene(SCENES[one["scene"]][1])[1:])
    cols = default_columns()
    for p, col in zip(PREFIXES, cols, strict=True):
        for f in FIELDS:
            if f"{p}_{f}" in one:
                setattr(col, f, _parse_value(f"{p}_{f}", one[f"{p}_{f}"], getattr(col, f)))
    n = _parse_value("n", one.get("n", "8"), 8)
    seed = _parse_value("seed", one.get("seed", "0"), 0)
    for col in cols:
        if col.sampler not in SAMPLERS:
            raise gr.Error(f"the link's sampler {col.sampler!r} is unknown; choose one of {list(SAMPLERS)}")
    return one.get("model") or None, n, seed, cols


def _scene(n=8, **columns):
    """A preset's query: n images per column, column settings a=dict(...), b=..., c=... (the others: defaults)."""
    cols = default_columns()
    for p, changes in columns.items():
        cols[PREFIXES.index(p)] = Column(**{**asdict(Column()), **changes})
    return scene_query(None, n, 0, **settings_of(cols))


# name -> (what to look for, the scene): lecture-ready comparisons
SCENES = {
    "Three samplers at 10 steps (the default)": (
        "One x_T, 10 steps each: the two ODE solvers, DPM-Solver++ and DDIM with η = 0, land on nearly the same "
        "images; DDIM with η = 1 adds fresh noise z at every step and lands elsewhere: the same classes in other "
        "shapes (other handwriting on MNIST, another cut of garment on FashionMNIST).",
        _scene(a=dict(), b=dict(sampler="ddim"), c=dict(sampler="ddim", eta=1.0))),
    "DDIM vs DDPM at 10 steps": (
        "DDIM at 10 steps (A) and the same 10 steps with DDPM's fresh noise, η = 1 (B), both give clean images; "
        "Algorithm 2 (C) walks all 1000 steps, 2000 network calls per image against 20, for images the judge scores "
        "the same: the calls under each column are the cost of each answer.",
        _scene(4, a=dict(sampler="ddim"), b=dict(sampler="ddim", eta=1.0), c=dict(sampler="ddpm", guidance=2.0))),
    "Clipping matters": (
        "At s = 5 the network's x̂₀ leaves [-1, 1] far (watch its range under each column while it runs: about "
        "[-4.4, 5.2] at t = 699 on MNIST); A clips it at every step, B and C do not. The final images differ less "
        "than the ranges, as later steps pull x̂₀ back: MNIST's strokes come out bolder without clipping, and on "
        "FashionMNIST thin parts such as a sandal's straps can lose their shape.",
        _scene(a=dict(sampler="ddim", steps=20, guidance=5.0), b=dict(sampler="ddim", steps=20, guidance=5.0, clip=False),
               c=dict(sampler="dpmpp_2m", steps=20, guidance=5.0, clip=False))),
    "Guidance trades diversity": (
        "The same noise at s = 1, 3 and 7: the shapes grow bolder, plainer and more alike with s, and "
        "the judge grows surer; the variety of s = 1 (thin handwriting on MNIST, patterns and textures on "
        "FashionMNIST) is what guidance spends (the curves below measure it as diversity).",
        _scene(a=dict(guidance=1.0), b=dict(guidance=3.0), c=dict(guidance=7.0))),
    "What Algorithm 2 needs (ablations)": (
        "Algorithm 2 as written (A). Without its noise z (B) every step lands on the posterior mean: the images come "
        "out smooth (thin strokes on MNIST, flat garments without texture on FashionMNIST), and one may lose its "
        "shape. Told t = T/2 at every step (C), the network removes the wrong amount of noise and the images stay "
        "noisy: the judge recognises none of them.",
        _scene(4, a=dict(sampler="ddpm", guidance=1.0), b=dict(sampler="ddpm", guidance=1.0, no_z=True),
               c=dict(sampler="ddpm", guidance=1.0, wrong_t=True))),
}
DEFAULT_SCENE = next(iter(SCENES))


def scene_values(link, request: gr.Request = None):
    """The tab's controls set from a scene link or its query string: (model, n, seed, every column's settings in
    SETTINGS order). The model stays as it is when the link names none; a model that is not available is refused
    by name."""
    model, n, seed, cols = parse_scene(link or "")
    if model is not None and model not in registry().model_names(session_id(request)):
        raise gr.Error(f"the link's model {model!r} is not available here; choose one of "
                       f"{registry().model_names(session_id(request))}")
    return (model if model else gr.update(), n, seed, *settings_of(cols).values())


def scene_preset(scene, request: gr.Request = None):
    """A preset picked from the dropdown: its settings, and one sentence of what to look for."""
    if scene not in SCENES:
        raise gr.Error(f"scene {scene!r} is unknown; choose one of {list(SCENES)}")
    return (*scene_values(SCENES[scene][1], request), f"*{SCENES[scene][0]}*")


# the "link to this view" button: the server makes the query string, the page prepends its own address (behind a
# Space's proxy only the browser knows it)
FULL_LINK_JS = "(q) => window.location.origin + window.location.pathname + q"
# on page load, after scene_from_url: a link to a scene runs the comparison, so it shows the same images at once
RUN_IF_SCENE_JS = ("() => { if (new URLSearchParams(window.location.search).get('tab') === 'explore') "
                   "setTimeout(() => document.querySelector('#explore-go').click(), 300); }")


def preset_of(query):
    """The preset whose settings a scene query holds (any model), or None."""
    settings = parse_scene(query)[1:]
    return next((name for name, (_, preset) in SCENES.items() if parse_scene(preset)[1:] == settings), None)


def scene_from_url(request: gr.Request = None):
    """On page load: when the address holds a scene (tab=explore&...), open this tab with its settings; a link to
    a preset's settings also names the preset in the picker and shows its sentence."""
    params = {k: v for k, v in dict(getattr(request, "query_params", {}) or {}).items() if not k.startswith("__")}
    if params.get("tab") != "explore":
        return (gr.update(), gr.update(), *[gr.update()] * (3 + len(SETTINGS)), gr.update())
    query = urllib.parse.urlencode(params)
    preset = preset_of(query)
    note = SCENES[preset][0] if preset else "Opened from a link: it runs by itself; Compare runs it again."
    return (gr.update(selected="explore"), gr.update(value=preset),          # None: the settings are no preset's
            *scene_values(query, request), f"*{note}*")


def _column_controls(ui, name, col):
    """Column `name`'s settings, set to `col`, as ui.a_on, ui.a_sampler, ... (its prefix, then the field)."""
    variances = {"beta": "σ² = β", "beta_tilde": "σ² = β̃ (posterior)"}
    controls = dict(
        on=gr.Checkbox(value=col.on, label=f"run column {name}", interactive=name != NAMES[0]),
        sampler=gr.Radio(SAMPLER_CHOICES, value=col.sampler, label="sampler"),
        steps=gr.Slider(*LIMITS["steps"], value=col.steps, step=1, label=f"steps ({FEW_STEPS})"),
        eta=gr.Slider(*LIMITS["eta"], value=col.eta, step=0.05, label="DDIM η (1 = DDPM's noise)"),
        guidance=gr.Slider(*LIMITS["guidance"], value=col.guidance, step=0.1, label="guidance scale s"),
        variance=gr.Radio([(variances[v], v) for v in VARIANCES], value=col.variance, label="DDPM variance σ_t²"),
        clip=gr.Checkbox(value=col.clip, label="clip x̂₀ to [-1, 1]"),
        no_z=gr.Checkbox(value=col.no_z, label="ablation: no noise z (Alg. 2, line 4)"),
        wrong_t=gr.Checkbox(value=col.wrong_t, label="ablation: the network is told t = T/2"))
    for f in FIELDS:
        setattr(ui, f"{name.lower()}_{f}", controls[f])


def build():
    """The tab in the current Blocks: the comparison, then the curves (curves.py) and the neighbour search
    (neighbours.py), their events wired. Returns its Parts (`model`, the picker; `scene`, the scene picker, `view`,
    the model, n, seed and every column's settings, and `note`: what a link sets on page load)."""
    ui = Parts()
    with gr.Tab("7. Explore", id="explore"):
        intro(LEADS["explore"], EXPLORE)
        with gr.Row(equal_height=False):
            with gr.Column(scale=0, min_width=250):
                with go_row():
                    ui.go = go_button("explore", "▶ Compare")
                    ui.stop = gr.Button("Stop", variant="stop", min_width=80)
            ui.scene = gr.Dropdown(list(SCENES), value=DEFAULT_SCENE, label="lecture-ready scene", scale=3,
                                   elem_id="ex_scene")
            ui.model = model_input()
        ui.note = gr.Markdown(f"*{SCENES[DEFAULT_SCENE][0]}*")
        ui.status = gr.Markdown(elem_id="ex_status")
        ui.images, ui.texts = [], []
        with gr.Row(equal_height=False):
            for name, col in zip(NAMES, default_columns(), strict=True):
                with gr.Column(min_width=300):
                    main = name == NAMES[0]
                    ui.images.append(image(f"column {name}", main=main, height=230,
                                           elem_id="explore-main" if main else f"ex_img_{name.lower()}"))
                    ui.texts.append(gr.Markdown(elem_id=f"ex_text_{name.lower()}"))
                    with gr.Accordion(f"column {name}: its settings", open=False):
                        _column_controls(ui, name, col)
        with gr.Row():
            ui.n = gr.Slider(*LIMITS["batch"], value=8, step=1, label="images per column")
            ui.seed = seed_input("seed (one x_T for every column)")
            ui.frame = gr.Slider(0, 1, value=0, step=1, label="scrub all columns together (after a run)",
                                 interactive=False, scale=2)
        with gr.Row(equal_height=True):
            ui.link_go = gr.Button("Link to this view", elem_id="ex_link_go", scale=0, min_width=160)
            ui.link = gr.Textbox(label="link to this view (copy it; or paste a link here and press Enter to open it)",
                                 elem_id="ex_link", buttons=["copy"], scale=4)
        curves.build(ui)
        neighbours.build(ui)
        code(column_run, no_noise, told_wrong_t, *SOURCES["explore"])

    ui.view = [ui.model, ui.n, ui.seed, *[getattr(ui, k) for k in SETTINGS]]
    columns = [v for pair in zip(ui.images, ui.texts, strict=True) for v in pair]
    shown = [*columns, ui.frame, ui.status]
    ui.run = ui.go.click(compare_run, inputs_kwargs=by_name(compare_run, *ui.view), outputs=shown, api_name="compare",
                         show_progress="minimal", **sampling_job())
    # a new model stops the comparison of the old one and shows the new model's default scene in its place
    ui.model.change(compare_stop, api_name=False, queue=False, cancels=[ui.run]).then(
        explore_opening, inputs_kwargs=by_name(explore_opening, ui.model), outputs=shown, api_name="explore_opening",
        show_progress="minimal", **openers_job())
    ui.stop.click(compare_stop, api_name="compare_stop", queue=False)
    ui.frame.release(compare_scrub, inputs_kwargs=by_name(compare_scrub, ui.frame), outputs=[*ui.images, ui.status],
                     api_name="compare_scrub", concurrency_limit=4, concurrency_id="scrub")
    ui.scene.input(scene_preset, inputs_kwargs=by_name(scene_preset, ui.scene), outputs=[*ui.view, ui.note],
                   api_name="scene_preset")
    ui.link_go.click(scene_query, inputs_kwargs=by_name(scene_query, *ui.view), outputs=[ui.link], api_name="scene_link").then(
        None, inputs=[ui.link], outputs=[ui.link], js=FULL_LINK_JS)
    ui.link.submit(scene_values, inputs_kwargs=by_name(scene_values, ui.link), outputs=ui.view, api_name="scene")
    return ui
