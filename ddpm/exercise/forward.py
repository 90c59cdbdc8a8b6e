"""Check of sample_xt, Eq. (4): x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, on the challenge's fixed x0,
t and epsilon (challenge.py). Eq. (4) and every catalogued mistake predict the output exactly, so a mistake is named
when its prediction matches the student's x_t to float32 precision on every row. Own noise instead of the given epsilon
is judged by a test: the noise in the student's x_t has variance 1 but no correlation with epsilon.

Each schedule's 16 rows go in two calls of 8 images, so that a batch of t's [8] lines up with the width axis of an 8x8
image (the broadcasting mistake then gives wrong numbers instead of an error).
"""
from dataclasses import dataclass

import numpy as np
import torch

from . import challenge
from .report import named, not_implemented, passed, where, wrong

ITEM = "sample_xt"
_RTOL = _ATOL = 1e-4                  # float32 arithmetic is good to ~1e-6 here
_Z = 6.0                              # two-sided 6-sigma tests: false alarm about 2e-9 each


def _abar(ab, t):
    return ab[t].reshape(-1, 1, 1, 1)


def _affine(signal, noise):
    """A hypothesis x_t = signal(a) x0 + noise(a) eps, a = alpha_bar_t."""
    def predict(x0, t, eps, ab):
        a = _abar(ab, t)
        return signal(a) * x0 + noise(a) * eps
    predict.coefs = (signal, noise)
    return predict


def _shifted(shift):
    def predict(x0, t, eps, ab):
        if int(t.max()) + shift >= len(ab):
            raise IndexError(f"index {int(t.max()) + shift} is out of bounds for size {len(ab)}")
        a = _abar(ab, t + shift)                              # t - 1 = -1 wraps to the last step, as Python does
        return np.sqrt(a) * x0 + np.sqrt(1 - a) * eps
    predict.shift = shift
    return predict


def _broadcast(x0, t, eps, ab):
    if len(t) != x0.shape[-1]:
        raise ValueError(f"a batch of {len(t)} t's does not broadcast against width {x0.shape[-1]}")
    a = ab[t]                                                                      # [B] against [B, C, H, W]
    return np.sqrt(a) * x0 + np.sqrt(1 - a) * eps


CORRECT = _affine(np.sqrt, lambda a: np.sqrt(1 - a))
HYPOTHESES = {
    "xt_no_sqrt": _affine(lambda a: a, lambda a: 1 - a),
    "xt_no_sqrt_signal": _affine(lambda a: a, lambda a: np.sqrt(1 - a)),
    "xt_no_sqrt_noise": _affine(np.sqrt, lambda a: 1 - a),
    "xt_swapped": _affine(lambda a: np.sqrt(1 - a), np.sqrt),
    "xt_unscaled_x0": _affine(lambda a: np.ones_like(a), lambda a: np.sqrt(1 - a)),
    "xt_t_minus_one": _shifted(-1),
    "xt_t_plus_one": _shifted(+1),
    "xt_broadcast": _broadcast,
}


@dataclass
class Part:
    """One call of sample_xt: 8 rows of one schedule, and what came back (an array, or the error raised)."""
    T: int
    t: np.ndarray            # 0-based
    x0: np.ndarray
    eps: np.ndarray
    ab: np.ndarray
    out: np.ndarray = None
    error: BaseException = None


def parts():
    """The challenge as calls: for T = 1000 and T = 100, two calls of 8 rows each."""
    data = {k: v.double().numpy() for k, v in challenge.load("sample_xt").items()}
    return [Part(T, data[f"t_{T}"][s].astype(np.int64), data[f"x0_{T}"][s], data[f"epsilon_{T}"][s], data[f"alphaBars_{T}"])
            for T in challenge.SCHEDULES for s in (slice(0, 8), slice(8, 16))]


def as_array(out):
    """A student's output (tensor, array, list) as float64 NumPy, or None for None."""
    if out is None:
        return None
    if torch.is_tensor(out):
        out = out.detach().cpu().double().numpy()
    return np.asarray(out, dtype=np.float64)


def _predict(h, part):
    try:
        return h(part.x0, part.t, part.eps, part.ab)
    except (IndexError, ValueError):
        return None


def _fits(h, part):
    """Does hypothesis h explain this part: the same numbers, or an index error where h runs past the schedule."""
    pred = _predict(h, part)
    if part.error is not None:
        return pred is None and isinstance(part.error, IndexError) and getattr(h, "shift", 0) == 1
    return pred is not None and np.allclose(part.out, pred, rtol=_RTOL, atol=_ATOL)


def _coefs(h, a):
    if hasattr(h, "coefs"):
        return tuple(float(f(np.float64(a))) for f in h.coefs)
    return None


def _figure(h_id, ps, t_base):
    """The concrete evidence for hypothesis h_id: coefficients at a telling step, or the error raised."""
    h = HYPOTHESES[h_id]
    done = [p for p in ps if p.out is not None]
    if h_id == "xt_t_minus_one":
        p = next(p for p in done if 0 in p.t)
        a_you, a = p.ab[-1], p.ab[0]
        return (f"At t = {t_base} (T = {p.T}) your x_t = {np.sqrt(a_you):.3g} x0 + {np.sqrt(1 - a_you):.3g} epsilon "
                f"(alphaBars[-1], the last step): pure noise; Eq. (4) gives {np.sqrt(a):.3g} x0 + {np.sqrt(1 - a):.3g} epsilon.")
    if h_id == "xt_t_plus_one":
        failed = next((p for p in ps if p.error is not None), None)
        what = f"sample_xt raised {type(failed.error).__name__}: {failed.error}" if failed else ""
        if failed is None:
            return "Every x_t reads alpha_bar one step late."
        return f"At t = {failed.T - 1 + t_base} (T = {failed.T}) {what}."
    if h_id == "xt_broadcast":
        p = done[0]
        return (f"With t = {(p.t + t_base).tolist()} for a batch of {len(p.t)} images, column w of every image used "
                f"t[w]: image 0 should have used t = {p.t[0] + t_base} everywhere.")
    p = next((p for p in done if p.T == 1000 and 500 in p.t), done[0])
    t = 500 if 500 in p.t else int(p.t[len(p.t) // 2])
    a = p.ab[t]
    s_you, n_you = _coefs(h, a)
    return (f"At t = {t + t_base} (T = {p.T}) your x_t = {s_you:.3g} x0 + {n_you:.3g} epsilon, noise variance "
            f"{n_you ** 2:.3g}; Eq. (4) gives {np.sqrt(a):.3g} x0 + {np.sqrt(1 - a):.3g} epsilon, noise variance {1 - a:.3g}.")


def _reference(p):
    return CORRECT(p.x0, p.t, p.eps, p.ab)


def _own_noise(ps):
    """(corr with epsilon, variance) of the noise inside the student's x_t, over rows with 1 - alpha_bar_t > 0.1."""
    implied, given = [], []
    for p in ps:
        if p.out is None:
            continue
        a = _abar(p.ab, p.t)
        keep = (1 - a).reshape(-1) > 0.1
        implied.append(((p.out - np.sqrt(a) * p.x0) / np.sqrt(1 - a))[keep].ravel())
        given.append(p.eps[keep].ravel())
    if not implied:
        return None
    e, g = np.concatenate(implied), np.concatenate(given)
    return float(np.corrcoef(e, g)[0, 1]), float(e.var()), len(e)


def _picture(ps):
    p = next((p for p in ps if p.out is not None), None)
    if p is None:
        return None
    order = np.argsort(p.t)
    image = lambda v: torch.from_numpy(v[order]).float()
    return {"yours": image(p.out), "reference": image(_reference(p))}


def convention(t_base):
    return ("t in {1, ..., T} (1-based, the paper's; declared with t_base=1): alphaBars[t - 1] belongs to step t"
            if t_base == 1 else "t in {0, ..., T-1} (0-based, as ddpm): alphaBars[t] belongs to step t")


def judge(ps, t_base=0):
    """The report for the parts' outputs (or errors); parts of a function run or of an upload."""
    details = [f"Assumed: {convention(t_base)}."]
    picture = _picture(ps)
    if all(_fits(CORRECT, p) if p.error is None else False for p in ps):
        return passed(ITEM, f"x_t matches Eq. (4) on all {sum(len(p.t) for p in ps)} rows (T = 1000 and T = 100, "
                            "t = 0 and T-1 included).", details, picture)
    for h_id, h in HYPOTHESES.items():
        if all(_fits(h, p) for p in ps) and any(p.out is not None for p in ps):
            return named(ITEM, h_id, _figure(h_id, ps, t_base), details, picture)
    noise = _own_noise(ps) if all(p.error is None for p in ps) else None
    if noise is not None:
        corr, var, n = noise
        if abs(corr) < _Z / np.sqrt(n) + 0.05 and abs(var - 1) < _Z * np.sqrt(2 / n) + 0.05:
            return named(ITEM, "xt_own_noise", f"The noise in your x_t has variance {var:.3f} (right) but its correlation "
                         f"with the given epsilon is {corr:.3f} (it should be 1): it is another draw. False-alarm rate "
                         "of this test: below 1e-8.", details, picture)
    errors = [p for p in ps if p.error is not None]
    if errors:
        p = errors[0]
        return wrong(ITEM, f"sample_xt raised {type(p.error).__name__}: {p.error} (T = {p.T}, t = "
                           f"{(p.t + t_base).tolist()}).", details, picture)
    rows = [(p.T, int(t), bool(np.allclose(o, r, rtol=_RTOL, atol=_ATOL)))
            for p in ps for t, o, r in zip(p.t, p.out, _reference(p), strict=True)]
    return wrong(ITEM, f"x_t differs from Eq. (4) {where(rows)}{_fitted(ps, rows, t_base)}. No mistake of the "
                       "catalogue explains it.", details, picture)


def _fitted(ps, rows, t_base):
    """', where your x_t = s x0 + n epsilon' for the first wrong row, when the output is of that form."""
    bad = next((T, t) for T, t, ok in rows if not ok)
    p = next(p for p in ps if p.T == bad[0] and bad[1] in p.t)
    i = int(np.flatnonzero(p.t == bad[1])[0])
    design = np.stack([p.x0[i].ravel(), p.eps[i].ravel()], 1)
    (s, n), *_ = np.linalg.lstsq(design, p.out[i].ravel(), rcond=None)
    if not np.allclose(design @ np.array([s, n]), p.out[i].ravel(), rtol=_RTOL, atol=_ATOL):
        gap = np.abs(p.out[i] - _reference(p)[i]).max()
        return f" (at t = {bad[1] + t_base}, T = {bad[0]}: largest difference {gap:.3g})"
    a = p.ab[bad[1]]
    s, n = (round(float(v), 4) + 0.0 for v in (s, n))         # no 1e-16 where the student wrote 0
    return (f": at t = {bad[1] + t_base} (T = {bad[0]}) your x_t = {s:.3g} x0 + {n:.3g} epsilon, Eq. (4) gives "
            f"{np.sqrt(a):.3g} x0 + {np.sqrt(1 - a):.3g} epsilon")


def _call(fn, x0, t, eps, ab):
    """fn(x0, t, epsilon, alphaBars) with tensors as the sheet passes them (float32; t a LongTensor, or an int)."""
    t = torch.tensor(t) if isinstance(t, np.ndarray) else int(t)             # copies: the student may edit in place
    eps = None if eps is None else torch.tensor(eps, dtype=torch.float32)
    return as_array(fn(torch.tensor(x0, dtype=torch.float32), t, eps, torch.tensor(ab, dtype=torch.float32)))


def check(fn, *, t_base=0):
    """Run a student's sample_xt(x0, t, epsilon, alphaBars) on the challenge and judge it."""
    ps = parts()
    for p in ps:
        try:
            p.out = _call(fn, p.x0, p.t + t_base, p.eps, p.ab)
        except NotImplementedError:
            return not_implemented(ITEM)
        except Exception as err:        # the student's error is the evidence: judge() names or shows it
            p.error = err
        if p.error is None and p.out is None:
            return not_implemented(ITEM, "it returns None")
        if p.out is not None and p.out.shape != p.x0.shape:
            return wrong(ITEM, f"sample_xt returned shape {p.out.shape} for x0 of shape {p.x0.shape}: x_t has x0's shape.")
    report = judge(ps, t_base)
    if not report.passed and any(p.error is not None and not isinstance(p.error, IndexError) for p in ps):
        report = _one_at_a_time(fn, ps, t_base) or report
    if report.passed:
        report = _fresh_noise(fn, t_base) or report
    return report


def _one_at_a_time(fn, ps, t_base):
    """A batch call failed: if the same rows pass one image and one int t at a time, t's batch is the trouble."""
    try:
        for p in ps:
            for i in range(len(p.t)):
                out = _call(fn, p.x0[i:i + 1], np.int64(p.t[i] + t_base), p.eps[i:i + 1], p.ab)
                if out is None or not np.allclose(out, _reference(p)[i:i + 1], rtol=_RTOL, atol=_ATOL):
                    return None
    except Exception:                   # fails one at a time too: not a batching mistake
        return None
    p = next(p for p in ps if p.error is not None)
    return named(ITEM, "xt_scalar_t", f"sample_xt is right for one image and an int t, but for t = {(p.t + t_base).tolist()} "
                 f"(one t per image) it raised {type(p.error).__name__}: {p.error}.", [f"Assumed: {convention(t_base)}."])


def _fresh_noise(fn, t_base):
    """sample_xt(x0, t, None, alphaBars) must draw its own noise: x_t's noise part must be N(0, I)."""
    data = {k: v.double().numpy() for k, v in challenge.load("sample_xt").items()}
    x0, t, ab = data["fresh_x0"], data["fresh_t"].astype(np.int64), data["alphaBars_1000"]
    try:
        out = _call(fn, x0, t + t_base, None, ab)
    except Exception as err:            # the student's error is the evidence
        return named(ITEM, "xt_epsilon_none", f"sample_xt(x0, t, None, alphaBars) raised {type(err).__name__}: {err}.")
    if out is None or out.shape != x0.shape:
        return named(ITEM, "xt_epsilon_none", "sample_xt(x0, t, None, alphaBars) returned "
                     f"{'None' if out is None else f'shape {out.shape}'} instead of x_t of x0's shape.")
    a = _abar(ab, t)
    keep = (1 - a).reshape(-1) > 0.1
    e = ((out - np.sqrt(a) * x0) / np.sqrt(1 - a))[keep].ravel()
    n = len(e)
    if abs(e.mean()) > _Z / np.sqrt(n) or abs(e.var() - 1) > _Z * np.sqrt(2 / n):
        return wrong(ITEM, f"With epsilon=None the noise in your x_t has mean {e.mean():.3f} and variance {e.var():.3f}; "
                           f"it must be N(0, I) (6-sigma test over {n} numbers, false alarm about 4e-9).")
    return None
