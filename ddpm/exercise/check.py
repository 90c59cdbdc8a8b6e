"""The two ways to check: run a student's function (check_function), or judge uploaded outputs (check_outputs)."""
import numpy as np

from . import challenge, forward, reverse, training
from .report import Report
from .upload import EXPECTED, UploadError, read_upload, validate

ITEMS = ("sample_xt", "sample", "train", "train_classconditional")
SIGNATURES = {
    "sample_xt": "sample_xt(x0, t, epsilon, alphaBars) -> x_t",
    "sample": "sample(ddpm, n_samples, classes=None) -> x",
    "train": "train(ddpm, loader, n_epochs, optim, device)",
    "train_classconditional": "train_classconditional(ddpm, loader, n_epochs, optim, device)",
}


def check_function(item, fn, *, t_base=0, clip_x0=None):
    """Run the student's function for `item` (see SIGNATURES) on its challenge and return a Report.

    t_base: 0 if fn indexes t = 0..T-1 (as ddpm), 1 if it takes the paper's t = 1..T (then the network, the noise
    rule and sample_xt's t are the paper's, and the schedule's arrays are read at t - 1).
    clip_x0 (sample only): whether fn clips x0_hat to [-1, 1]; None: either. The report states both conventions.
    A function that raises NotImplementedError, or returns None without doing anything, is "not implemented yet".
    """
    if item not in ITEMS:
        raise ValueError(f"unknown item {item!r}; choose one of {list(ITEMS)}")
    if not callable(fn):
        raise ValueError(f"fn must be the function to check, {SIGNATURES[item]}; got {type(fn).__name__}")
    if t_base not in (0, 1) or isinstance(t_base, bool):
        raise ValueError(f"t_base must be 0 (t = 0..T-1, as ddpm) or 1 (the paper's t = 1..T), got {t_base!r}")
    if clip_x0 not in (None, True, False):
        raise ValueError(f"clip_x0 must be True, False or None (either), got {clip_x0!r}")
    if clip_x0 is not None and item != "sample":
        raise ValueError(f"clip_x0 is a convention of sample (Algorithm 2); {item} has no x0_hat")
    if item == "sample_xt":
        return forward.check(fn, t_base=t_base)
    if item == "sample":
        return reverse.check(fn, t_base=t_base, clip_x0=clip_x0)
    return training.check(fn, item, t_base=t_base)


def check_outputs(item, uploaded):
    """Judge uploaded outputs for `item` ("sample_xt" or "sample"): bytes or a path of an .npz or .safetensors file
    holding the arrays the challenge file names (challenge_files(item)). No uploaded code runs; a pickle, an object
    array, a file over 5 MB, wrong names or shapes, NaN or inf give a Report whose verdict is "refused"."""
    if item not in challenge.UPLOAD_ITEMS:
        raise ValueError(f"no upload check for {item!r}: the items checked from outputs are {list(challenge.UPLOAD_ITEMS)}; "
                         "train and train_classconditional are checked by running them (check_function)")
    try:
        arrays = validate(item, read_upload(uploaded))
    except UploadError as err:
        return Report(item, False, f"Upload refused: {err}.", refused=True)
    if item == "sample_xt":
        ps = forward.parts()
        for k, p in enumerate(ps):
            rows = slice(8 * (k % 2), 8 * (k % 2) + 8)
            p.out = arrays[f"x_t_{p.T}"][rows]
        return forward.judge(ps)
    return reverse.judge_upload(arrays)


def expected_arrays(item):
    """{name: shape} of an upload for `item`, optional ones marked with '?', for the app's help text."""
    return {name + ("" if required else "?"): shape for name, (shape, required) in EXPECTED[item].items()}


def solution_outputs(item):
    """The right outputs of the upload challenge for `item`, as an upload would hold them (a test and the app's
    example use them)."""
    if item == "sample_xt":
        ps = forward.parts()
        return {f"x_t_{T}": np.concatenate([forward.CORRECT(p.x0, p.t, p.eps, p.ab) for p in ps if p.T == T]).astype(np.float32)
                for T in challenge.SCHEDULES}
    steps = reverse.upload_steps({f"x_prev_{T}": np.zeros((16, 1, 8, 8)) for T in challenge.SCHEDULES})
    out = {f"x_prev_{s.T}": reverse.reference_step(s).reshape(16, 1, 8, 8).astype(np.float32) for s in steps}
    out["y"] = np.repeat(np.array(challenge.CLASSES), challenge.N_PER_CLASS)
    return out
