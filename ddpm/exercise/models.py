"""The challenge's model: a DDPM whose eps_theta is exact, so Algorithm 2 has a reference without a trained network.

When the data are a few fixed images p_k (`points()`), the best noise prediction has a closed form:
    E[x_0 | x_t] = sum_k w_k p_k,   w = softmax_k( -||x_t - sqrt(alpha_bar_t) p_k||^2 / (2 (1 - alpha_bar_t)) )
    eps*(x_t, t) = (x_t - sqrt(alpha_bar_t) E[x_0 | x_t]) / sqrt(1 - alpha_bar_t)                 (Eq. 4 solved for eps)
With a class y the sum runs over that class's images only; the null class (num_classes) takes them all.
The network records every call (x_t, t, y, its output), which is how the checks see a student's sampling loop.
"""
from dataclasses import dataclass

import torch
from torch import nn

from ..diffusion import DDPM
from ..schedule import NoiseSchedule

SCHEDULES = {1000: (1e-4, 0.02), 100: (1e-3, 0.2)}       # T -> (beta_start, beta_end)
NUM_CLASSES = 3

_DRAWINGS = {
    0: ["........", ".######.", ".#....#.", ".#....#.", ".#....#.", ".#....#.", ".######.", "........"],
    1: ["...##...", "...##...", "...##...", "...##...", "...##...", "...##...", "...##...", "...##..."],
    2: ["#......#", ".#....#.", "..#..#..", "...##...", "...##...", "..#..#..", ".#....#.", "#......#"],
}


def points():
    """The data: six images [6, 1, 8, 8] in [-0.8, 0.8] (each drawing and its shift by one pixel) and their classes."""
    images, labels = [], []
    for label, rows in _DRAWINGS.items():
        image = torch.tensor([[0.8 if c == "#" else -0.8 for c in row] for row in rows])
        images += [image, torch.roll(image, shifts=1, dims=1)]
        labels += [label, label]
    return torch.stack(images)[:, None], torch.tensor(labels)


def schedule(T):
    """The challenge's noise schedule for T = 1000 or T = 100 (betas scaled so that alpha_bar_{T-1} is near 0)."""
    if T not in SCHEDULES:
        raise ValueError(f"the challenges use T = 1000 or T = 100, got T = {T!r}")
    return NoiseSchedule("linear", T, *SCHEDULES[T])


class StepOutOfRange(IndexError):
    """The network was called with a step the schedule does not have (e.g. t = T on a 0-based schedule)."""

    def __init__(self, t, T, t_base):
        super().__init__(f"eps_theta was called with t = {t}; this model's steps are {t_base}..{T - 1 + t_base}")
        self.t, self.T = t, T


class ShapeMismatch(ValueError):
    """The network was called with images of another shape than the model's (e.g. 28x28 written into the code)."""


def steps_of(t, batch, T, t_base):
    """t as given to eps_theta (an int, a tensor of one or of `batch` steps, an array) -> 0-based steps [batch]."""
    t = torch.as_tensor(t).detach().cpu()
    if t.is_floating_point():
        if not bool((t == t.round()).all()):
            raise ValueError(f"eps_theta takes integer steps t, got {t.flatten()[:4].tolist()}")
        t = t.long()
    t = t.reshape(-1)
    if len(t) == 1:
        t = t.expand(batch)
    if len(t) != batch:
        raise ValueError(f"eps_theta got {len(t)} steps t for a batch of {batch} images")
    return t - t_base


def points_eps(x_t, t, alpha_bar, pts=None, labels=None, y=None, null=NUM_CLASSES):
    """The exact eps*(x_t, t[, y]) of the module docstring, in float64; t: 0-based steps [B]."""
    if pts is None:
        pts, labels = points()
    x, p = x_t.double().flatten(1), pts.double().flatten(1)                                  # [B, D], [K, D]
    a = alpha_bar.double()[t].view(-1, 1)
    # -||x - sqrt(a) p_k||^2 / (2 (1 - a)) without its ||x||^2, which is the same for every k (softmax drops it)
    logits = (a.sqrt() * (x @ p.T) - 0.5 * a * (p ** 2).sum(1)) / (1 - a)                   # [B, K]
    if y is not None:
        own = (labels[None] == y[:, None]) | (y[:, None] == null)
        logits = logits.masked_fill(~own, -torch.inf)
    x0_mean = torch.softmax(logits, 1) @ p                                                    # E[x_0 | x_t]
    return ((x - a.sqrt() * x0_mean) / (1 - a).sqrt()).view(x_t.shape)


@dataclass
class Call:
    """One call of eps_theta: its inputs (x_t in float64, 0-based t, y as given) and its output."""
    x: torch.Tensor
    t: torch.Tensor
    y: object
    out: torch.Tensor


class PointsEps(nn.Module):
    """eps*(x_t, t, y) for the challenge's images; keeps `calls`. t_base = 1: it takes the paper's t in 1..T."""

    def __init__(self, T, num_classes=None, t_base=0):
        super().__init__()
        pts, labels = points()
        self.in_channels, self.num_classes, self.size_divisor, self.config = pts.shape[1], num_classes, 1, None
        self.points = nn.Parameter(pts.double(), requires_grad=False)    # a parameter: ddpm.device works
        self.register_buffer("labels", labels)
        self.register_buffer("alpha_bar", schedule(T).alpha_bar.double())
        self.T, self.t_base, self.calls = T, t_base, []

    def forward(self, x_t, t, y=None):
        x_t = torch.as_tensor(x_t)
        if tuple(x_t.shape[1:]) != tuple(self.points.shape[1:]):
            raise ShapeMismatch(f"eps_theta got images of shape {tuple(x_t.shape)}; this model's images are "
                                f"{tuple(self.points.shape[1:])} (ddpm.sample_shape)")
        t0 = steps_of(t, x_t.shape[0], self.T, self.t_base)
        bad = t0[(t0 < 0) | (t0 >= self.T)]
        if len(bad):
            raise StepOutOfRange(int(bad[0]) + self.t_base, self.T, self.t_base)
        labels = None
        if y is not None and self.num_classes is not None:
            labels = torch.as_tensor(y).detach().cpu().long().reshape(-1).expand(x_t.shape[0])
            if int(labels.min()) < 0 or int(labels.max()) > self.num_classes:
                raise ValueError(f"class labels must lie in 0..{self.num_classes} ({self.num_classes}: the null class), "
                                 f"got {sorted(set(labels.tolist()))}")
        x = x_t.detach().cpu().double()
        eps = points_eps(x, t0, self.alpha_bar, self.points, self.labels, labels, self.num_classes)
        self.calls.append(Call(x.clone() if x is x_t else x, t0, None if y is None else labels, eps))
        return eps.to(dtype=x_t.dtype if x_t.is_floating_point() else torch.float32, device=x_t.device)


class ChallengeDDPM(DDPM):
    """A DDPM (image_size 8, one channel) around an exact network; also callable as ddpm(x_t, t, y)."""

    def forward(self, x_t, t, y=None):
        return self.eps(x_t, t, y)


def challenge_ddpm(T, net, num_classes=None):
    """A ChallengeDDPM with the challenge's schedule for T around `net`."""
    beta_start, beta_end = SCHEDULES[T]
    return ChallengeDDPM(image_size=8, in_channels=1, num_classes=num_classes, T=T, beta_start=beta_start,
                         beta_end=beta_end, net=net).eval()


def sampling_model(T, conditional=False, t_base=0):
    """The model a student's `sample` runs on: exact, recording its calls in ddpm.net.calls."""
    num_classes = NUM_CLASSES if conditional else None
    return challenge_ddpm(T, PointsEps(T, num_classes, t_base), num_classes)
