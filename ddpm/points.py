"""Point clouds in the plane for the 2-D playground: the same DDPM, trained in seconds on a CPU.

Every generator returns a float tensor [n, 2], centred and scaled to unit standard deviation over both
coordinates (so x_T ~ N(0, I) and the data have the same scale), drawn from `generator`.
"""
import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import DataLoader, TensorDataset

from .diffusion import DDPM

SHAPES = ("two_moons", "swiss_roll", "gaussian_ring", "text", "drawing")
# The playground's default recipe (DDPM(data_dim=2, ...), an MLP of depth x width, Adam): two moons in 10 s
# on 2 cores, sliced Wasserstein ~0.03-0.07 to the data (two halves of the data: ~0.02-0.04)
RECIPE = dict(shape="two_moons", schedule="linear", T=100, beta_start=1e-3, beta_end=0.2, width=128, depth=3,
              lr=2e-3, batch=256, seconds=10)


def normalise(points):
    """Centre a point cloud [n, 2] and scale it to unit standard deviation (one scale for both coordinates)."""
    points = points - points.mean(0)
    return points / points.std().clamp(min=1e-8)


def two_moons(n, *, noise=0.06, generator=None):
    """Two interleaved half circles (as scikit-learn's make_moons)."""
    u = torch.rand(n, generator=generator) * math.pi
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, torch.cos(u), 1 - torch.cos(u))
    y = torch.where(upper, torch.sin(u), 0.5 - torch.sin(u))
    return normalise(torch.stack([x, y], 1) + noise * torch.randn(n, 2, generator=generator))


def swiss_roll(n, *, noise=0.03, generator=None):
    """A 2-D spiral r = theta, theta in [1.5 pi, 4.5 pi] (the swiss roll seen from its end)."""
    theta = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
    points = torch.stack([theta * torch.cos(theta), theta * torch.sin(theta)], 1) / (4.5 * math.pi)
    return normalise(points + noise * torch.randn(n, 2, generator=generator))


def gaussian_ring(n, *, k=8, std=0.05, generator=None):
    """k small Gaussians on a circle."""
    angle = torch.randint(0, k, (n,), generator=generator).float() * (2 * math.pi / k)
    centres = torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return normalise(centres + std * torch.randn(n, 2, generator=generator))


def from_image(gray, n, *, generator=None):
    """Points where a grey-scale image [H, W] (uint8, bright = ink) has ink, drawn with probability ~ brightness.

    Raises ValueError for an image without ink."""
    weights = torch.as_tensor(np.asarray(gray, dtype=np.float32)).flatten()
    weights = torch.where(weights > 40, weights, torch.zeros_like(weights))       # ignore faint anti-aliasing
    if weights.sum() <= 0:
        raise ValueError("the image has no ink: draw or write something first")
    h, w = np.asarray(gray).shape
    idx = torch.multinomial(weights, n, replacement=True, generator=generator)
    jitter = torch.rand(n, 2, generator=generator)                                 # uniform inside each pixel
    x = (idx % w).float() + jitter[:, 0]
    y = (h - 1 - idx // w).float() + jitter[:, 1]                                  # image rows grow downwards
    return normalise(torch.stack([x, y], 1))


def text(word, n, *, generator=None):
    """Points on the letters of `word` (1-12 characters), rendered in PIL's default font."""
    word = (word or "").strip()
    if not 1 <= len(word) <= 12:
        raise ValueError(f"text must have 1 to 12 characters, got {word!r}")
    odd = sorted({c for c in word if not (c.isascii() and c.isprintable())})
    if odd:                                              # PIL's default font draws other characters as boxes
        raise ValueError(f"text {word!r} has characters {odd} that the font cannot draw; use printable ASCII "
                         "(letters, digits, punctuation, spaces)")
    font = ImageFont.load_default(size=64)
    left, top, right, bottom = font.getbbox(word)
    image = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(image).text((4 - left, 4 - top), word, fill=255, font=font)
    return from_image(np.array(image), n, generator=generator)


def make(shape, n, *, word="DDPM", drawing=None, generator=None):
    """The point cloud `shape` (one of SHAPES) with n points; `word` for "text", a grey image for "drawing"."""
    if shape == "two_moons":
        return two_moons(n, generator=generator)
    if shape == "swiss_roll":
        return swiss_roll(n, generator=generator)
    if shape == "gaussian_ring":
        return gaussian_ring(n, generator=generator)
    if shape == "text":
        return text(word, n, generator=generator)
    if shape == "drawing":
        if drawing is None:
            raise ValueError("no drawing: draw a shape first")
        return from_image(drawing, n, generator=generator)
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def recipe_model(recipe=RECIPE, *, seed=0):
    """The DDPM(data_dim=2) of a playground recipe (RECIPE's keys), initialised from `seed`; the global RNG is
    left alone."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return DDPM(data_dim=2, schedule=recipe["schedule"], T=recipe["T"], beta_start=recipe["beta_start"],
                    beta_end=recipe["beta_end"], net=dict(width=recipe["width"], depth=recipe["depth"]),
                    dataset=recipe["shape"])


def loader(points, batch_size, *, seed=0):
    """Shuffled batches of a point cloud [N, 2] for `ddpm.train` (each yields [x0]), the last partial one dropped."""
    return DataLoader(TensorDataset(points), batch_size=min(batch_size, len(points)), shuffle=True, drop_last=True,
                      generator=torch.Generator().manual_seed(seed))
