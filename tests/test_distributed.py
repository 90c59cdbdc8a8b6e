"""Training on several processes (torchrun, DistributedDataParallel on gloo), gradient accumulation, bf16 and
an exact resume: each run is compared with the plain single-process run it must equal."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import _write_idx
from ddpm.distributed import check_replicas
from ddpm.tools.cli import main

LR = 2e-3
N_IMAGES = 40            # 5 steps of a global batch of 8 per epoch: 7 steps cross an epoch boundary
ARGS = ["--dataset", "mnist", "--base-channels", "8", "--channel-mults", "1,2", "--T", "20", "--warmup", "2",
        "--lr", str(LR), "--device", "cpu", "--no-progress", "--log-every", "1", "--batch-size", "8"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """MNIST's raw layout with 40 random training images (and 4 test images) of 10 classes."""
    root = tmp_path_factory.mktemp("data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", N_IMAGES), ("t10k", 4)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return root


def _train(root, out, *extra):
    main(["train", *ARGS, "--data", str(root), "--out", str(out), *extra])
    return _read(out)


def _read(out):
    meta = json.load(open(out / "training_state.json"))
    raw = {k: v for k, v in load_file(out / "training_state.safetensors").items() if k.startswith("model.")}
    return meta, raw, load_file(out / "model.safetensors")


def _losses(meta):
    return np.array([loss for _, loss in meta["history"]])


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _diffs(a, b):
    assert a.keys() == b.keys()
    return torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a])



def assert_same_training(a, b):
    """Equal up to float summation order. Adam's first updates of a weight whose gradient is ~0 are ~lr * sign(g),
    so rounding can move a few such weights by up to lr (measured: 0.9% of 88,476 weights by more than 1e-4, the
    largest by 5.3e-4); the bulk moves by ~1e-8. A rank training alone (batch 4) moves the median weight by 4e-3,
    96% of them by more than 1e-4, the largest by 2e-2."""
    d = _diffs(a, b)
    assert float(d.median()) < 1e-6 and float((d > 1e-4).float().mean()) < 0.05 and float(d.max()) < LR, \
        (float(d.median()), float((d > 1e-4).float().mean()), float(d.max()))


@pytest.fixture(scope="module")
def single(data_root, tmp_path_factory):
    """The reference: one process, global batch 8, 7 optimizer steps."""
    return _train(data_root, tmp_path_factory.mktemp("single") / "run", "--steps", "7")


def _torchrun(root, out, *extra):
    """`ddpm train` on two processes; the run, after checking it succeeded and that no rank warned about DDP's
    gradient layout ("Grad strides do not match bucket view strides")."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "ddpm", "train", *ARGS, "--data", str(root), "--out", str(out), *extra],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Grad strides" not in run.stdout + run.stderr, run.stderr[-3000:]
    return run


def test_torchrun_two_processes_equal_one_process_with_the_same_global_batch(data_root, single, tmp_path):
    out = tmp_path / "ddp"
    run = _torchrun(data_root, out, "--steps", "7")
    # rank 0 alone logs and saves: one checkpoint, one copy of each line
    assert run.stdout.count("saved ") == 1 and run.stdout.count("batch 8 = 2 x 1 x 4") == 1, run.stdout
    assert "the weights are identical on all 2 processes" in run.stdout          # check_replicas, on every rank
    assert sorted(os.listdir(out)) == ["README.md", "config.json", "model.safetensors", "training_state.json",
                                       "training_state.safetensors"]
    meta, raw, ema = _read(out)
    ref_meta, ref_raw, ref_ema = single
    assert meta["step"] == 7 and meta["processes"] == 2 and len(meta["history"]) == 7
    # the same images and the same t, eps and label dropout per step: equal up to float summation order
    np.testing.assert_allclose(_losses(meta), _losses(ref_meta), rtol=1e-4)
    assert_same_training(raw, ref_raw)
    assert_same_training(ema, ref_ema)
    assert _losses(meta)[-1] < _losses(meta)[0]                                 # and it trained


def test_grad_accum_equals_the_whole_batch_at_once(data_root, single, tmp_path):
    meta, raw, _ = _train(data_root, tmp_path / "accum", "--steps", "7", "--grad-accum", "2")
    ref_meta, ref_raw, _ = single
    np.testing.assert_allclose(_losses(meta), _losses(ref_meta), rtol=1e-4)
    assert_same_training(raw, ref_raw)


def test_alone_a_rank_would_train_another_model(data_root, single, tmp_path):
    """What the tolerance above is measured against: batch 4 (half the global batch, no averaging)."""
    _, raw, _ = _train(data_root, tmp_path / "half", "--steps", "7", "--batch-size", "4")
    with pytest.raises(AssertionError):
        assert_same_training(raw, single[1])
    d = _diffs(raw, single[1])
    assert float(d.median()) > 1e-4 and float((d > 1e-4).float().mean()) > 0.5


def test_resume_continues_exactly_where_the_run_stopped(data_root, single, tmp_path):
    """3 steps, stop, resume to 7: the same weights as 7 steps at once (data order, t, eps, dropout restored)."""
    out = tmp_path / "resumed"
    _train(data_root, out, "--steps", "3")
    meta, raw, ema = _train(data_root, out, "--steps", "7", "--resume")
    ref_meta, ref_raw, ref_ema = single
    np.testing.assert_allclose(_losses(meta), _losses(ref_meta), rtol=1e-5)
    assert _max_diff(raw, ref_raw) < 1e-6 and _max_diff(ema, ref_ema) < 1e-6


def test_a_resume_without_the_random_state_would_differ(data_root, single, tmp_path):
    """The check above can fail: dropping the saved generator state from the checkpoint changes the run."""
    out = tmp_path / "resumed"
    _train(data_root, out, "--steps", "3")
    path = out / "training_state.safetensors"
    from safetensors.torch import save_file
    save_file({k: v for k, v in load_file(path).items() if not k.startswith("rng.")}, path)
    _, raw, _ = _train(data_root, out, "--steps", "7", "--resume")
    assert _max_diff(raw, single[1]) > 1e-4


def test_bf16_changes_the_numbers_a_little(data_root, single, tmp_path):
    meta, raw, _ = _train(data_root, tmp_path / "bf16", "--steps", "7", "--precision", "bf16")
    ref = _losses(single[0])
    losses = _losses(meta)
    assert np.all(np.isfinite(losses)) and all(v.dtype == torch.float32 for v in raw.values())
    assert not np.allclose(losses, ref, rtol=1e-5)                        # autocast did run in bfloat16 ...
    np.testing.assert_allclose(losses, ref, rtol=0.05)                    # ... and trains the same model


@pytest.mark.parametrize("extra, message", [(["--batch-size", "6", "--grad-accum", "4"], "multiple of the 1 process"),
                                            (["--grad-accum", "0"], "--grad-accum 0"),
                                            (["--log-every", "0"], "--log-every 0")])
def test_bad_split_of_the_batch_names_the_values(data_root, tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        main(["train", *ARGS, "--data", str(data_root), "--out", str(tmp_path / "x"), "--steps", "1", *extra])


def _drifted(rank, path, results):
    torch.distributed.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    layer = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(layer.weight, 1.0 + rank)        # rank 1 holds other weights
    try:
        check_replicas(layer)
        results.put((rank, "agree"))
    except RuntimeError as err:
        results.put((rank, str(err)))
    finally:
        torch.distributed.destroy_process_group()


def test_check_replicas_catches_ranks_that_drifted_apart(tmp_path):
    ctx = torch.multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_drifted, args=(r, tmp_path / "store", results)) for r in range(2)]
    for p in procs:
        p.start()
    found = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert all("rank(s) [1] differ from rank 0" in found[r] for r in range(2)), found


def test_torchrun_bf16_warns_of_no_gradient_layout(data_root, tmp_path):
    """bf16 autocast hands DDP the 1x1 convolutions' weight gradients in channels_last strides; training gives them
    their parameters' strides (ddpm.training._grads_in_param_layout), so no rank prints DDP's layout warning."""
    _torchrun(data_root, tmp_path / "bf16", "--steps", "2", "--precision", "bf16")
