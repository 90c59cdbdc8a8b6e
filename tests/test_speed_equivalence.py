"""The sampling loop (`sample_steps`: the schedule's scalars as Python floats, guidance in one batched pass,
channels_last activations) gives the same numbers as the straightforward loop written here from the public
pieces (ddpm.eps twice for guidance, ddpm_step and ddim_step); the opt-in compiled model gives the eager one's
images. No timing here: see ddpm/tools/bench.py.
"""
import pytest
import torch

import ddpm.unet as unet
from ddpm import compiled, ddim_step, ddpm_step, sample, sample_steps, timesteps


def reference_loop(ddpm, x, *, y=None, sampler="ddpm", steps=None, eta=0.0, guidance_scale=1.0,
                   variance="beta", generator=None):
    """Alg. 2 / DDIM as a newcomer would write it: two forward passes for guidance, tensors for t."""
    xs = []
    with torch.no_grad():
        for t, t_prev in timesteps(sampler, ddpm.T, steps):
            t_batch = torch.full((x.shape[0],), t, dtype=torch.long)
            if y is not None and guidance_scale != 1.0:
                eps_cond = ddpm.eps(x, t_batch, y)
                eps_uncond = ddpm.eps(x, t_batch, None)
                eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)        # Ho & Salimans (2021) Eq. (6)
            else:
                eps = ddpm.eps(x, t_batch, y)
            if sampler == "ddpm":
                noise = torch.randn(x.shape, generator=generator) if t > 0 else None
                x, _, _ = ddpm_step(x, t, eps, ddpm.schedule, noise=noise, variance=variance)
            else:
                noise = torch.randn(x.shape, generator=generator) if eta > 0 else None
                x, _, _ = ddim_step(x, t, t_prev, eps, ddpm.schedule, eta=eta, noise=noise)
            xs.append(x)
    return xs


CASES = [
    dict(sampler="ddpm"),
    dict(sampler="ddpm", variance="beta_tilde"),
    dict(sampler="ddpm", classes=True, guidance_scale=3.0),
    dict(sampler="ddim", steps=10),
    dict(sampler="ddim", steps=10, classes=True),
    dict(sampler="ddim", steps=10, classes=True, guidance_scale=3.0),
    dict(sampler="ddim", steps=10, classes=True, guidance_scale=2.0, eta=0.5),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_sample_steps_matches_reference_loop(make_ddpm, case):
    case = dict(case)
    ddpm = make_ddpm(T=20)
    y = torch.tensor([0, 3, 7]) if case.pop("classes", False) else None
    x = torch.randn(3, *ddpm.sample_shape, generator=torch.Generator().manual_seed(1))
    ours = [s.x_prev for s in sample_steps(ddpm, x, y=y, generator=torch.Generator().manual_seed(2), **case)]
    ref = reference_loop(ddpm, x, y=y, generator=torch.Generator().manual_seed(2), **case)
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m, i=i: f"step {i}: {m}")


def test_sample_matches_reference_loop_guided_ddim(make_ddpm):
    ddpm = make_ddpm(T=20)
    g = torch.Generator().manual_seed(5)
    ours = sample(ddpm, 2, [1, 4], sampler="ddim", steps=5, guidance_scale=3.0, generator=g)
    g = torch.Generator().manual_seed(5)
    x = torch.randn((4, *ddpm.sample_shape), generator=g)
    ref = reference_loop(ddpm, x, y=torch.tensor([1, 1, 4, 4]), sampler="ddim", steps=5, guidance_scale=3.0)[-1]
    torch.testing.assert_close(ours, ref.clamp(-1, 1), rtol=1e-5, atol=1e-5)


def test_step_coefs_are_python_floats(make_ddpm):
    ddpm = make_ddpm(T=20)
    x = torch.randn(2, *ddpm.sample_shape)
    for sampler, steps in (("ddpm", None), ("ddim", 4)):
        for step in sample_steps(ddpm, x, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0)):
            assert all(type(v) is float for v in step.coefs.values())


def test_channels_last_matches_the_plain_layout_forward_and_backward(make_ddpm, monkeypatch):
    """On CPU the network runs on NHWC activations, in sampling and in training: its output and its weight
    gradients equal those of the plain NCHW network, and what it returns is in the standard layout."""
    ddpm = make_ddpm(T=20)
    x, t, y = torch.randn(4, *ddpm.sample_shape), torch.tensor([0, 5, 10, 19]), torch.tensor([0, 1, 2, 10])
    layouts, layout = [], unet.cpu_layout
    hook = ddpm.net.down[0][0].register_forward_hook(
        lambda m, i, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last)))

    def output_and_grads(channels_last):
        # the plain network: the same with ddpm.unet.cpu_layout leaving the activations as they are
        monkeypatch.setattr(unet, "cpu_layout", layout if channels_last else lambda h: h)
        ddpm.net.zero_grad(set_to_none=True)
        out = ddpm.net(x, t, y)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in ddpm.net.parameters()]
    fast, fast_grads = output_and_grads(True)
    plain, plain_grads = output_and_grads(False)
    hook.remove()
    assert layouts == [True, False] and fast.is_contiguous()
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    for a, b in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_compiled_model_samples_what_the_eager_one_samples(make_ddpm):
    """`compiled` (opt-in torch.compile, weights frozen in) gives the eager images up to float rounding, leaves
    the model it was given alone, and keeps the weights it was compiled with. One real compile: about a minute."""
    ddpm = make_ddpm(T=20)
    fast = compiled(ddpm)
    kw = dict(sampler="ddim", steps=5, guidance_scale=3.0)
    a = sample(fast, 2, [1, 4], generator=torch.Generator().manual_seed(5), **kw)
    b = sample(ddpm, 2, [1, 4], generator=torch.Generator().manual_seed(5), **kw)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert type(fast.net).__name__ == "OptimizedModule" and type(ddpm.net).__name__ == "UNet2D"
    with torch.no_grad():
        ddpm.net.conv_out.bias.add_(0.5)                  # later changes to the model do not reach the copy
    again = sample(fast, 2, [1, 4], generator=torch.Generator().manual_seed(5), **kw)
    changed = sample(ddpm, 2, [1, 4], generator=torch.Generator().manual_seed(5), **kw)
    torch.testing.assert_close(again, a, rtol=0, atol=0)
    assert not torch.allclose(changed, a, atol=1e-3)
