"""benchmarks/app_targets.py, outside the package: its training "before" runs the earlier attention and layout
and leaves the model alone, and its training row runs in a fresh process. (The app timings themselves are
printed by `python benchmarks/app_targets.py`, never asserted.)"""
import os
import sys

import pytest
import torch

import ddpm.unet as unet
from ddpm.tools.bench import random_model

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import app_targets  # noqa: E402


def test_training_in_a_fresh_process_reports_its_step_time_and_page_faults():
    seconds, faults = app_targets.train_in_child("mnist", 2, 1)
    assert 0 < seconds < 60 and faults >= 0


@pytest.mark.parametrize("before", [True, False])
def test_training_before_runs_the_earlier_attention_and_layout_and_leaves_the_model_alone(monkeypatch, before):
    ddpm = random_model("patch2")
    calls, fused = [], torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(unet.F, "scaled_dot_product_attention", lambda *a: calls.append(1) or fused(*a))
    layouts = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last))
        if isinstance(m, unet.ResBlock) else None)
    try:
        assert app_targets.train_step_seconds(ddpm, 2, 1, warmup=0, before=before) > 0
    finally:
        hook.remove()
    assert (len(calls) > 0) == before and layouts and all(layout != before for layout in layouts)
    assert unet.cpu_layout.__name__ == "cpu_layout" and unet.WRITTEN_OUT_MAX_POSITIONS == 64
    assert not any("forward" in vars(m) for m in ddpm.net.modules())


def test_the_app_default_is_the_quality_per_cost_rule_or_the_grid_tabs_own(tmp_path):
    assert app_targets.app_default("mnist") == app_targets.default_for(app_targets.bundled_folder("mnist"), 2.0)
    assert app_targets.app_default(str(tmp_path)) == app_targets.GRID_OWN
