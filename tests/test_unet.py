"""The network's shapes: patching is exact pixel (un)shuffling, the in-place block gives the textbook
numbers and gradients, and a network that cannot fit the image size is refused by name."""
import pytest
import torch
import torch.nn.functional as F

import ddpm.unet as unet
from ddpm import DDPM
from ddpm.tools.bench import forward_flops
from ddpm.unet import FULL_RES, PATCH2, Attention, ResBlock, UNet2D

from conftest import TINY_NET


def _randomize(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net


def test_patch_size_is_pixel_unshuffle_around_the_same_network():
    patched = _randomize(UNet2D(in_channels=1, num_classes=10, patch_size=2, **TINY_NET)).eval()
    plain = UNet2D(in_channels=4, num_classes=10, **TINY_NET).eval()
    plain.load_state_dict(patched.state_dict())
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([1, 20, 40]), torch.tensor([0, 5, 10])
    with torch.no_grad():
        expected = F.pixel_shuffle(plain(F.pixel_unshuffle(x, 2), t, y), 2)
        torch.testing.assert_close(patched(x, t, y), expected)
    assert patched(x, t, y).shape == x.shape


@pytest.mark.parametrize("shape", [PATCH2, FULL_RES], ids=["patch2", "full_res"])
def test_bundled_shapes_map_28x28_images_to_28x28(shape):
    ddpm = DDPM(num_classes=10, net=shape).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert ddpm.eps(x, torch.tensor([0, 999]), torch.tensor([3, 10])).shape == x.shape


def test_patch2_is_the_cheaper_shape():
    """The reason PATCH2 is the default: less than half the forward FLOPs of FULL_RES (see ddpm/tools/bench.py)."""
    patch2, full = forward_flops(DDPM(num_classes=10, net=PATCH2)), forward_flops(DDPM(num_classes=10, net=FULL_RES))
    assert patch2 < 0.5 * full


def test_resblock_matches_out_of_place_formula_and_gradients():
    """The block's in-place SiLU and adds change neither the output nor the gradients."""
    block = _randomize(ResBlock(8, 16, emb_dim=12, groups=4, dropout=0.0))
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    emb = torch.randn(2, 12, requires_grad=True)
    out = block(x, emb)
    out.pow(2).sum().backward()
    grads = [x.grad.clone(), emb.grad.clone()] + [p.grad.clone() for p in block.parameters()]

    x2, emb2 = x.detach().clone().requires_grad_(), emb.detach().clone().requires_grad_()
    block.zero_grad()
    h = block.conv1(F.silu(block.norm1(x2))) + block.emb(emb2)[:, :, None, None]
    ref = block.skip(x2) + block.conv2(F.silu(block.norm2(h)))
    ref.pow(2).sum().backward()
    torch.testing.assert_close(out, ref)
    for a, b in zip(grads, [x2.grad, emb2.grad] + [p.grad for p in block.parameters()], strict=True):
        torch.testing.assert_close(a, b)


def test_written_out_attention_matches_the_fused_kernel_and_its_gradients(monkeypatch):
    """On a CPU the attention is softmax(q k^T / sqrt(C)) v written out (faster there); it computes what
    F.scaled_dot_product_attention computes, forward and backward."""
    block = _randomize(Attention(16, groups=4))
    runs = []
    for written_out_max in (unet.WRITTEN_OUT_MAX_POSITIONS, 0):          # 0: the fused kernel at every size
        monkeypatch.setattr(unet, "WRITTEN_OUT_MAX_POSITIONS", written_out_max)
        x = torch.randn(3, 16, 7, 7, generator=torch.Generator().manual_seed(0)).requires_grad_()
        block.zero_grad()
        out = block(x)
        out.pow(2).sum().backward()
        runs.append([out, x.grad] + [p.grad for p in block.parameters()])
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_large_attention_keeps_the_fused_kernel_on_a_cpu(monkeypatch):
    """Written out only up to WRITTEN_OUT_MAX_POSITIONS (PATCH2's 7x7); at 16x16 the fused kernel runs."""
    calls, fused = [], F.scaled_dot_product_attention
    monkeypatch.setattr(unet.F, "scaled_dot_product_attention", lambda *a: calls.append(a[0].shape[1]) or fused(*a))
    block = _randomize(Attention(8, groups=4))
    with torch.no_grad():
        block(torch.randn(2, 8, 7, 7))
        block(torch.randn(2, 8, 16, 16))
    assert calls == [256] and 7 * 7 <= unet.WRITTEN_OUT_MAX_POSITIONS < 16 * 16


def test_flop_count_includes_the_attention(monkeypatch):
    """The bench's FLOP count (FlopCounterMode) sees the written-out attention's two matmuls per layer: QK^T
    and AV, N^2 C multiply-adds (2 N^2 C FLOPs) each per image (N = H W positions)."""
    ddpm = DDPM(num_classes=10, net=PATCH2)
    layers = [m for m in ddpm.net.modules() if isinstance(m, Attention)]
    with_attention = forward_flops(ddpm)
    monkeypatch.setattr(unet, "WRITTEN_OUT_MAX_POSITIONS", 0)    # the fused CPU kernel: no FLOP formula in the counter
    without = forward_flops(ddpm)
    n, c = 7 * 7, layers[0].out.in_channels
    assert with_attention - without == len(layers) * 2 * (2 * n * n * c)


@pytest.mark.parametrize("image_size, net", [(30, PATCH2), (26, FULL_RES)])
def test_image_size_that_does_not_fit_the_network_is_refused(image_size, net):
    with pytest.raises(ValueError, match=f"image_size {image_size} .* multiple of"):
        DDPM(image_size=image_size, num_classes=10, net=net)
