"""`app.build_demo()` in-process with the tiny models: every event feeds each input to the handler parameter of the
input's own name, so two swapped inputs fail here; building starts no server, no thread and sets nothing in the
process (main() does); the layout's choices come from the core's tables."""
import inspect
import json
import os
import subprocess
import sys
import textwrap

import gradio as gr
import pytest

import app
from app_fixtures import ROOT, make_models_dir
from ddpm.app import registry
from ddpm.app.widgets import Parts, by_name, filled_by_gradio
from ddpm.eval.sweep import FEW_STEP_SAMPLERS
from ddpm.pretrained import BUNDLED_DIR
from ddpm.sampling import SAMPLERS
from ddpm.schedule import SCHEDULES


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_models_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def demo(models):
    registry.set_registry(models, use_judges=False)
    yield app.build_demo()
    registry.set_registry(BUNDLED_DIR)


def fed_parameters(fn):
    """The handler parameter each input of an event fills, as Gradio calls the handler: the positional inputs
    fill the parameters Gradio does not fill itself, in order; the keyword inputs (inputs_kwargs) their names."""
    positional = [p.name for p in inspect.signature(fn.fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and not filled_by_gradio(p)]
    keyword = list(fn.input_keyword_names)
    return positional[:len(fn.inputs) - len(keyword)] + keyword


def miswired(demo):
    """[(handler, parameter, the names of the input that fills it)] for every input that fills a parameter of
    another name, and [(handler, parameter, None)] for every parameter without a default that nothing fills."""
    wrong = []
    for fn in demo.fns.values():
        if fn.fn is None:                                             # a JavaScript-only event
            continue
        fed = fed_parameters(fn)
        for component, parameter in zip(fn.inputs, fed, strict=True):
            if parameter not in getattr(component, "feeds", ()):
                wrong.append((fn.name, parameter, getattr(component, "feeds", ())))
        wrong += [(fn.name, p.name, None) for p in inspect.signature(fn.fn).parameters.values()
                  if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                  and not filled_by_gradio(p) and p.name not in fed]
    return wrong


def test_every_input_feeds_the_parameter_of_its_name(demo):
    assert miswired(demo) == []
    wired = [fn for fn in demo.fns.values() if fn.fn is not None and fn.inputs]
    assert len(wired) >= 30 and all(len(fn.input_keyword_names) == len(fn.inputs) for fn in wired)   # all by name


def handler(model, seed, per_class):
    return model


def test_two_swapped_inputs_are_caught():
    """Wired by position, a seed and a count swapped go unnoticed by Gradio (both are numbers): miswired names them.
    Wired by name, the order the components are listed in does not matter."""
    with gr.Blocks() as demo:
        ui = Parts()
        ui.model, ui.seed, ui.per_class = gr.Dropdown(), gr.Number(), gr.Slider()
        go = gr.Button()
        go.click(handler, inputs=[ui.model, ui.per_class, ui.seed], outputs=[ui.model])
    assert miswired(demo) == [("handler", "seed", ("per_class",)), ("handler", "per_class", ("seed",))]
    with gr.Blocks() as demo:
        ui = Parts()
        ui.model, ui.seed, ui.per_class = gr.Dropdown(), gr.Number(), gr.Slider()
        kwargs = by_name(handler, ui.per_class, ui.model, ui.seed)
        gr.Button().click(handler, inputs_kwargs=kwargs, outputs=[ui.model])
    assert list(kwargs) == ["model", "seed", "per_class"] and miswired(demo) == []


def test_by_name_refuses_a_missing_an_unknown_and_a_doubled_parameter():
    with gr.Blocks():
        ui, other = Parts(), Parts()
        ui.model, ui.seed, ui.eta, other.seed = gr.Dropdown(), gr.Number(), gr.Slider(), gr.Number()
        with pytest.raises(ValueError, match=r"handler: no component feeds its parameters \['seed', 'per_class'\]"):
            by_name(handler, ui.model)
        with pytest.raises(ValueError, match=r"feeds \['eta'\]: none of its parameters \['model', 'seed', 'per_class'\]"):
            by_name(handler, ui.model, ui.seed, ui.eta)
        with pytest.raises(ValueError, match="two components feed its parameter 'seed'"):
            by_name(handler, ui.model, ui.seed, other.seed, per_class=ui.eta)
        with pytest.raises(ValueError, match="has no parameter 'steps'"):
            by_name(handler, ui.model, ui.seed, steps=ui.eta)
        with pytest.raises(ValueError, match=r"takes \*args"):
            by_name(lambda *values: values, ui.model)


TABS = ("forward", "reverse", "grid", "finetune", "edit", "playground", "explore")


def test_the_api_names_and_elem_ids_other_tests_drive(demo):
    """tests/test_app_server.py, tests/test_browser.py, tests/test_lecture.py, benchmarks/ and outside checks call
    these endpoints and find these elements: every tab's primary button `<tab>-go` and main picture `<tab>-main`."""
    api = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert api >= {"forward", "forward_play", "forward_gallery", "forward_example", "forward_upload", "reverse",
                   "reverse_classes", "reverse_stop", "reverse_scrub", "reverse_opening", "grid", "grid_classes",
                   "grid_stop", "grid_opening", "finetune", "finetune_classes", "finetune_stop", "finetune_opening",
                   "add_drawing", "clear_drawings", "sdedit", "sdedit_stop", "sdedit_opening", "interpolate",
                   "interpolate_opening", "playground_train", "playground_stop", "playground_paths", "playground_opening",
                   "compare", "compare_stop", "compare_scrub", "explore_opening", "scene", "scene_link", "scene_preset",
                   "neighbours", "neighbours_stop", "sweep_steps", "sweep_guidance", "sweep_stop", "curves_opening"}
    ids = {block.elem_id for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    assert ids >= {f"{tab}-{part}" for tab in TABS for part in ("go", "main")}
    assert ids >= {"fwd_t", "rev_sampler", "rev_steps", "rev_seconds", "rev_replay", "rev_gif", "grid_n", "grid_stop",
                   "grid_sampler", "grid_steps", "ft_kind", "ft_budget", "sd_sketch", "sd_t", "sd_xt", "sd_sampler",
                   "sd_steps", "ip_go", "ip_strip", "ip_steps", "pg_T", "pg_seconds", "pg_status", "pg_draw", "pg_paths",
                   "ex_scene", "ex_status", "ex_link_go", "ex_link", "ex_img_b", "ex_text_c", "cv_per_class",
                   "cv_steps_go", "cv_guid_go", "cv_guid_img", "cv_guid_text", "cv_sampler", "cv_steps", "nb_go", "nb_img",
                   "nb_text", "lecture"}
    primary = {b.elem_id for b in demo.blocks.values() if isinstance(b, gr.Button) and b.variant == "primary"}
    assert primary >= {f"{tab}-go" for tab in TABS}


def test_each_tab_opens_on_a_picture_made_on_first_view_not_at_start(demo):
    """Every model picker's change (the page load fills it) and the page load itself make the opening pictures;
    building computes none (openers.py keeps them once made)."""
    from ddpm.app import openers
    assert not openers._kept
    openings = {fn.api_name: fn for fn in demo.fns.values() if str(fn.api_name).endswith("_opening")}
    assert set(openings) == {"reverse_opening", "grid_opening", "finetune_opening", "sdedit_opening",
                             "interpolate_opening", "playground_opening", "explore_opening", "curves_opening"}
    mains = {block._id: block.elem_id for block in demo.blocks.values() if str(getattr(block, "elem_id", "")).endswith("-main")}
    shown = {mains[o._id] for fn in openings.values() for o in fn.outputs if o._id in mains}
    assert shown == {f"{tab}-main" for tab in TABS if tab != "forward"}           # the forward tab draws on load
    assert all(fn.concurrency_id == "opener" for fn in openings.values())


def test_a_new_model_stops_the_job_of_its_tab(demo):
    """Issue 34, item 6: picking another model mid-run cancels the run of the old one (its opening picture follows)."""
    cancelled = {demo.fns[k].name: [demo.blocks[block].label for block, event in fn.targets if event == "change"]
                 for fn in demo.fns.values() for k in (getattr(fn, "cancels", None) or [])}
    runs = ("reverse_run", "grid_run", "sdedit_run", "interpolate_run", "compare_run")
    assert all(cancelled.get(run) == ["model"] for run in runs), cancelled


def by_label(demo, label):
    return [b for b in demo.blocks.values() if getattr(b, "label", None) == label]


def values(radio):
    return [value for _, value in radio.choices]


def test_the_choices_come_from_the_core(demo):
    rows = list(SAMPLERS.values())
    samplers = by_label(demo, "sampler")
    assert len(samplers) == 8                                  # reverse, grid, SDEdit, playground, 3 columns, curves
    assert all(s.choices == [(r.label, r.name) for r in rows] for s in samplers if s.elem_id != "cv_sampler")
    curve, = [s for s in samplers if s.elem_id == "cv_sampler"]
    assert values(curve) == list(FEW_STEP_SAMPLERS)
    interpolation, = by_label(demo, "deterministic sampler")
    assert values(interpolation) == [r.name for r in rows if r.deterministic(0)]
    assert all(values(s) == list(SCHEDULES) for s in by_label(demo, "schedule")) and len(by_label(demo, "schedule")) == 2
    T, = by_label(demo, "T (number of steps)")
    t, = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "fwd_t"]
    assert t.maximum == T.value - 1


BUILD_ONLY = textwrap.dedent("""
    import json, sys, threading
    import gradio as gr, torch
    import ddpm
    calls = []
    record = lambda name: (lambda *a, **k: calls.append(name))
    ddpm.keep_freed_memory = record("keep_freed_memory")        # before app.py imports it
    torch.set_num_threads = record("set_num_threads")
    gr.Blocks.launch = record("launch")
    before = {t.name for t in threading.enumerate()}
    import app
    app.guard.install = record("guard.install")
    demo = app.build_demo()
    threads = sorted({t.name for t in threading.enumerate()} - before)
    built = dict(calls=list(calls), threads=threads, running=demo.is_running, server=getattr(demo, "server", None) is not None)
    app.main()
    print(json.dumps(dict(built=built, main=calls[len(built["calls"]):])))
""")


def test_building_starts_no_server_no_thread_and_main_does_the_rest(models):
    env = {**os.environ, "DDPM_APP_MODELS": str(models), "DDPM_APP_JUDGE": "0", "GRADIO_ANALYTICS_ENABLED": "False"}
    out = subprocess.run([sys.executable, "-c", BUILD_ONLY], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["built"] == dict(calls=[], threads=[], running=False, server=False)
    assert result["main"] == ["set_num_threads", "keep_freed_memory", "guard.install", "launch"]
