"""Curves, measured (issue 19): the sweep's numbers, its generators, `evaluate --sweep` and the Explore tab's
handlers, with tiny models and a tiny random judge (no bundled model, no dataset download)."""
import math
import os
from types import SimpleNamespace

import gradio as gr
import pytest
import torch

from app_fixtures import make_models_dir
from ddpm.app import curves, registry
from ddpm.data import to_unit_range
from ddpm.eval.judge import Judge
from ddpm.eval.sweep import (SWEEP_JSON, guidance_points, load_sweep, plot_guidance, plot_steps, save_sweep,
                             steps_points, wilson_interval)
from ddpm.pretrained import BUNDLED_DIR, load_examples
from ddpm.tools.cli import main

A, B = SimpleNamespace(session_hash="sweep-a"), SimpleNamespace(session_hash="sweep-b")


def tiny_judge(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Judge(width=4, dataset="mnist").eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny mnist (with a judge) and fashion_mnist (without one) models in the app's registry."""
    root = make_models_dir(tmp_path_factory.mktemp("models"), per_class=3)
    tiny_judge().save(os.path.join(root, "mnist"))
    registry.set_registry(root, use_judges=True)
    yield root
    registry.set_registry(BUNDLED_DIR)


@pytest.fixture(autouse=True)
def empty_cache():
    curves.CACHE.clear()
    yield
    curves.CACHE.clear()


def real_of(folder):
    return to_unit_range(load_examples(folder)[0])


def drain(gen):
    return list(gen)


def test_wilson_interval_matches_a_hand_computation():
    # 8 of 10: p = 0.8, z^2 / n = 0.38416; centre (0.8 + 0.19208) / 1.38416, half-width 1.96 / 1.38416 * sqrt(0.025604)
    centre, half = 0.99208 / 1.38416, 1.96 / 1.38416 * math.sqrt(0.8 * 0.2 / 10 + 1.96 ** 2 / 400)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(centre - half) and hi == pytest.approx(centre + half)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)         # the textbook interval for 8 / 10
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(20, 20)[0] < 1.0                          # all right is no certainty at n = 20


def test_same_seed_same_rows_cheapest_first(make_ddpm, models):
    ddpm, judge, real = make_ddpm(T=20), tiny_judge(), real_of(os.path.join(models, "mnist"))

    def run(seed):
        rows = list(steps_points(ddpm, judge, real, guidance=2.0, per_class=2, seed=seed, steps=(4, 2), with_ddpm=True))
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    first, again, other = run(0), run(0), run(1)
    assert first == again
    assert [r["fd"] for r in first] != [r["fd"] for r in other]
    assert [(r["sampler"], r["steps"]) for r in first] == [("ddim", 2), ("dpmpp_2m", 2), ("ddim", 4), ("dpmpp_2m", 4),
                                                           ("ddpm", 20)]
    assert [r["calls"] for r in first] == [4, 4, 8, 8, 40]            # guided: two network calls per step
    for r in first:
        assert r["n"] == 20 and r["acc_lo"] <= r["accuracy"] <= r["acc_hi"] and 0 <= r["fd_lo"] <= r["fd_hi"]
        assert r["div_lo"] <= r["diversity"] <= r["div_hi"] and r["fd_real"] > 0
    rows = list(guidance_points(ddpm, judge, real, sampler="ddim", steps=3, per_class=1, seed=0, scales=(3.0, 1.0)))
    assert [(r["guidance"], r["calls"]) for r in rows] == [(1.0, 3), (3.0, 6)]
    assert rows[0]["diversity"] is None                               # one image per class has no pairs
    assert plot_steps(first, "tiny").width >= 1000 and plot_guidance(rows, "tiny").width >= 1000


def test_points_stream_before_the_run_ends(make_ddpm, models):
    ddpm, judge, real = make_ddpm(T=20), tiny_judge(), real_of(os.path.join(models, "mnist"))
    steps_taken = []
    points = guidance_points(ddpm, judge, real, sampler="ddim", steps=3, per_class=1, seed=0, scales=(1.0, 2.0),
                             callback=lambda step: steps_taken.append(step.i))
    first = next(points)
    assert first["guidance"] == 1.0 and steps_taken == [0, 1, 2]      # the second point is not sampled yet
    next(points)
    assert steps_taken == [0, 1, 2] * 2


def test_handler_streams_each_point_then_the_cache_answers_another_visitor(models, monkeypatch):
    outputs = []
    for image, text in curves.sweep_guidance("mnist", "ddim", 2, 0, 1, request=A):
        outputs.append(text)
        assert image.width >= 1000
    assert "measuring 5 points" in outputs[0] and "1 of 5 points" in outputs[1]
    assert "all 5 points" in outputs[-1] and "cached" in outputs[-1] and "n = 10 images per point" in outputs[-1]
    assert "Diversity needs two images" in outputs[-1] and "Wilson" in outputs[-1]

    def no_sampling(*args, **kwargs):
        raise AssertionError("the cache should have answered")
    monkeypatch.setattr(curves, "guidance_points", no_sampling)
    (image, text), = drain(curves.sweep_guidance("mnist", "ddim", 2, 0, 1, request=B))
    assert "from the cache" in text and text.count("| DDIM | 2 |") == 5
    with pytest.raises(AssertionError, match="cache"):               # another seed is another curve
        drain(curves.sweep_guidance("mnist", "ddim", 2, 1, 1, request=B))


def test_stop_keeps_the_points_made_and_caches_nothing(models, monkeypatch):
    run = curves.sweep_guidance("mnist", "ddim", 3, 0, 1, request=A)
    next(run)
    _, text = next(run)
    assert "1 of 5 points" in text
    curves.sweep_stop(request=A)
    outputs = [text for _, text in run]
    assert len(outputs) == 1 and "**Stopped** after 1 of 5 points (Stop was pressed)" in outputs[0]
    assert outputs[0].count("| DDIM | 3 |") == 1
    monkeypatch.setattr(curves, "guidance_points", lambda *a, **k: pytest.fail("sampled again"))
    with pytest.raises(pytest.fail.Exception):                       # nothing was cached
        drain(curves.sweep_guidance("mnist", "ddim", 3, 0, 1, request=B))


def test_a_visitors_own_model_is_never_cached_for_others(models):
    reg = registry.registry()
    reg.add_session_model("sweep-own", "mnist", reg.model("mnist"), "mnist")     # a fine-tune named like a bundled one
    assert curves._cache_key(reg, "mnist", "sweep-own", "steps", (2.0,), 1, 0) is None
    assert curves._cache_key(reg, "mnist", "sweep-a", "steps", (2.0,), 1, 0) is not None
    assert curves.bundled_sweep(reg, "mnist", "sweep-own", "steps") is None


def test_bad_inputs_name_the_value(models):
    cases = [(curves.sweep_steps, ("mnist", 2.0, 0, 0), r"images per class = 0 .*\[1, 10\]"),
             (curves.sweep_steps, ("mnist", 11.0, 0, 1), r"guidance scale = 11.0 .*\[0.0, 10.0\]"),
             (curves.sweep_guidance, ("mnist", "ddim", 0, 0, 1), r"steps = 0 .*\[1, 1000\]"),
             (curves.sweep_guidance, ("mnist", "ddim", 101, 0, 1), r"steps = 101 .*\[1, 100\]"),
             (curves.sweep_guidance, ("mnist", "euler", 10, 0, 1), r"sampler 'euler' is unknown"),
             (curves.sweep_guidance, ("mnist", "ddpm", 10, 0, 1), r"'ddpm' takes all T = 100 steps"),
             (curves.sweep_steps, ("fashion_mnist", 2.0, 0, 1), r"judge classifier of model 'fashion_mnist'"),
             (curves.sweep_steps, ("cifar10", 2.0, 0, 1), r"model 'cifar10' is not available")]
    for handler, args, message in cases:
        with pytest.raises(gr.Error, match=message):
            next(handler(*args, request=A))


def test_cli_sweep_writes_the_file_that_the_tab_shows(tmp_path, capsys, monkeypatch):
    root = make_models_dir(tmp_path / "models", per_class=3)
    folder = os.path.join(root, "mnist")
    tiny_judge().save(folder)
    main(["evaluate", "--model", folder, "--sweep", "--quick"])
    assert "| DPM-Solver++ | 10 | 2 |" in capsys.readouterr().out
    assert not os.path.exists(os.path.join(folder, SWEEP_JSON))        # a --quick try writes nothing of the model
    main(["evaluate", "--model", folder, "--sweep", "--quick", "--out", str(tmp_path / "try")])
    quick = load_sweep(str(tmp_path / "try" / SWEEP_JSON))
    assert quick["steps"]["n"] == 10 and len(quick["steps"]["rows"]) == 4 and len(quick["guidance"]["rows"]) == 2
    assert (tmp_path / "try" / "sweep_steps.png").stat().st_size > 0

    main(["evaluate", "--model", folder, "--sweep", "--per-class", "1"])         # beside the model, DDPM included
    data = load_sweep(os.path.join(folder, SWEEP_JSON))
    ddpm_row = [r for r in data["steps"]["rows"] if r["sampler"] == "ddpm"]
    assert len(ddpm_row) == 1 and ddpm_row[0]["steps"] == 100 and ddpm_row[0]["calls"] == 200
    assert data["guidance"]["sampler"] == "dpmpp_2m" and data["guidance"]["steps"] == 10     # no quality_cost table
    assert [r["guidance"] for r in data["guidance"]["rows"]] == [1.0, 1.5, 2.0, 3.0, 5.0]
    assert "--sweep --per-class 1" in data["command"] and os.path.isfile(os.path.join(folder, "sweep_guidance.png"))

    data["steps"]["n"] = 200                                          # as if measured at a larger n
    save_sweep(os.path.join(folder, SWEEP_JSON), data)
    monkeypatch.setattr(registry, "_REGISTRY", registry.Registry(root, use_judges=True))   # restored after the test
    monkeypatch.setattr(curves, "steps_points", lambda *a, **k: pytest.fail("a bundled curve is not sampled"))
    (image, text), = drain(curves.sweep_steps("mnist", 2.0, 0, 1, request=A))        # its own per class and seed
    assert "Bundled measurement" in text and "n = 200 per point" in text and "evaluate --sweep" in text
    (image, text), = drain(curves.sweep_guidance("mnist", "dpmpp_2m", 10, 0, 1, request=A))
    assert "Bundled measurement" in text and text.count("| DPM-Solver++ | 10 |") == 5
    with pytest.raises(pytest.fail.Exception):                       # another guidance is measured live
        drain(curves.sweep_steps("mnist", 3.0, 0, 1, request=A))
    with pytest.raises(pytest.fail.Exception):                       # ... and so are other n or seeds
        drain(curves.sweep_steps("mnist", 2.0, 0, 3, request=A))
    with pytest.raises(pytest.fail.Exception):
        drain(curves.sweep_steps("mnist", 2.0, 1, 1, request=A))
    _, steps, _, guidance = curves.curves_opening("mnist", request=A)   # what the section opens on: the bundled curves
    assert "Bundled measurement" in steps and "Bundled measurement" in guidance
    with open(os.path.join(folder, SWEEP_JSON), "w") as f:
        f.write('{"steps": {"guidance": 2.0}}')
    with pytest.raises(gr.Error, match=r"sweep.json of model 'mnist' cannot be used: mnist/sweep.json: .*lacks"):
        drain(curves.sweep_steps("mnist", 2.0, 0, 1, request=A))


def test_a_ddpm_point_whose_band_edge_is_a_rounding_error_past_its_value_still_plots():
    """Accuracy 100% with a Wilson upper edge of 1 - 1e-12 once crashed the bundled sweep's plot (negative yerr)."""
    row = dict(sampler="ddpm", steps=1000, guidance=2.0, n=100, seed=0, calls=2000, accuracy=1.0, acc_lo=0.96,
               acc_hi=1.0 - 1e-12, fd=60.0, fd_lo=40.0, fd_hi=80.0, diversity=17.0, div_lo=16.0, div_hi=18.0,
               seconds=1.0, fd_real=50.0)
    assert plot_steps([row], "tiny").width >= 1000


def test_load_sweep_names_a_row_without_its_keys_and_per_class_needs_sweep(tmp_path):
    row = dict(sampler="ddim", steps=10, guidance=2.0, n=20, accuracy=1.0, acc_lo=0.8, acc_hi=1.0, fd=5.0, fd_lo=4.0,
               fd_hi=6.0, diversity=1.0, div_lo=0.9, div_hi=1.1, calls=20, seconds=0.5)
    part = dict(guidance=2.0, per_class=2, n=20, seed=0, rows=[row])
    path = str(tmp_path / SWEEP_JSON)
    save_sweep(path, {"steps": part})
    assert load_sweep(path)["steps"]["rows"] == [row]
    save_sweep(path, {"steps": dict(part, rows=[row, {k: v for k, v in row.items() if k != "fd_hi"}])})
    with pytest.raises(ValueError, match=r"row 1 of the 'steps' part lacks \['fd_hi'\]"):
        load_sweep(path)
    save_sweep(path, {"steps": dict(part, rows="none")})
    with pytest.raises(ValueError, match="rows must be a list, got str"):
        load_sweep(path)
    with pytest.raises(ValueError, match="--per-class 5 belongs to --sweep"):   # `run` prints it as one line
        main(["evaluate", "--model", "mnist", "--per-class", "5"])
