"""UNet2D: the noise-prediction network eps_theta(x_t, t, y) of Ho et al. (2020), Appendix B, made small.

Sinusoidal time embedding -> MLP; residual blocks with GroupNorm whose bias is shifted by the time
(and class) embedding; self-attention at the coarsest level; skip connections between the halves.
With `num_classes`, a learned embedding of num_classes + 1 entries is added to the time embedding:
the extra entry (index num_classes) is the *null* class of classifier-free guidance.
With `patch_size` p > 1, each p x p patch of pixels is folded into channels before the first convolution
and unfolded after the last (pixel unshuffle / shuffle), so the network never runs at full resolution.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t, dim):
    """Transformer-style sinusoidal embedding of integer steps t: [B] -> [B, dim] (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]                                  # [B, half]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)              # [B, dim]


def condition_embedding(time_mlp, class_emb, t, y, x, dim):
    """The vector [B, D] that conditions every block of eps_theta: time_mlp(emb(t)), plus the class embedding.

    t: steps [B] (or one step for the whole batch); y: labels [B], class weights [B, K + 1] that mix the class
    embeddings, or None for an unconditional network (class_emb None)."""
    t = torch.as_tensor(t, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    emb = time_mlp(timestep_embedding(t, dim))                                # [B, D]
    if class_emb is not None:
        if y is None:
            raise ValueError("this network is class-conditional: pass y (use num_classes for the null class)")
        emb = emb + (y @ class_emb.weight if y.is_floating_point() else class_emb(y))
    return emb


# Two shapes for 28x28 images (for UNet2D(**shape)):
#   PATCH2:   works on 2x2 pixel patches, levels 14x14 and 7x7, 0.60 M parameters, 105 MFLOP per image.
#             The default for new 28x28 models: on 2 CPU cores it samples about twice as fast as FULL_RES.
#   FULL_RES: the classic shape, levels 28x28, 14x14, 7x7, 1.03 M parameters, 219 MFLOP per image.
PATCH2 = dict(patch_size=2, base_channels=48, channel_mults=(1, 1), attn_levels=(1,))
FULL_RES = dict(base_channels=16, channel_mults=(1, 4, 4), attn_levels=(2,))
# For 32x32x3 images (CIFAR-10 / CIFAR-100): the shape of Ho et al.'s CIFAR-10 network (App. B): 128 channels,
# levels 32, 16, 8, 4 with multipliers 1, 2, 2, 2, two residual blocks per level, attention at 16x16, dropout 0.1.
# A GPU network (33.5 M parameters with 100 classes); `python -m ddpm train --base-channels 32` makes a smaller one.
CIFAR32 = dict(base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2, attn_levels=(1,), dropout=0.1,
               groups=32)
# The network of a new model when none is named, by image side: `DDPM(net=None)` and `python -m ddpm train` both
# take it from here, so the model a student builds in Python is the one the CLI trains and the docs describe.
DEFAULT_NETS = {28: PATCH2, 32: CIFAR32}


def default_net(image_size):
    """The UNet2D settings of a new model for images of side `image_size` (a copy): DEFAULT_NETS', else PATCH2."""
    return dict(DEFAULT_NETS.get(image_size, PATCH2))


class ResBlock(nn.Module):
    def __init__(self, c_in, c_out, emb_dim, groups, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):
        # in-place SiLU and adds on fresh tensors: fewer passes over memory, the same numbers
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h += self.emb(emb)[:, :, None, None]                                    # [B, C, 1, 1] broadcast over H, W
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=True)))
        return h.add_(self.skip(x))


# Above this many positions the fused kernel is kept on a CPU too: a one-off micro-benchmark (forward + backward)
# found the written-out form no faster at 256 and 1024 positions, and the fused kernel needs no [B, HW, HW] matrix.
WRITTEN_OUT_MAX_POSITIONS = 64


def cpu_layout(h):
    """h in the layout the network runs in: channels_last (NHWC) on a CPU, as it is elsewhere.

    oneDNN's convolutions (forward and backward) run faster on NHWC activations, which outweighs GroupNorm's
    slower NHWC kernel: sampling 1.08-1.18x (`python -m ddpm bench --ablations`), a training step 1.07-1.13x
    (`python benchmarks/app_targets.py`). The layers after it follow h's layout."""
    return h.contiguous(memory_format=torch.channels_last) if h.device.type == "cpu" else h


class Attention(nn.Module):
    """Single-head self-attention over the H*W positions of a feature map."""

    def __init__(self, channels, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).transpose(2, 3).unbind(1)  # each [B, HW, C]
        if x.device.type == "cpu" and H * W <= WRITTEN_OUT_MAX_POSITIONS:
            # softmax(q k^T / sqrt(C)) v written out: on a CPU at 49 positions (PATCH2's 7x7) two batched matmuls
            # beat the fused kernel (the forward pass 1.03-1.17x: `python -m ddpm bench --ablations`)
            weights = torch.softmax(q @ k.transpose(1, 2) * C ** -0.5, dim=-1)               # [B, HW, HW]
            h = weights @ v                                                                  # [B, HW, C]
        else:
            h = F.scaled_dot_product_attention(q, k, v)                      # the same, as one fused kernel
        return x + self.out(h.transpose(1, 2).reshape(B, C, H, W))


class UNet2D(nn.Module):
    """eps_theta(x_t, t, y) for 28x28 or 32x32 images with 1 or 3 channels.

    patch_size:      fold p x p pixel patches into channels first: 28x28x1 -> 14x14x4 for p = 2. On a CPU the
                     full-resolution level costs far more wall time than its share of FLOPs (its GroupNorm and
                     SiLU passes are memory-bound), so p = 2 is the CPU-efficient shape (see `python -m ddpm bench`)
    base_channels:   channels at the first level (after patching)
    channel_mults:   channels per level as multiples of base_channels; each level after the first halves H, W
    emb_channels:    width of the time (and class) embedding
    num_res_blocks:  residual blocks per level on the way down (one more on the way up)
    attn_levels:     indices of levels with self-attention after each block (the middle always has one);
                     None: level 2 when the network has three or more levels (Ho et al.'s 16x16 attention), else none
    groups:          GroupNorm groups
    dropout:         dropout inside residual blocks
    """

    def __init__(self, in_channels=1, num_classes=None, base_channels=16, channel_mults=(1, 4, 4),
                 emb_channels=128, num_res_blocks=1, attn_levels=None, groups=8, dropout=0.0, patch_size=1):
        super().__init__()
        if not channel_mults:
            raise ValueError("channel_mults must name at least one level, e.g. (1, 2)")
        if attn_levels is None:
            attn_levels = (2,) if len(channel_mults) > 2 else ()
        bad = [level for level in attn_levels if level not in range(len(channel_mults))]
        if bad:
            raise ValueError(f"attn_levels {list(attn_levels)} name levels {bad} that this network does not have; "
                             f"with channel_mults={tuple(channel_mults)} the levels are 0..{len(channel_mults) - 1} "
                             f"(e.g. attn_levels=({len(channel_mults) - 1},), or () for attention only in the middle)")
        if base_channels % groups or emb_channels % 2:
            raise ValueError(f"base_channels = {base_channels} must be a multiple of groups = {groups}, "
                             f"and emb_channels = {emb_channels} even")
        # the settings that rebuild this network (DDPM stores them in config.json; it supplies the other two)
        self.config = dict(base_channels=base_channels, channel_mults=list(channel_mults), emb_channels=emb_channels,
                           num_res_blocks=num_res_blocks, attn_levels=list(attn_levels), groups=groups,
                           dropout=dropout, patch_size=patch_size)
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.size_divisor = patch_size * 2 ** (len(channel_mults) - 1)     # image sides must be multiples of it
        in_channels = in_channels * patch_size ** 2                          # channels after pixel unshuffle
        emb_dim = emb_channels
        self.emb_dim, self.num_classes = emb_dim, num_classes
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        chans = [base_channels * m for m in channel_mults]
        skip_chans, c = [base_channels], base_channels
        self.down = nn.ModuleList()
        for level, ch in enumerate(chans):
            for _ in range(num_res_blocks):
                self.down.append(self._block(c, ch, emb_dim, groups, dropout, level in attn_levels))
                c = ch
                skip_chans.append(c)
            if level < len(chans) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skip_chans.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, emb_dim, groups, dropout), Attention(c, groups),
                                  ResBlock(c, c, emb_dim, groups, dropout)])
        self.up = nn.ModuleList()
        for level, ch in reversed(list(enumerate(chans))):
            for _ in range(num_res_blocks + 1):
                self.up.append(self._block(c + skip_chans.pop(), ch, emb_dim, groups, dropout, level in attn_levels))
                c = ch
            if level > 0:
                # conv first, then nearest upsampling: same receptive field, a quarter of the FLOPs
                self.up.append(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.Upsample(scale_factor=2, mode="nearest")))
        self.norm_out = nn.GroupNorm(groups, c)
        self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)   # start as "predict zero noise": stabler early training
        nn.init.zeros_(self.conv_out.bias)

    @staticmethod
    def _block(c_in, c_out, emb_dim, groups, dropout, attn):
        blocks = [ResBlock(c_in, c_out, emb_dim, groups, dropout)] + ([Attention(c_out, groups)] if attn else [])
        return nn.ModuleList(blocks)

    @staticmethod
    def _run(block, h, emb):
        if isinstance(block, nn.ModuleList):                 # ResBlock [+ Attention]
            h = block[0](h, emb)
            return block[1](h) if len(block) > 1 else h
        return block(h)                                      # down- or upsampling

    def forward(self, x, t, y=None):
        emb = condition_embedding(self.time_mlp, self.class_emb, t, y, x, self.emb_dim)   # [B, emb_dim]
        if self.patch_size > 1:
            x = F.pixel_unshuffle(x, self.patch_size)                          # [B, C p^2, H / p, W / p]
        h = cpu_layout(self.conv_in(x))
        skips = [h]
        for block in self.down:
            h = self._run(block, h, emb)
            skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for block in self.up:
            if isinstance(block, nn.ModuleList):
                h = torch.cat([h, skips.pop()], dim=1)          # [B, C + C_skip, H, W]
            h = self._run(block, h, emb)
        out = self.conv_out(F.silu(self.norm_out(h))).contiguous()                # standard layout
        return F.pixel_shuffle(out, self.patch_size) if self.patch_size > 1 else out   # [B, C, H, W]
