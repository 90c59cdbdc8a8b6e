"""MLP: the noise-prediction network eps_theta(x_t, t, y) for vectors, e.g. points in the plane (the playground).

The same role as UNet2D for images, the same interface (forward(x, t, y), a `config` that rebuilds it): a
sinusoidal time embedding, and a class embedding of num_classes + 1 rows (the last is the null class of
classifier-free guidance), added to every hidden layer of a residual MLP.
"""
import torch.nn.functional as F
from torch import nn

from .unet import condition_embedding


class MLP(nn.Module):
    """eps_theta for vectors of `dim` numbers.

    dim:           numbers per sample (2 for points in the plane)
    num_classes:   classes for class-conditional models (None: unconditional)
    width:         units per hidden layer
    depth:         residual hidden layers, each h <- h + W SiLU(h + emb)
    emb_channels:  width of the sinusoidal time embedding before its own MLP
    """

    def __init__(self, dim=2, num_classes=None, width=128, depth=3, emb_channels=64):
        super().__init__()
        for name, value, lo in (("dim", dim, 1), ("width", width, 1), ("depth", depth, 1), ("emb_channels", emb_channels, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        if emb_channels % 2:
            raise ValueError(f"emb_channels = {emb_channels} must be even (half cosines, half sines)")
        self.config = dict(width=width, depth=depth, emb_channels=emb_channels)
        self.dim, self.num_classes, self.emb_channels = dim, num_classes, emb_channels
        self.time_mlp = nn.Sequential(nn.Linear(emb_channels, width), nn.SiLU(), nn.Linear(width, width))
        self.class_emb = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.out = nn.Linear(width, dim)

    def forward(self, x, t, y=None):
        emb = condition_embedding(self.time_mlp, self.class_emb, t, y, x, self.emb_channels)   # [B, width]
        h = self.inp(x)                                                         # [B, width]
        for block in self.blocks:
            h = h + block(F.silu(h + emb))
        return self.out(F.silu(h))                                              # [B, dim]
