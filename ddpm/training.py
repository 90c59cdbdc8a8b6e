"""Algorithm 1 (training), with label dropout for classifier-free guidance and an EMA of the weights.

    repeat                                   `train` and `train_classconditional`: one train_step per batch
        x_0 ~ q(x_0)                         the loader's batch
        t ~ Uniform({0, ..., T-1})           draw_t_eps (the paper's {1..T}, 0-based as in ddpm/schedule.py)
        eps ~ N(0, I)                        draw_t_eps
        gradient step on ||eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t)||^2
                                             DDPM.loss, backward, optimizer_step (and the EMA)
    until converged                          n_epochs, max_steps, max_seconds or stop()
"""
import contextlib
import copy
import numbers
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .distributed import shard


class EMA:
    """Exponential moving average of a model's parameters: theta_ema <- d * theta_ema + (1 - d) * theta.

    With `warmup`, the decay used at update n is min(decay, (1 + n) / (10 + n)), so a short run
    (a 1-epoch student run, a minute of fine-tuning) is not dominated by the random initial weights.
    """

    def __init__(self, model, decay=0.999, *, warmup=True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay
        # one fused pass over all tensors (as timm's ModelEmaV3): theta_ema += (1 - d) (theta - theta_ema)
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)


def warmup_stable_decay(warmup, total=None, decay=0):
    """Learning-rate factor of optimizer step s (for LambdaLR): linear warm-up over `warmup` steps, then 1,
    then, with `decay` > 0, linear decay to 0 over the last `decay` steps before `total`. A run can be
    continued at the constant rate from any checkpoint taken before the decay (Hägele et al. 2024)."""
    if decay and total is None:
        raise ValueError(f"a decay of {decay} steps needs the run's total number of steps")
    if decay < 0 or (decay and decay > total):
        raise ValueError(f"decay must lie in [0, total = {total}] steps, got {decay}")

    def factor(s):
        rise = min(1.0, (s + 1) / max(1, warmup))
        return rise * min(1.0, max(0.0, (total - s) / decay)) if decay else rise
    return factor


def _batches(loader, n_epochs, conditional):
    """(x0, y) per batch over n_epochs passes (None: without end); a loader may yield x0 alone or (x0, y).
    A loader whose sampler has epochs (make_loader's) is told each epoch, so each pass has its own order."""
    sampler = getattr(loader, "sampler", None)
    first, epoch = getattr(sampler, "epoch", 0), 0
    while n_epochs is None or epoch < n_epochs:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(first + epoch)
        empty = True
        for batch in loader:
            empty = False
            if torch.is_tensor(batch):
                x0, y = batch, None
            elif isinstance(batch, (tuple, list)) and len(batch) in (1, 2) and torch.is_tensor(batch[0]):
                x0, y = batch[0], batch[1] if len(batch) == 2 else None
            else:
                kind = f"a {type(batch).__name__} of {len(batch)}" if isinstance(batch, (tuple, list)) else type(batch).__name__
                raise ValueError(f"the loader must yield images x0 or pairs (x0, y) of tensors, got {kind}")
            if conditional and y is None:
                raise ValueError("train_classconditional needs a loader that yields (x0, y) pairs with class labels; "
                                 "this one yields images alone (use train for an unconditional model)")
            yield x0, y
        if empty:
            raise ValueError("the loader yielded no batch: it is empty (too few images for its batch size with drop_last?)")
        epoch += 1


class _Loss(torch.nn.Module):
    """ddpm.loss as a module's forward, so that DistributedDataParallel can wrap it (its gradient hooks work
    through the wrapper's forward) while `ddpm` itself stays unwrapped for the EMA and the checkpoints."""

    def __init__(self, ddpm):
        super().__init__()
        self.ddpm = ddpm

    def forward(self, x0, y, t, eps):
        return self.ddpm.loss(x0, y, t=t, eps=eps)


def _autocast(precision, device):
    """A context for the forward pass: bfloat16 autocast for "bf16"; for "fp32" none at all (even a disabled
    autocast costs a few percent of a CPU step)."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision='bf16': the GPU {torch.cuda.get_device_name(device)} has no bfloat16; use 'fp32'")
    if precision == "bf16" and device.type not in ("cuda", "cpu"):
        raise ValueError(f"precision='bf16' runs on cpu and cuda, not on {device.type}; use 'fp32'")
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext


# Algorithm 1 of Ho et al. (2020)
def train_step(ddpm, x0, optim, *, y=None, p_uncond=None, ema=None, grad_clip=1.0, generator=None):
    """One pass of Algorithm 1's repeat loop on the batch x0 (ddpm in train mode). Returns the loss.

    y: class labels of a conditional model; p_uncond: the probability of replacing each by the null class
    (classifier-free guidance; None: no dropout); ema: an EMA to update after the step; grad_clip: the largest
    gradient norm (0: no clipping); generator: for t, eps and the dropout. `train` and `train_classconditional`
    repeat this over a loader; with gradient accumulation or several processes they run its pieces
    (draw_t_eps, ddpm.loss, optimizer_step) on a batch split in parts.
    """
    # Alg. 1, line 2: x0 ~ q(x0) is the batch given; lines 3-4: t ~ Uniform({0..T-1}), eps ~ N(0, I)
    t, eps, drop = draw_t_eps(ddpm, x0.shape, x0.device, p_uncond=p_uncond, generator=generator)
    optim.zero_grad(set_to_none=True)
    loss = ddpm.loss(x0, drop_labels(ddpm, y, drop), t=t, eps=eps)      # Alg. 1, line 5: ||eps - eps_theta(x_t, t)||^2
    loss.backward()                                                     # Alg. 1, line 5: its gradient in theta
    optimizer_step(ddpm, optim, ema=ema, grad_clip=grad_clip)          # Alg. 1, line 5: the descent step
    return loss.detach()


def draw_t_eps(ddpm, shape, device, *, p_uncond=None, generator=None):
    """The random draws of Algorithm 1 for a batch of `shape` [B, ...]: t [B], eps of `shape`, and which labels
    classifier-free guidance drops (a [B] mask; None without p_uncond), drawn from `generator` as written below.
    t is 0-based (ddpm/schedule.py): the paper's Uniform({1..T}) is Uniform({0..T-1}) here."""
    drop = torch.rand(shape[0], device=device, generator=generator) < p_uncond if p_uncond is not None else None
    t = torch.randint(0, ddpm.T, shape[:1], device=device, generator=generator)    # Alg. 1, line 3: t ~ Uniform({0..T-1})
    eps = torch.randn(shape, device=device, generator=generator)                   # Alg. 1, line 4: eps ~ N(0, I)
    return t, eps, drop


def drop_labels(ddpm, y, drop):
    """y with the labels where `drop` is True replaced by the null class (classifier-free guidance's dropout)."""
    return y if drop is None or y is None else torch.where(drop, torch.full_like(y, ddpm.null_class), y)


def optimizer_step(ddpm, optim, *, ema=None, grad_clip=1.0):
    """Alg. 1, line 5's gradient descent step on the gradients in ddpm (clipped to norm grad_clip), then the EMA."""
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(ddpm.parameters(), grad_clip)
    optim.step()
    if ema is not None:
        ema.update(ddpm)


def _backward(ddpm, model, micro, *, p_uncond, generator, rank, world, autocast):
    """Alg. 1, lines 3-5 (the loss and its gradient) on this rank's micro-batches [(x0, y), ...] of one optimizer step.

    t and eps are drawn for the whole global batch, by every rank from the same generator, and each rank takes the
    positions r, r + N, ... that make_loader's sampler gave it: so N processes with batch B / N draw exactly what
    one process with batch B draws, and one micro-batch on one process draws what train_step draws. The micro-batch
    gradients are summed, weighted by size; DDP averages them over the ranks once, after the last."""
    sizes = [len(x0) for x0, _ in micro]
    x0 = micro[0][0]
    draws = draw_t_eps(ddpm, (world * sum(sizes), *x0.shape[1:]), x0.device, p_uncond=p_uncond, generator=generator)
    mine = zip(*[v[rank::world].split(sizes) if v is not None else [None] * len(sizes) for v in draws], strict=True)
    loss = 0.0
    for m, ((x0, y), (t, eps, drop)) in enumerate(zip(micro, mine, strict=True)):
        with model.no_sync() if world > 1 and m < len(micro) - 1 else contextlib.nullcontext():
            with autocast():
                part = model(x0, drop_labels(ddpm, y, drop), t, eps)                     # Alg. 1, line 5
            part = part * (len(x0) / sum(sizes)) if len(micro) > 1 else part
            part.backward()
        loss += part.detach().float()
    return loss


def _check_run(ddpm, n_epochs, stop, max_steps, max_seconds, grad_accum, conditional):
    if n_epochs is None and max_steps is None and max_seconds is None and stop is None:
        raise ValueError("n_epochs=None trains without end: give max_steps, max_seconds or stop as well")
    if n_epochs is not None and (isinstance(n_epochs, bool) or not isinstance(n_epochs, numbers.Integral) or n_epochs < 0):
        raise ValueError(f"n_epochs must be an integer >= 0 (or None: until max_steps / max_seconds), got {n_epochs!r}")
    if isinstance(grad_accum, bool) or not isinstance(grad_accum, numbers.Integral) or grad_accum < 1:
        raise ValueError(f"grad_accum must be an integer >= 1 (batches per optimizer step), got {grad_accum!r}")
    if conditional and ddpm.num_classes is None:
        raise ValueError("train_classconditional needs a model built with num_classes")


def _over_ranks(loss, done, device, world):
    """The mean loss over all ranks, and whether any rank must stop (its clock ran out): then every rank stops."""
    both = torch.stack([torch.as_tensor(loss, device=device), torch.tensor(float(done), device=device)])
    dist.all_reduce(both)
    return both[0] / world, bool(both[1] > 0)


def _grads_in_param_layout(ddpm):
    """Gradient hooks that hand DDP each 1x1 convolution's weight gradient in its parameter's strides.

    With channels_last activations the gradient of a [C_out, C_in, 1, 1] weight has strides (C_in, 1, C_in, C_in):
    the same numbers, and a layout autograd keeps (the size-1 dimensions make it count as contiguous), but not the
    strides of DDP's bucket views, so under bf16 autocast every rank warned "Grad strides do not match bucket view
    strides". The copy is of a few small weights only."""
    def hook(p):
        return lambda g: g if g.stride() == p.stride() else g.new_empty_strided(p.shape, p.stride()).copy_(g)
    return [p.register_hook(hook(p)) for p in ddpm.parameters() if p.dim() == 4 and p.shape[2:] == (1, 1)]


def _fit(ddpm, loader, n_epochs, optim, device, *, p_uncond, ema, grad_clip, lr_scheduler, callback, stop, max_steps,
         max_seconds, progress, generator, grad_accum, precision):
    """The loop around Algorithm 1: train_step's pieces per optimizer step, until n_epochs, max_steps, max_seconds
    or stop(); p_uncond None: an unconditional model."""
    conditional = p_uncond is not None
    _check_run(ddpm, n_epochs, stop, max_steps, max_seconds, grad_accum, conditional)
    device = torch.device(device)
    autocast = _autocast(precision, device)
    rank, world = shard()
    ddpm.to(device).train()
    model = _Loss(ddpm)
    hooks = []
    if world > 1:                      # gradients averaged over the ranks in backward
        hooks = _grads_in_param_layout(ddpm)
        model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    losses, start, micro = [], time.perf_counter(), []
    total = max_steps if max_steps is not None else (n_epochs * len(loader) // grad_accum if n_epochs is not None else None)
    bar = tqdm(total=total, disable=not progress or rank != 0, desc="training", unit="step")
    try:
        for x0, y in _batches(loader, n_epochs, conditional):
            micro.append((x0.to(device), y.to(device) if conditional else None))
            if len(micro) < grad_accum:
                continue
            optim.zero_grad(set_to_none=True)
            loss = _backward(ddpm, model, micro, p_uncond=p_uncond, generator=generator, rank=rank, world=world,
                             autocast=autocast)
            micro = []
            optimizer_step(ddpm, optim, ema=ema, grad_clip=grad_clip)
            if lr_scheduler is not None:
                lr_scheduler.step()
            done = ((max_steps is not None and len(losses) + 1 >= max_steps)
                    or (max_seconds is not None and time.perf_counter() - start >= max_seconds)
                    or (stop is not None and stop()))
            if world > 1:
                loss, done = _over_ranks(loss, done, device, world)
            losses.append(float(loss))
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
            if callback is not None:
                callback(len(losses), losses[-1])
            if done:
                break
        return losses
    finally:
        bar.close()
        for hook in hooks:
            hook.remove()
        ddpm.eval()


def train(ddpm, loader, n_epochs, optim, device, *, ema=None, grad_clip=1.0, lr_scheduler=None, callback=None,
          stop=None, max_steps=None, max_seconds=None, progress=True, generator=None, grad_accum=1, precision="fp32"):
    """Algorithm 1 for an unconditional model: n_epochs passes over `loader`. Returns the per-step losses.

    loader: yields batches of images x0 [B, C, H, W] in [-1, 1], or (x0, y) pairs (the labels are ignored).
    n_epochs: passes over the loader, or None to train until max_steps / max_seconds / stop.
    Keyword extras: ema (an EMA to update), grad_clip (max gradient norm; 0 = none), lr_scheduler (stepped
    after every optimizer step), callback(step, loss), stop() -> bool (checked after every step; the weights
    trained so far stay in `ddpm`), max_steps, max_seconds, progress (tqdm bar), generator (for t and eps),
    grad_accum (batches per optimizer step: their gradients are summed, weighted by size), precision ("fp32", or
    "bf16": the forward pass under torch.autocast in bfloat16, the weights and the optimizer in float32).
    Inside a torch.distributed process group (torchrun), every rank runs this on its share of the data and the
    gradients are averaged across ranks (DistributedDataParallel); see ddpm/distributed.py.
    """
    return _fit(ddpm, loader, n_epochs, optim, device, p_uncond=None, ema=ema, grad_clip=grad_clip,
                lr_scheduler=lr_scheduler, callback=callback, stop=stop, max_steps=max_steps, max_seconds=max_seconds,
                progress=progress, generator=generator, grad_accum=grad_accum, precision=precision)


def train_classconditional(ddpm, loader, n_epochs, optim, device, *, p_uncond=0.1, ema=None, grad_clip=1.0,
                           lr_scheduler=None, callback=None, stop=None, max_steps=None, max_seconds=None,
                           progress=True, generator=None, grad_accum=1, precision="fp32"):
    """Algorithm 1 with class labels: the loader yields (x0, y) pairs. Each label is replaced by the null class
    with probability p_uncond, so one network learns eps(x_t, t, y) and eps(x_t, t) for classifier-free
    guidance. Takes the same keyword extras as `train`."""
    if isinstance(p_uncond, bool) or not isinstance(p_uncond, (int, float)) or not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must lie in [0, 1], got {p_uncond!r}")
    return _fit(ddpm, loader, n_epochs, optim, device, p_uncond=p_uncond, ema=ema,
                grad_clip=grad_clip, lr_scheduler=lr_scheduler, callback=callback, stop=stop, max_steps=max_steps,
                max_seconds=max_seconds, progress=progress, generator=generator, grad_accum=grad_accum,
                precision=precision)
