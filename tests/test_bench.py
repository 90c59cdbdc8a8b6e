"""The benchmark's peer is a fair one: diffusers' scheduler loop around our network gives the images our
loop gives. (The benchmark's timings themselves are printed by `python -m ddpm bench`, never asserted.)"""
import pytest
import torch

from ddpm.bench import diffusers_loop, ours

pytest.importorskip("diffusers")


@pytest.mark.parametrize("sampler, steps, classes, guidance", [
    ("ddim", 5, [0, 3], 3.0),
    ("ddim", 5, None, 1.0),
    ("ddpm", None, [1, 2], 2.0),
])
def test_diffusers_peer_loop_gives_our_images(make_ddpm, sampler, steps, classes, guidance):
    ddpm = make_ddpm(T=20)
    a = ours(ddpm, 2, classes, sampler, steps, guidance, limit=3 if sampler == "ddpm" else None)
    b = diffusers_loop(ddpm, 2, classes, sampler, steps, guidance, limit=3 if sampler == "ddpm" else None)
    if sampler == "ddim":
        b = b.clamp(-1, 1)        # `sample` returns images clipped to [-1, 1]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
