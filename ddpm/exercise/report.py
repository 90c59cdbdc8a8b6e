"""What a check returns: a Report (passed, the named mistake, a message with figures), and its picture."""
from dataclasses import dataclass, field

import torch

from ..plots import image_grid
from .mistakes import MISTAKES

NOT_IMPLEMENTED = "not implemented yet"


@dataclass
class Report:
    """The verdict on one item. mistake: an id of MISTAKES, or None (passed, not implemented, or an error that is
    not in the catalogue: then `message` says where it is wrong). picture: {"yours": images, "reference": images},
    tensors [N, C, H, W] in [-1, 1], drawn side by side by `render_report`."""
    item: str
    passed: bool
    message: str
    mistake: str = None
    mistakes: tuple = ()                 # every catalogued mistake found (the first is `mistake`)
    details: list = field(default_factory=list)
    picture: dict = None
    not_implemented: bool = False
    refused: bool = False                # an upload that was not read (a pickle, too big, wrong arrays, ...)

    @property
    def verdict(self):
        if self.passed:
            return "passed"
        if self.refused:
            return "refused"
        if self.not_implemented:
            return NOT_IMPLEMENTED
        return f"mistake {self.mistake}" if self.mistake else "wrong"

    def __repr__(self):
        lines = [f"{self.item}: {self.verdict}", self.message] + [f"  {d}" for d in self.details]
        return "\n".join(line for line in lines if line)

    def _repr_markdown_(self):
        mark = "✅" if self.passed else ("⏳" if self.not_implemented else ("⛔" if self.refused else "❌"))
        lines = [f"**{mark} {self.item}: {self.verdict}**", "", self.message.replace("\n", "  \n")]
        if self.details:
            lines += [""] + [f"- {d}" for d in self.details]
        return "\n".join(lines)


def passed(item, message, details=(), picture=None):
    return Report(item, True, message, details=list(details), picture=picture)


def not_implemented(item, why=""):
    return Report(item, False, f"{item} is {NOT_IMPLEMENTED}" + (f" ({why})" if why else ""), not_implemented=True)


def named(item, ids, figure, details=(), picture=None):
    """A report naming catalogued mistakes (ids: one id or several), each with its notation, effect and fix;
    `figure` is the concrete evidence, e.g. "at t = 500 (T = 1000) your x_t has noise variance 0.01 instead of 0.92"."""
    ids = (ids,) if isinstance(ids, str) else tuple(ids)
    parts = []
    for i in ids:
        m = MISTAKES[i]
        parts.append(f"Mistake {m.id}: you wrote {m.notation}. {m.effect[0].upper()}{m.effect[1:]}.\n"
                     f"Fix: {m.fix}")
    message = f"{figure}\n" + "\n".join(parts) if figure else "\n".join(parts)
    return Report(item, False, message, mistake=ids[0], mistakes=ids, details=list(details), picture=picture)


def wrong(item, message, details=(), picture=None):
    """A report for an error that is not in the catalogue: the message says where the output is wrong."""
    return Report(item, False, message, details=list(details), picture=picture)


def where(rows):
    """Where a check failed, in words: rows are (T, t, ok) for every checked step, e.g. "only at t = 0",
    "only for T = 100", "only for T = 100, at t = 98, 99"; "" when every row is ok."""
    bad = [(T, t) for T, t, ok in rows if not ok]
    if not bad:
        return ""
    schedules = sorted({T for T, _, _ in rows}, reverse=True)
    bad_T = sorted({T for T, _ in bad}, reverse=True)
    words = [f"only for T = {bad_T[0]}"] if len(schedules) > 1 and len(bad_T) == 1 else []
    ts = {t for _, t in bad}
    last = {T - 1 for T in bad_T}
    every = all(not ok for T, _, ok in rows if T in bad_T)
    if every:
        words.append("at every t")
    elif ts == {0}:
        words.append("only at t = 0")
    elif ts <= last:
        words.append("only at t = T-1")
    else:
        shown = sorted(ts)
        words.append("at t = " + ", ".join(map(str, shown[:8])) + (", ..." if len(shown) > 8 else ""))
    return ", ".join(words)


def render_report(report, *, scale=4):
    """The report's picture as a PIL image: the student's images in the top row, the reference below (None when
    the report has no picture)."""
    if not report.picture:
        return None
    yours, reference = (torch.nan_to_num(torch.as_tensor(report.picture[k]).float(), 0.0, 1.0, -1.0)
                        for k in ("yours", "reference"))
    n = max(len(yours), len(reference))
    blank = lambda x: torch.ones((n - len(x), *x.shape[1:]))         # white fills the shorter row
    images = torch.cat([yours, blank(yours), reference, blank(reference)])
    return image_grid(images, nrow=n, scale=scale, row_labels=["yours", "reference"], label_width=24 * scale)
