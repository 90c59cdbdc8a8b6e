"""The sheet's functions as students write them: each catalogued mistake (some twice), and correct versions in
three styles. STUDENTS holds (mistake id, item, function, check_function keywords); CORRECT holds (item, function,
keywords) for implementations that must pass. Written the way the sheet's placeholders get filled, so each
function stands alone."""
import math

import numpy as np
import torch
import torch.nn.functional as F

import ddpm as dd

STUDENTS, CORRECT = [], []


def student(mistake, item=None, **kwargs):
    def register(fn):
        STUDENTS.append((mistake, item or fn.__name__.split("__")[0], fn, kwargs))
        return fn
    return register


def correct(item, **kwargs):
    def register(fn):
        CORRECT.append((item, fn, kwargs))
        return fn
    return register


# ---------------------------------------------------------------- sample_xt, Eq. (4)

@correct("sample_xt")
def sample_xt__torch(x0, t, epsilon, alphaBars):
    if epsilon is None:
        epsilon = torch.randn_like(x0)
    alpha_bar = alphaBars[t].view(-1, 1, 1, 1)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * epsilon


@correct("sample_xt")
def sample_xt__numpy(x0, t, epsilon, alphaBars):
    x0 = np.asarray(x0, dtype=np.float64)
    epsilon = np.random.standard_normal(x0.shape) if epsilon is None else np.asarray(epsilon, dtype=np.float64)
    a = np.asarray(alphaBars, dtype=np.float64)[np.asarray(t)]
    a = np.reshape(a, (-1,) + (1,) * (x0.ndim - 1))
    return np.sqrt(a) * x0 + np.sqrt(1 - a) * epsilon


@correct("sample_xt", t_base=1)
def sample_xt__one_based(x0, t, epsilon, alphaBars):
    """The paper's t in 1..T; alphaBars[0] belongs to t = 1."""
    if epsilon is None:
        epsilon = torch.randn_like(x0)
    alpha_bar = alphaBars[t - 1][:, None, None, None] if torch.as_tensor(t).dim() else alphaBars[t - 1]
    return torch.sqrt(alpha_bar) * x0 + torch.sqrt(1 - alpha_bar) * epsilon


@student("xt_no_sqrt")
def sample_xt__no_sqrt(x0, t, epsilon, alphaBars):
    a = alphaBars[t].view(-1, 1, 1, 1)
    return a * x0 + (1 - a) * epsilon


@student("xt_no_sqrt_signal")
def sample_xt__no_sqrt_signal(x0, t, epsilon, alphaBars):
    a = alphaBars[t].view(-1, 1, 1, 1)
    return a * x0 + torch.sqrt(1 - a) * epsilon


@student("xt_no_sqrt_noise")
def sample_xt__variance(x0, t, epsilon, alphaBars):
    a = alphaBars[t].view(-1, 1, 1, 1)
    return torch.sqrt(a) * x0 + (1 - a) * epsilon


@student("xt_swapped")
def sample_xt__swapped(x0, t, epsilon, alphaBars):
    a = alphaBars[t].reshape(-1, 1, 1, 1)
    return (1 - a).sqrt() * x0 + a.sqrt() * epsilon


@student("xt_unscaled_x0")
def sample_xt__unscaled(x0, t, epsilon, alphaBars):
    a = alphaBars[t].reshape(-1, 1, 1, 1)
    return x0 + (1 - a).sqrt() * epsilon


@student("xt_t_minus_one")
def sample_xt__paper_index(x0, t, epsilon, alphaBars):
    a = alphaBars[t - 1].view(-1, 1, 1, 1)          # "the paper counts from 1"
    return a.sqrt() * x0 + (1 - a).sqrt() * epsilon


@student("xt_t_plus_one")
def sample_xt__plus_one(x0, t, epsilon, alphaBars):
    a = alphaBars[t + 1].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * epsilon


@student("xt_broadcast")
def sample_xt__broadcast(x0, t, epsilon, alphaBars):
    return torch.sqrt(alphaBars[t]) * x0 + torch.sqrt(1 - alphaBars[t]) * epsilon


@student("xt_own_noise")
def sample_xt__own_noise(x0, t, epsilon, alphaBars):
    noise = torch.randn_like(x0)
    a = alphaBars[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


@student("xt_epsilon_none")
def sample_xt__no_none(x0, t, epsilon, alphaBars):
    a = alphaBars[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * epsilon


@student("xt_scalar_t")
def sample_xt__math(x0, t, epsilon, alphaBars):
    if epsilon is None:
        epsilon = torch.randn_like(x0)
    return math.sqrt(alphaBars[t]) * x0 + math.sqrt(1 - alphaBars[t]) * epsilon


# ---------------------------------------------------------------- sample, Algorithm 2

@correct("sample")
def sample__torch(ddpm, n_samples, classes=None):
    y = None if classes is None else torch.tensor(classes).repeat_interleave(n_samples)
    n = n_samples if y is None else len(y)
    s = ddpm.schedule
    x = torch.randn(n, *ddpm.sample_shape)
    for t in range(ddpm.T - 1, -1, -1):
        eps = ddpm.eps(x, torch.full((n,), t), y)
        z = torch.randn_like(x) if t > 0 else torch.zeros_like(x)
        x = 1 / torch.sqrt(s.alphas[t]) * (x - s.betas[t] / torch.sqrt(1 - s.alpha_bar[t]) * eps) + torch.sqrt(s.betas[t]) * z
    return x


@correct("sample")
def sample__numpy(ddpm, n_samples, classes=None):
    """Float64 NumPy; the network is called with tensors. sigma_t^2 = tilde(beta)_t, the paper's other choice."""
    betas, alphas, alpha_bar = (v.double().numpy() for v in (ddpm.schedule.betas, ddpm.schedule.alphas, ddpm.schedule.alpha_bar))
    y = None if classes is None else torch.tensor(np.repeat(classes, n_samples))
    n = n_samples if classes is None else n_samples * len(classes)
    x = np.random.standard_normal((n, *ddpm.sample_shape))
    for t in reversed(range(ddpm.T)):
        eps = ddpm.eps(torch.from_numpy(x), t, y).numpy()
        prev = alpha_bar[t - 1] if t > 0 else 1.0
        sigma = np.sqrt(betas[t] * (1 - prev) / (1 - alpha_bar[t]))
        z = np.random.standard_normal(x.shape) if t > 0 else 0.0
        x = (x - betas[t] / np.sqrt(1 - alpha_bar[t]) * eps) / np.sqrt(alphas[t]) + sigma * z
    return x


@correct("sample", t_base=1)
def sample__one_based(ddpm, n_samples, classes=None):
    """The paper's loop t = T, ..., 1; the arrays hold step t at index t - 1."""
    y = None if classes is None else torch.tensor(classes).repeat_interleave(n_samples)
    x = torch.randn(n_samples * (1 if classes is None else len(classes)), *ddpm.sample_shape)
    beta, alpha, alpha_bar = ddpm.schedule.betas, ddpm.schedule.alphas, ddpm.schedule.alpha_bar
    for t in range(ddpm.T, 0, -1):
        z = torch.randn_like(x) if t > 1 else 0
        eps = ddpm(x, torch.full((len(x),), t), y)
        x = (x - (1 - alpha[t - 1]) / (1 - alpha_bar[t - 1]).sqrt() * eps) / alpha[t - 1].sqrt() + beta[t - 1].sqrt() * z
    return x.clamp(-1, 1)


@correct("sample")
def sample__package(ddpm, n_samples, classes=None):
    return dd.sample(ddpm, n_samples, classes)


def _loop(ddpm, n_samples, classes, step, *, first=None, ts=None, labels=None):
    """The loop most students write, with one line (`step`) theirs."""
    grouped = None if classes is None else torch.tensor(classes).repeat_interleave(n_samples)
    y = labels(classes, n_samples) if labels else grouped
    n = n_samples if classes is None else n_samples * len(classes)
    x = first(n, ddpm) if first else torch.randn(n, *ddpm.sample_shape)
    for t in (ts(ddpm.T) if ts else range(ddpm.T - 1, -1, -1)):
        x = step(ddpm, x, t, ddpm.eps(x, torch.full((n,), t), y), ddpm.schedule)
    return x


def _noise(x, t):
    return torch.randn_like(x) if t > 0 else torch.zeros_like(x)


@student("sample_one_over_sqrt_alpha_bar")
def sample__one_over_sqrt_alpha_bar(ddpm, n_samples, classes=None):
    return _loop(ddpm, n_samples, classes, lambda m, x, t, eps, s: 1 / s.alpha_bar[t].sqrt() * (
        x - s.betas[t] / (1 - s.alpha_bar[t]).sqrt() * eps) + s.betas[t].sqrt() * _noise(x, t))


@student("sample_no_one_over_sqrt_alpha")
def sample__no_one_over_sqrt_alpha(ddpm, n_samples):
    s = ddpm.schedule
    x = torch.randn(n_samples, *ddpm.sample_shape)
    for t in range(ddpm.T - 1, -1, -1):
        eps = ddpm.eps(x, torch.full((n_samples,), t))
        z = torch.randn_like(x) if t > 0 else torch.zeros_like(x)
        x = x - s.betas[t] / torch.sqrt(1 - s.alpha_bar[t]) * eps + torch.sqrt(s.betas[t]) * z
    return x


@student("sample_eps_coef_no_sqrt")
def sample__eps_coef_no_sqrt(ddpm, n_samples, classes=None):
    return _loop(ddpm, n_samples, classes, lambda m, x, t, eps, s: 1 / s.alphas[t].sqrt() * (
        x - s.betas[t] / (1 - s.alpha_bar[t]) * eps) + s.betas[t].sqrt() * _noise(x, t))


@student("sample_eps_coef_alpha")
def sample__eps_coef_alpha(ddpm, n_samples, classes=None):
    return _loop(ddpm, n_samples, classes, lambda m, x, t, eps, s: 1 / s.alphas[t].sqrt() * (
        x - s.betas[t] / (1 - s.alphas[t]).sqrt() * eps) + s.betas[t].sqrt() * _noise(x, t))


@student("sample_eps_coef_one_minus_alpha_bar")
def sample__eps_coef_one_minus_alpha_bar(ddpm, n_samples, classes=None):
    return _loop(ddpm, n_samples, classes, lambda m, x, t, eps, s: 1 / s.alphas[t].sqrt() * (
        x - (1 - s.alpha_bar[t]) / (1 - s.alpha_bar[t]).sqrt() * eps) + s.betas[t].sqrt() * _noise(x, t))


@student("sample_sign_flipped")
def sample__sign_flipped(ddpm, n_samples, classes=None):
    return _loop(ddpm, n_samples, classes, lambda m, x, t, eps, s: 1 / s.alphas[t].sqrt() * (
        x + s.betas[t] / (1 - s.alpha_bar[t]).sqrt() * eps) + s.betas[t].sqrt() * _noise(x, t))


@student("sample_sigma_beta")
def sample__sigma_beta(ddpm, n_samples, classes=None):
    return _loop(ddpm, n_samples, classes, lambda m, x, t, eps, s: 1 / s.alphas[t].sqrt() * (
        x - s.betas[t] / (1 - s.alpha_bar[t]).sqrt() * eps) + s.betas[t] * _noise(x, t))


@student("sample_no_noise")
def sample__no_noise(ddpm, n_samples, classes=None):
    return _loop(ddpm, n_samples, classes, lambda m, x, t, eps, s: 1 / s.alphas[t].sqrt() * (
        x - s.betas[t] / (1 - s.alpha_bar[t]).sqrt() * eps))


@student("sample_noise_at_last_step")
def sample__noise_at_last_step(ddpm, n_samples, classes=None):
    return _loop(ddpm, n_samples, classes, lambda m, x, t, eps, s: 1 / s.alphas[t].sqrt() * (
        x - s.betas[t] / (1 - s.alpha_bar[t]).sqrt() * eps) + s.betas[t].sqrt() * torch.randn_like(x))


@student("sample_no_noise_at_t1")
def sample__paper_noise_rule(ddpm, n_samples, classes=None):
    def step(m, x, t, eps, s):
        z = torch.randn_like(x) if t > 1 else torch.zeros_like(x)       # Alg. 2: "if t > 1"
        return 1 / s.alphas[t].sqrt() * (x - s.betas[t] / (1 - s.alpha_bar[t]).sqrt() * eps) + s.betas[t].sqrt() * z
    return _loop(ddpm, n_samples, classes, step)


@student("sample_loop_T_to_1")
def sample__paper_loop(ddpm, n_samples):
    s = ddpm.schedule
    x = torch.randn(n_samples, *ddpm.sample_shape)
    for t in range(ddpm.T, 0, -1):
        z = torch.randn_like(x) if t > 1 else torch.zeros_like(x)
        eps = ddpm.eps(x, torch.full((n_samples,), t))
        x = 1 / s.alphas[t].sqrt() * (x - s.betas[t] / (1 - s.alpha_bar[t]).sqrt() * eps) + s.betas[t].sqrt() * z
    return x


@student("sample_loop_T_to_1")
def sample__paper_loop_schedule_shifted(ddpm, n_samples):
    s = ddpm.schedule
    x = torch.randn(n_samples, *ddpm.sample_shape)
    for t in range(ddpm.T, 0, -1):
        z = torch.randn_like(x) if t > 1 else torch.zeros_like(x)
        eps = ddpm.eps(x, torch.full((n_samples,), t))             # the network still gets the paper's t
        x = 1 / s.alphas[t - 1].sqrt() * (x - s.betas[t - 1] / (1 - s.alpha_bar[t - 1]).sqrt() * eps) + s.betas[t - 1].sqrt() * z
    return x


@student("sample_loop_skips_zero")
def sample__skips_zero(ddpm, n_samples, classes=None):
    def step(m, x, t, eps, s):
        return 1 / s.alphas[t].sqrt() * (x - s.betas[t] / (1 - s.alpha_bar[t]).sqrt() * eps) + s.betas[t].sqrt() * _noise(x, t)
    return _loop(ddpm, n_samples, classes, step, ts=lambda T: range(T - 1, 0, -1))


@student("sample_hardcoded_T")
def sample__thousand(ddpm, n_samples, classes=None):
    def step(m, x, t, eps, s):
        return 1 / s.alphas[t].sqrt() * (x - s.betas[t] / (1 - s.alpha_bar[t]).sqrt() * eps) + s.betas[t].sqrt() * _noise(x, t)
    return _loop(ddpm, n_samples, classes, step, ts=lambda T: range(999, -1, -1))


@student("sample_hardcoded_shape")
def sample__mnist_shape(ddpm, n_samples):
    s = ddpm.schedule
    x = torch.randn(n_samples, 1, 28, 28)
    for t in range(ddpm.T - 1, -1, -1):
        eps = ddpm.eps(x, torch.full((n_samples,), t))
        z = torch.randn_like(x) if t > 0 else torch.zeros_like(x)
        x = 1 / s.alphas[t].sqrt() * (x - s.betas[t] / (1 - s.alpha_bar[t]).sqrt() * eps) + s.betas[t].sqrt() * z
    return x


@student("sample_noise_reused")
def sample__noise_once(ddpm, n_samples):
    s = ddpm.schedule
    x = torch.randn(n_samples, *ddpm.sample_shape)
    z = torch.randn_like(x)
    for t in range(ddpm.T - 1, -1, -1):
        eps = ddpm.eps(x, torch.full((n_samples,), t))
        x = 1 / s.alphas[t].sqrt() * (x - s.betas[t] / (1 - s.alpha_bar[t]).sqrt() * eps)
        if t > 0:
            x = x + s.betas[t].sqrt() * z
    return x


@student("sample_x_T_uniform")
def sample__uniform_start(ddpm, n_samples, classes=None):
    def step(m, x, t, eps, s):
        return 1 / s.alphas[t].sqrt() * (x - s.betas[t] / (1 - s.alpha_bar[t]).sqrt() * eps) + s.betas[t].sqrt() * _noise(x, t)
    return _loop(ddpm, n_samples, classes, step, first=lambda n, m: torch.rand(n, *m.sample_shape))


@student("sample_output_unit_range")
def sample__unit_range(ddpm, n_samples, classes=None):
    x = sample__torch(ddpm, n_samples, classes)
    return (x.clamp(-1, 1) + 1) / 2


@student("sample_classes_tiled")
def sample__tiled(ddpm, n_samples, classes=None):
    def step(m, x, t, eps, s):
        return 1 / s.alphas[t].sqrt() * (x - s.betas[t] / (1 - s.alpha_bar[t]).sqrt() * eps) + s.betas[t].sqrt() * _noise(x, t)
    return _loop(ddpm, n_samples, classes, step,
                 labels=lambda c, n: None if c is None else torch.tensor(c).repeat(n))


@student("sample_classes_ignored")
def sample__ignores_classes(ddpm, n_samples, classes=None):
    n = n_samples * (1 if classes is None else len(classes))
    s = ddpm.schedule
    x = torch.randn(n, *ddpm.sample_shape)
    for t in range(ddpm.T - 1, -1, -1):
        eps = ddpm.eps(x, torch.full((n,), t))
        z = torch.randn_like(x) if t > 0 else torch.zeros_like(x)
        x = 1 / s.alphas[t].sqrt() * (x - s.betas[t] / (1 - s.alpha_bar[t]).sqrt() * eps) + s.betas[t].sqrt() * z
    return x


# one step of Algorithm 2 on the upload challenge: step(x_t, t, eps, z, betas, alphas, alpha_bar) -> x_{t-1}
UPLOAD_STEPS = []


def upload_step(mistake):
    def register(fn):
        UPLOAD_STEPS.append((mistake, fn))
        return fn
    return register


@upload_step(None)
def step__right(x_t, t, eps, z, betas, alphas, alpha_bar):
    mean = (x_t - betas[t] / np.sqrt(1 - alpha_bar[t]) * eps) / np.sqrt(alphas[t])
    return mean + np.sqrt(betas[t]) * z * (t > 0)


@upload_step("sample_own_noise")
def step__own_noise(x_t, t, eps, z, betas, alphas, alpha_bar):
    mean = (x_t - betas[t] / np.sqrt(1 - alpha_bar[t]) * eps) / np.sqrt(alphas[t])
    return mean + np.sqrt(betas[t]) * np.random.default_rng(int(t)).standard_normal(x_t.shape) * (t > 0)


@upload_step("sample_sigma_beta")
def step__sigma_beta(x_t, t, eps, z, betas, alphas, alpha_bar):
    mean = (x_t - betas[t] / np.sqrt(1 - alpha_bar[t]) * eps) / np.sqrt(alphas[t])
    return mean + betas[t] * z * (t > 0)


@upload_step("sample_one_over_sqrt_alpha_bar")
def step__alpha_bar(x_t, t, eps, z, betas, alphas, alpha_bar):
    mean = (x_t - betas[t] / np.sqrt(1 - alpha_bar[t]) * eps) / np.sqrt(alpha_bar[t])
    return mean + np.sqrt(betas[t]) * z * (t > 0)


@upload_step("sample_noise_at_last_step")
def step__last_noise(x_t, t, eps, z, betas, alphas, alpha_bar):
    mean = (x_t - betas[t] / np.sqrt(1 - alpha_bar[t]) * eps) / np.sqrt(alphas[t])
    return mean + np.sqrt(betas[t]) * z


# ---------------------------------------------------------------- train, Algorithm 1

def _alg1(ddpm, loader, n_epochs, optim, *, draw_t=None, noise=torch.randn_like, forward=None, target=None,
          labels=None, order="zero-backward-step"):
    """The training loop most students write; keyword arguments swap in their own line."""
    for _ in range(n_epochs):
        for x0, y in loader:
            t = draw_t(ddpm, len(x0)) if draw_t else torch.randint(0, ddpm.T, (len(x0),))
            eps = noise(x0)
            x_t = forward(ddpm, x0, t, eps) if forward else dd.sample_xt(x0, t, eps, ddpm.schedule.alpha_bar)
            y = labels(ddpm, y) if labels else None
            pred = ddpm.eps(x_t, t, y)
            loss = F.mse_loss(pred, target(x0, eps) if target else eps)
            if order == "zero-backward-step":
                optim.zero_grad()
                loss.backward()
                optim.step()
            elif order == "backward-step":
                loss.backward()
                optim.step()
            elif order == "backward-zero-step":
                loss.backward()
                optim.zero_grad()
                optim.step()
            elif order == "zero-backward":
                optim.zero_grad()
                loss.backward()
            elif order == "zero-step":
                optim.zero_grad()
                optim.step()


@correct("train")
def train__torch(ddpm, loader, n_epochs, optim, device):
    ddpm.train()
    for _epoch in range(n_epochs):
        for x0, _ in loader:
            x0 = x0.to(device)
            t = torch.randint(0, ddpm.T, (x0.shape[0],), device=device)
            eps = torch.randn_like(x0)
            alpha_bar = ddpm.schedule.alpha_bar[t].view(-1, 1, 1, 1)
            x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
            loss = ((ddpm.net(x_t, t) - eps) ** 2).sum(dim=(1, 2, 3)).mean()
            optim.zero_grad()
            loss.backward()
            optim.step()


@correct("train")
def train__package(ddpm, loader, n_epochs, optim, device):
    dd.train(ddpm, loader, n_epochs, optim, device, progress=False)


@correct("train", t_base=1)
def train__one_based(ddpm, loader, n_epochs, optim, device):
    """The paper's t ~ Uniform({1, ..., T}); the schedule's arrays hold step t at index t - 1."""
    for _ in range(n_epochs):
        for batch in loader:
            x0 = batch[0]
            t = torch.randint(1, ddpm.T + 1, (len(x0),))
            eps = torch.randn(x0.shape)
            a = ddpm.schedule.alpha_bar[t - 1][:, None, None, None]
            loss = F.mse_loss(ddpm(a.sqrt() * x0 + (1 - a).sqrt() * eps, t), eps)
            ddpm.zero_grad()
            loss.backward()
            optim.step()


@student("train_loss_x0")
def train__x0_target(ddpm, loader, n_epochs, optim, device):
    _alg1(ddpm, loader, n_epochs, optim, target=lambda x0, eps: x0)


@student("train_t_from_one")
def train__t_one_to_T(ddpm, loader, n_epochs, optim, device):
    _alg1(ddpm, loader, n_epochs, optim, draw_t=lambda m, n: torch.randint(1, m.T + 1, (n,)))


@student("train_t_from_one")
def train__t_one_to_T_minus_1(ddpm, loader, n_epochs, optim, device):
    _alg1(ddpm, loader, n_epochs, optim, draw_t=lambda m, n: torch.randint(1, m.T, (n,)))


@student("train_t_excludes_last")
def train__t_upper_bound(ddpm, loader, n_epochs, optim, device):
    _alg1(ddpm, loader, n_epochs, optim, draw_t=lambda m, n: torch.randint(0, m.T - 1, (n,)))


@student("train_hardcoded_T")
def train__thousand(ddpm, loader, n_epochs, optim, device):
    _alg1(ddpm, loader, n_epochs, optim, draw_t=lambda m, n: torch.randint(0, 1000, (n,)))


@student("train_no_zero_grad")
def train__no_zero_grad(ddpm, loader, n_epochs, optim, device):
    _alg1(ddpm, loader, n_epochs, optim, order="backward-step")


@student("train_zero_grad_after_backward")
def train__zero_grad_late(ddpm, loader, n_epochs, optim, device):
    _alg1(ddpm, loader, n_epochs, optim, order="backward-zero-step")


@student("train_no_step")
def train__no_step(ddpm, loader, n_epochs, optim, device):
    _alg1(ddpm, loader, n_epochs, optim, order="zero-backward")


@student("train_no_backward")
def train__no_backward(ddpm, loader, n_epochs, optim, device):
    _alg1(ddpm, loader, n_epochs, optim, order="zero-step")


@student("train_fresh_eps")
def train__second_noise(ddpm, loader, n_epochs, optim, device):
    _alg1(ddpm, loader, n_epochs, optim, target=lambda x0, eps: torch.randn_like(x0))


@student("train_rand_noise")
def train__uniform_noise(ddpm, loader, n_epochs, optim, device):
    _alg1(ddpm, loader, n_epochs, optim, noise=torch.rand_like)


@student("train_alpha_for_alpha_bar")
def train__alphas(ddpm, loader, n_epochs, optim, device):
    _alg1(ddpm, loader, n_epochs, optim, forward=lambda m, x0, t, eps: dd.sample_xt(x0, t, eps, m.schedule.alphas))


@student("train_no_sqrt")
def train__no_sqrt(ddpm, loader, n_epochs, optim, device):
    def forward(m, x0, t, eps):
        a = m.schedule.alpha_bar[t].view(-1, 1, 1, 1)
        return a * x0 + (1 - a) * eps
    _alg1(ddpm, loader, n_epochs, optim, forward=forward)


@student("train_x0_rescaled")
def train__to_minus_one_one(ddpm, loader, n_epochs, optim, device):
    def forward(m, x0, t, eps):
        x0 = x0 * 2 - 1                       # "images are in [0, 1]"
        a = m.schedule.alpha_bar[t].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * eps
    _alg1(ddpm, loader, n_epochs, optim, forward=forward)


@student("train_x0_rescaled")
def train__to_unit(ddpm, loader, n_epochs, optim, device):
    def forward(m, x0, t, eps):
        x0 = (x0 + 1) / 2
        a = m.schedule.alpha_bar[t].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * eps
    _alg1(ddpm, loader, n_epochs, optim, forward=forward)


@student("train_cumsum")
def train__cumsum(ddpm, loader, n_epochs, optim, device):
    def forward(m, x0, t, eps):
        alpha_bar = torch.cumsum(m.schedule.alphas, 0)
        a = alpha_bar[t].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * eps
    _alg1(ddpm, loader, n_epochs, optim, forward=forward)


# ---------------------------------------------------------------- train_classconditional

def _drop(p):
    return lambda m, y: torch.where(torch.rand(len(y)) < p, torch.full_like(y, m.null_class), y)


@correct("train_classconditional")
def train_classconditional__torch(ddpm, loader, n_epochs, optim, device):
    _alg1(ddpm, loader, n_epochs, optim, labels=_drop(0.1))


@correct("train_classconditional")
def train_classconditional__package(ddpm, loader, n_epochs, optim, device):
    dd.train_classconditional(ddpm, loader, n_epochs, optim, device, progress=False)


@correct("train_classconditional", t_base=1)
def train_classconditional__one_based(ddpm, loader, n_epochs, optim, device):
    """Whole batches dropped to the null class (y = None) one time in five; the paper's t = 1..T."""
    for _ in range(n_epochs):
        for x0, y in loader:
            if torch.rand(()) < 0.2:
                y = None
            t = torch.randint(1, ddpm.T + 1, (len(x0),))
            eps = torch.randn_like(x0)
            x_t = dd.sample_xt(x0, t - 1, eps, ddpm.schedule.alpha_bar)
            loss = F.mse_loss(ddpm.eps(x_t, t, y), eps)
            optim.zero_grad()
            loss.backward()
            optim.step()


@student("train_cond_labels_not_passed")
def train_classconditional__no_labels(ddpm, loader, n_epochs, optim, device):
    _alg1(ddpm, loader, n_epochs, optim)


@student("train_cond_no_null")
def train_classconditional__never_dropped(ddpm, loader, n_epochs, optim, device):
    _alg1(ddpm, loader, n_epochs, optim, labels=lambda m, y: y)


@student("train_cond_wrong_null")
def train_classconditional__drop_to_zero(ddpm, loader, n_epochs, optim, device):
    _alg1(ddpm, loader, n_epochs, optim, labels=lambda m, y: torch.where(torch.rand(len(y)) < 0.1, torch.zeros_like(y), y))


@student("train_cond_wrong_null")
def train_classconditional__drop_to_minus_one(ddpm, loader, n_epochs, optim, device):
    def labels(m, y):
        y = y.clone()
        y[torch.rand(len(y)) < 0.1] = -1
        return y
    _alg1(ddpm, loader, n_epochs, optim, labels=labels)


@student("train_cond_drop_inverted")
def train_classconditional__inverted(ddpm, loader, n_epochs, optim, device):
    def labels(m, y):
        keep = torch.rand(len(y)) < 0.1
        y = y.clone()
        y[~keep] = m.null_class
        return y
    _alg1(ddpm, loader, n_epochs, optim, labels=labels)
