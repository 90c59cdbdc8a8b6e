"""The benchmark's peer is a fair one: diffusers' scheduler loop around our network gives the images our
loop gives. (The benchmark's timings themselves are printed by `python -m ddpm bench`, never asserted.)"""
import os
import re
import time

import pytest
import torch

import ddpm.tools.bench as bench
import ddpm.unet as unet
from ddpm.tools.bench import (COMPILED, ablations, compiled_forward, diffusers_loop, gemm_ways, lockstep, main, matmul_gflops,
                              ours, playground_rows, random_model, undone)

pytest.importorskip("diffusers")


@pytest.mark.parametrize("sampler, steps, classes, guidance, limit", [
    ("ddim", 5, [0, 3], 3.0, None),
    ("ddim", 5, None, 1.0, None),
    ("dpmpp_2m", 5, [0, 3], 2.0, None),
    ("ddpm", None, [1, 2], 2.0, 3),
])
def test_diffusers_peer_loop_gives_our_images(make_ddpm, sampler, steps, classes, guidance, limit):
    ddpm = make_ddpm(T=20)
    a = ours(ddpm, 2, classes, sampler, steps, guidance, limit=limit)
    b = diffusers_loop(ddpm, 2, classes, sampler, steps, guidance, limit=limit)
    if limit is None:
        b = b.clamp(-1, 1)        # `sample` returns images clipped to [-1, 1]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_a_sampler_without_a_diffusers_peer_is_named():
    with pytest.raises(ValueError, match=r"no diffusers peer for sampler 'plain'; peers: \['ddpm', 'ddim', 'dpmpp_2m'\]"):
        bench.diffusers_scheduler("plain", random_model().schedule, 5)


@pytest.mark.parametrize("change", ["channels_last", "in_place"])
def test_ablation_undoes_one_change_keeps_the_numbers_and_restores_it(change):
    """`bench --ablations` times the network without each kept change: that network must compute the same
    function, must really lack the change while timed, and must get it back afterwards."""
    ddpm = random_model("patch2")
    x, t, y = torch.randn(3, *ddpm.sample_shape), torch.tensor([10, 500, 990]), torch.tensor([0, 4, 10])
    first = ddpm.net.down[0][0]
    layouts = []
    hook = first.register_forward_hook(
        lambda m, i, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last)))
    with torch.inference_mode():
        ref = ddpm.net(x, t, y)
        with undone(ddpm.net, change):
            out = ddpm.net(x, t, y)
            replaced = "forward" in vars(first)
        again = ddpm.net(x, t, y)
    hook.remove()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(again, ref)
    if change == "channels_last":
        assert layouts == [True, False, True]
    else:
        assert layouts == [True, True, True] and replaced and "forward" not in vars(first)


def test_attention_ablation_runs_the_fused_kernel_only_while_timed(monkeypatch):
    ddpm = random_model("patch2")
    x, t, y = torch.randn(3, *ddpm.sample_shape), torch.tensor([10, 500, 990]), torch.tensor([0, 4, 10])
    calls, fused = [], torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(unet.F, "scaled_dot_product_attention", lambda *a: calls.append(1) or fused(*a))
    with torch.inference_mode():
        ref = ddpm.net(x, t, y)
        assert calls == []
        with undone(ddpm.net, "attention"):
            out = ddpm.net(x, t, y)
        assert len(calls) == sum(isinstance(m, unet.Attention) for m in ddpm.net.modules()) > 0
        again = ddpm.net(x, t, y)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, ref) and len(calls) > 0 and unet.WRITTEN_OUT_MAX_POSITIONS == 64


@pytest.mark.parametrize("change", ["channels_last", "in_place", "attention"])
def test_ablation_puts_everything_back_even_when_the_timed_call_fails(change):
    """The changes are module-wide (ddpm.unet's cpu_layout and WRITTEN_OUT_MAX_POSITIONS) or on the blocks: all
    of it comes back, also when the call inside raises."""
    net = random_model("patch2").net
    layout, positions = unet.cpu_layout, unet.WRITTEN_OUT_MAX_POSITIONS
    with pytest.raises(RuntimeError, match="inside"):
        with undone(net, change):
            raise RuntimeError("inside")
    assert unet.cpu_layout is layout and unet.WRITTEN_OUT_MAX_POSITIONS == positions
    assert not any("forward" in vars(m) for m in net.modules())


def test_ablation_refuses_an_unknown_change():
    with pytest.raises(ValueError, match="'fusion'.*channels_last"):
        with undone(random_model("patch2").net, "fusion"):
            pass


def test_lockstep_times_both_loops_to_the_end_or_the_limit():
    """Each generator is advanced to its end (or `limit` steps), and only time spent inside it is counted."""
    advanced = {"a": 0, "b": 0}

    def steps(name, n, seconds):
        for _ in range(n):
            time.sleep(seconds)
            advanced[name] += 1
            yield advanced[name]
    a, b = lockstep(steps("a", 4, 0.01), steps("b", 4, 0.002))
    assert advanced == {"a": 4, "b": 4}
    assert a >= 0.04 and 0.008 <= b < a
    advanced.update(a=0, b=0)
    lockstep(steps("a", 4, 0), steps("b", 4, 0), limit=3)
    assert advanced == {"a": 3, "b": 3}


def fake_compile(monkeypatch, runs=1):
    """Stand in for torch.compile: the "compiled" network sleeps 1.2 s on its first call per batch size (like
    a compile), then runs the eager network `runs` times. Returns (torch.compile's keyword arguments, the
    batch sizes it "compiled" for)."""
    options, compiled_at = [], []

    class FakeCompiled(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.inner = net

        def forward(self, x, t, y):
            if len(x) not in compiled_at:
                compiled_at.append(len(x))
                time.sleep(1.2)
            for _ in range(runs - 1):
                self.inner(x, t, y)
            return self.inner(x, t, y)
    monkeypatch.setattr(torch, "compile", lambda net, **kw: options.append(kw) or FakeCompiled(net))
    return options, compiled_at


def test_ablations_time_every_change_per_batch_and_note_the_compile_cost(monkeypatch):
    """Each change gets one row per batch size; the row of ddpm.compiled's network notes its first call. A
    stand-in for torch.compile (sleeping 1.2 s on the first call per batch size, like a compile) keeps the
    test fast."""
    options, compiled_at = fake_compile(monkeypatch)
    ddpm = random_model("patch2")
    rows = ablations(ddpm, batches=(2, 3), repeats=4)
    changes = ("NCHW", "out-of-place", "fused", "FULL_RES", "ddpm.compiled")
    assert [(r[0].split()[0], r[1]) for r in rows] == [(c, b) for b in (2, 3) for c in changes]
    assert all(r[2] > 0 and r[3] > 0 for r in rows)
    assert options == [{"options": {"freezing": True}}]          # the product's compile, not a plain one
    notes = {r[1]: r[4] for r in rows if r[0] == COMPILED}
    assert notes == {2: "first call at this batch size: 1 s", 3: "first call at this batch size: 1 s"}
    assert all(r[4] == "" for r in rows if r[0] != COMPILED)
    assert unet.cpu_layout.__name__ == "cpu_layout" and compiled_at == [2, 3]
    assert len(ablations(ddpm, batches=(2,), repeats=4, compile=False)) == 4


def test_compiled_forward_times_each_batch_against_eager_and_the_matmul(monkeypatch):
    """`bench --compile` rows: per batch size, the first call (which compiles), then the compiled network, the
    eager one and the matmul in alternating runs, through ddpm.compiled with inductor's freezing. A stand-in
    for torch.compile (sleeping on the first call per batch size, then running the eager net three times, so
    that it is measurably slower) keeps the test fast."""
    options, calls = fake_compile(monkeypatch, runs=3)
    ddpm = random_model("patch2")
    rows = compiled_forward(ddpm, (2, 3), lambda b: 3 * b)
    assert options == [{"options": {"freezing": True}}] and calls == [2, 3]
    assert [r[0] for r in rows] == [2, 3]
    for _, first, t_fast, t_eager, mm in rows:
        assert first >= 1.2 and t_fast < 2.0 and t_fast / t_eager > 1.5 and mm > 1   # ~3 when the machine is calm
    assert type(ddpm.net).__name__ == "UNet2D"         # the model given is left as it was


def test_playground_rows_time_the_default_run_sdedit_and_interpolation(monkeypatch):
    from ddpm import points
    monkeypatch.setitem(points.RECIPE, "seconds", 1)                     # the figure, not the full 10 s
    rows = playground_rows()
    assert [name.split(":")[0] for name, _, _ in rows] == ["2-D playground", "2-D playground", "SDEdit strip", "interpolation"]
    assert 1.0 <= rows[0][1] < 3.0 and all(seconds > 0 for _, seconds, _ in rows)
    assert "sliced Wasserstein to the data" in rows[1][2]


def test_the_matmul_reference_is_one_product_two_ways_and_the_faster_rate(monkeypatch):
    """    hardware reference times the same n x n product through MKL (torch.mm) and oneDNN (a 1 x 1
    convolution): both ways must compute a @ b, and the rate reported is the faster library's."""
    torch.manual_seed(0)
    ways = gemm_ways(64)
    mm, conv = ways["MKL torch.mm"](), ways["oneDNN 1x1 conv"]()
    assert conv.shape == (1, 64, 32, 2)
    torch.testing.assert_close(conv.reshape(64, 64), mm, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="n = 48; give a multiple of 32"):
        gemm_ways(48)
    # a slow and a fast stand-in: the fast one is picked and named, whichever order they come in
    for order in (("slow", "fast"), ("fast", "slow")):
        stand_ins = {"slow": lambda: time.sleep(0.01), "fast": lambda: None}
        ways = {k: stand_ins[k] for k in order}
        monkeypatch.setattr(bench, "gemm_ways", lambda n, ways=ways: ways)
        rate, name = matmul_gflops(64, repeats=3)
        assert name == "fast" and rate > 2 * 64 ** 3 / 0.01 / 1e9


def test_out_writes_a_page_with_what_was_measured_the_machine_and_the_table(monkeypatch, tmp_path, capsys):
    """`bench --out docs/speed.md`: the figures on the page are the ones the command printed, with the machine they
    were measured on and the command that wrote them; no date, so a page changes only when its figures do."""
    monkeypatch.setattr(bench, "playground_rows", lambda: [("2-D playground: a stand-in row", 1.5, "a note")])
    out = tmp_path / "docs" / "speed.md"
    main(["--playground", "--out", str(out)])
    printed, text = capsys.readouterr().out, out.read_text()
    assert text.startswith("# The playground") and printed.strip() in text
    assert "| 2-D playground: a stand-in row | 1.50 s | a note |" in text
    assert f"torch {torch.__version__}" in text and f"{os.cpu_count()} logical CPUs" in text
    assert f"`python -m ddpm bench --playground --out {out}`" in text
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text)
