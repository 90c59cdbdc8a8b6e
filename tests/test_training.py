"""Algorithm 1: the loss goes down, label dropout, callbacks, early stop, EMA, and input checks."""
import inspect
import statistics

import pytest
import torch

from ddpm import EMA, train, train_classconditional
from ddpm.training import train_step, warmup_stable_decay

NET_8PX = dict(base_channels=8, channel_mults=(1, 2), attn_levels=(), emb_channels=32, groups=4)


def _tiny_batch(n=4, size=8):
    ramp = torch.arange(size * size).float().view(size, size) / (size * size / 2) - 1     # [-1, 1)
    x0 = torch.stack([ramp, -ramp, ramp.T, -ramp.T])[:n, None]                          # [n, 1, size, size]
    return x0, torch.arange(n) % 3


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_overfit_tiny_batch_drives_loss_down(make_ddpm):
    ddpm = make_ddpm(image_size=8, num_classes=None, T=1000, net=NET_8PX)
    torch.nn.init.zeros_(ddpm.net.conv_out.weight)      # start from "predict zero noise": loss ~ E[eps^2] = 1
    torch.nn.init.zeros_(ddpm.net.conv_out.bias)
    x0, y = _tiny_batch()
    optim = torch.optim.Adam(ddpm.parameters(), lr=3e-3)
    losses = train(ddpm, [(x0, y)], 100, optim, "cpu", progress=False, generator=torch.Generator().manual_seed(0))
    assert len(losses) == 100
    first, last = statistics.mean(losses[:10]), statistics.mean(losses[-20:])
    assert first > 0.5
    assert last < 0.5 * first, (first, last)
    assert not ddpm.training                         # training leaves the model in eval mode


def _spy_on_labels(ddpm, monkeypatch):
    seen = []
    real_eps = ddpm.eps

    def eps(x_t, t, y=None):
        seen.append(None if y is None else y.clone())
        return real_eps(x_t, t, y)

    monkeypatch.setattr(ddpm, "eps", eps)
    return seen


def test_label_dropout_one_means_only_null_class(make_ddpm, monkeypatch):
    ddpm = make_ddpm(image_size=8, num_classes=3, net=NET_8PX)
    seen = _spy_on_labels(ddpm, monkeypatch)
    x0, y = _tiny_batch()
    optim = torch.optim.SGD(ddpm.parameters(), lr=1e-3)
    train_classconditional(ddpm, [(x0, y)] * 3, 1, optim, "cpu", p_uncond=1.0, progress=False,
                           generator=torch.Generator().manual_seed(0))
    assert len(seen) == 3
    assert all(labels.tolist() == [ddpm.null_class] * 4 for labels in seen)


def test_label_dropout_zero_keeps_labels(make_ddpm, monkeypatch):
    ddpm = make_ddpm(image_size=8, num_classes=3, net=NET_8PX)
    seen = _spy_on_labels(ddpm, monkeypatch)
    x0, y = _tiny_batch()
    optim = torch.optim.SGD(ddpm.parameters(), lr=1e-3)
    train_classconditional(ddpm, [(x0, y)] * 2, 1, optim, "cpu", p_uncond=0.0, progress=False)
    assert [labels.tolist() for labels in seen] == [y.tolist()] * 2


def test_unconditional_train_passes_no_labels(make_ddpm, monkeypatch):
    ddpm = make_ddpm(image_size=8, num_classes=None, net=NET_8PX)
    seen = _spy_on_labels(ddpm, monkeypatch)
    x0, y = _tiny_batch()
    train(ddpm, [(x0, y)], 2, torch.optim.SGD(ddpm.parameters(), lr=1e-3), "cpu", progress=False)
    assert seen == [None, None]


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_bad_p_uncond_names_the_value(make_ddpm, p):
    ddpm = make_ddpm(image_size=8, num_classes=3, net=NET_8PX)
    with pytest.raises(ValueError, match=str(p)):
        train_classconditional(ddpm, [_tiny_batch()], 1, torch.optim.SGD(ddpm.parameters(), lr=1e-3), "cpu",
                               p_uncond=p, progress=False)


def test_classconditional_needs_num_classes(make_ddpm):
    ddpm = make_ddpm(image_size=8, num_classes=None, net=NET_8PX)
    with pytest.raises(ValueError, match="num_classes"):
        train_classconditional(ddpm, [_tiny_batch()], 1, torch.optim.SGD(ddpm.parameters(), lr=1e-3), "cpu",
                               progress=False)


def test_callback_called_every_step(make_ddpm):
    ddpm = make_ddpm(image_size=8, num_classes=3, net=NET_8PX)
    calls = []
    losses = train_classconditional(ddpm, [_tiny_batch()] * 2, 3, torch.optim.SGD(ddpm.parameters(), lr=1e-3),
                                    "cpu", callback=lambda step, loss: calls.append((step, loss)), progress=False)
    assert len(losses) == 6
    assert calls == list(zip(range(1, 7), losses, strict=True))


def test_stop_ends_early_and_keeps_weights(make_ddpm):
    def run(**kwargs):
        ddpm = make_ddpm(image_size=8, num_classes=3, net=NET_8PX)
        before = _params(ddpm)
        optim = torch.optim.Adam(ddpm.parameters(), lr=1e-3)
        losses = train_classconditional(ddpm, [_tiny_batch()] * 10, 5, optim, "cpu", progress=False,
                                        generator=torch.Generator().manual_seed(0), **kwargs)
        return ddpm, before, losses

    calls = []
    stopped, before, losses = run(stop=lambda: calls.append(1) or len(calls) >= 3)
    assert len(losses) == 3
    assert not all(torch.equal(a, b) for a, b in zip(before, stopped.parameters(), strict=True))
    # the weights after a stop are exactly those of a run that was asked for 3 steps
    reference, _, ref_losses = run(max_steps=3)
    assert losses == ref_losses
    for a, b in zip(stopped.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


def test_ema_update_math():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9, warmup=False)
    theta_ema = _params(ema.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    theta = _params(model)
    ema.update(model)
    for p_ema, old, new in zip(ema.model.parameters(), theta_ema, theta, strict=True):
        torch.testing.assert_close(p_ema, 0.9 * old + 0.1 * new)
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_ema_is_updated_during_training(make_ddpm):
    ddpm = make_ddpm(image_size=8, num_classes=3, net=NET_8PX)
    ema = EMA(ddpm, decay=0.0)            # decay 0: the EMA copy equals the live weights after every update
    train_classconditional(ddpm, [_tiny_batch()] * 2, 1, torch.optim.Adam(ddpm.parameters(), lr=1e-2), "cpu",
                           ema=ema, progress=False)
    for p_ema, p in zip(ema.model.parameters(), ddpm.parameters(), strict=True):
        assert torch.equal(p_ema, p)


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_ema_rejects_bad_decay(decay):
    with pytest.raises(ValueError, match=str(decay)):
        EMA(torch.nn.Linear(1, 1), decay=decay)


def test_loss_rejects_wrong_image_shape(make_ddpm):
    ddpm = make_ddpm(num_classes=None)
    with pytest.raises(ValueError, match=r"\(2, 1, 32, 32\)"):
        ddpm.loss(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(1, 28, 28\)"):
        ddpm.loss(torch.zeros(1, 28, 28))


@pytest.mark.parametrize("bad", [11, -1])
def test_loss_rejects_class_out_of_range(make_ddpm, bad):
    ddpm = make_ddpm(num_classes=10)
    with pytest.raises(ValueError, match=rf"got \[(.*, )?{bad}[],]"):
        ddpm.loss(torch.zeros(2, 1, 28, 28), torch.tensor([0, bad]))


def test_loss_rejects_labels_for_unconditional_model(make_ddpm):
    with pytest.raises(ValueError, match="unconditional"):
        make_ddpm(num_classes=None).loss(torch.zeros(2, 1, 28, 28), torch.tensor([0, 1]))


def test_loss_accepts_null_class(make_ddpm):
    ddpm = make_ddpm(num_classes=10)
    loss = ddpm.loss(torch.zeros(2, 1, 28, 28), torch.tensor([0, 10]), generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_ema_warmup_follows_the_live_weights_early_on():
    """Update n uses decay min(decay, (1 + n) / (10 + n)): 2/11 at the first update, not 0.9995."""
    model = torch.nn.Linear(3, 3)
    ema = EMA(model, decay=0.9995)
    old = [p.detach().clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for p_ema, p_old, p in zip(ema.model.parameters(), old, model.parameters(), strict=True):
        torch.testing.assert_close(p_ema, 2 / 11 * p_old + 9 / 11 * p)


def test_warmup_stable_decay_rises_holds_and_falls_to_zero_at_total():
    f = warmup_stable_decay(warmup=10, total=100, decay=20)
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert f(10) == f(50) == f(80) == 1.0                  # stable until the last 20 steps
    assert [f(s) for s in (85, 90, 99, 100, 120)] == pytest.approx([0.75, 0.5, 0.05, 0.0, 0.0])
    assert warmup_stable_decay(warmup=10)(10 ** 6) == 1.0      # no decay: constant after warm-up


@pytest.mark.parametrize("kwargs, message", [
    (dict(warmup=5, decay=10), "decay of 10 steps needs the run's total"),
    (dict(warmup=5, total=50, decay=60), r"decay must lie in \[0, total = 50\] steps, got 60"),
    (dict(warmup=5, total=50, decay=-1), "got -1"),
])
def test_warmup_stable_decay_refuses_a_decay_it_cannot_do(kwargs, message):
    with pytest.raises(ValueError, match=message):
        warmup_stable_decay(**kwargs)


def test_train_step_alone_in_a_loop_reproduces_train(make_ddpm):
    """train_step is Algorithm 1 for one batch; train_classconditional's loop is exactly that, repeated."""
    batches = [(torch.flip(x0, [-1]) if i % 2 else x0, y) for i, (x0, y) in enumerate([_tiny_batch()] * 3)]

    def fresh():
        ddpm = make_ddpm(image_size=8, num_classes=3, net=NET_8PX)
        optim = torch.optim.Adam(ddpm.parameters(), lr=1e-3)
        return ddpm, optim, EMA(ddpm, 0.9), torch.Generator().manual_seed(0)

    ddpm, optim, ema, g = fresh()
    losses = train_classconditional(ddpm, batches, 2, optim, "cpu", p_uncond=0.5, ema=ema, progress=False, generator=g)

    alone, optim, alone_ema, g = fresh()
    alone.train()
    alone_losses = [float(train_step(alone, x0, optim, y=y, p_uncond=0.5, ema=alone_ema, generator=g))
                    for _ in range(2) for x0, y in batches]
    assert alone_losses == losses
    for a, b in zip(list(alone.parameters()) + list(alone_ema.model.parameters()),
                    list(ddpm.parameters()) + list(ema.model.parameters()), strict=True):
        assert torch.equal(a, b)


def test_the_code_panels_show_algorithm_1_in_one_short_function():
    explain = pytest.importorskip("ddpm.app.explain")
    lines = inspect.getsource(train_step).splitlines()
    assert len(lines) <= 25, len(lines)
    for key in ("finetune", "playground"):
        shown = explain.source(*explain.SOURCES[key])
        assert "def train_step(" in shown and "Alg. 1, line 3: t ~ Uniform({0..T-1})" in shown
        assert "def loss(" in shown                                     # DDPM.loss: Alg. 1, line 5
