"""The forward process q and the DDPM object: a noise schedule plus the network eps_theta.

The process is not the network: the functions here take `alpha_bar` (or a schedule) as an argument,
and `DDPM` only bundles a schedule, an eps-network and the metadata needed to rebuild both.
Time-index convention: see ddpm/schedule.py (t in {0..T-1}, alpha_bar_prev(0) = 1).
"""
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .schedule import NoiseSchedule
from .unet import UNet2D


def _gather(values, t, x):
    """values[t] reshaped to broadcast against a batch x of shape [B, C, H, W]."""
    return values.to(x.device)[t].view(-1, *([1] * (x.dim() - 1)))


def sample_xt(x0, t, epsilon, alphaBars, *, generator=None):
    """Sample from q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I), Eq. (4).

    x0: [B, C, H, W] clean images in [-1, 1]; t: [B] integer steps in {0..T-1};
    epsilon: noise of x0's shape, or None to draw it (from `generator`); alphaBars: [T].
    """
    t = torch.as_tensor(t, device=x0.device)
    if t.dim() == 0:
        t = t.expand(x0.shape[0])
    T = len(alphaBars)
    if t.is_floating_point() or int(t.min()) < 0 or int(t.max()) >= T:
        raise ValueError(f"t must be integer steps in [0, {T}), got {t.tolist()}")
    if t.shape[0] != x0.shape[0]:
        raise ValueError(f"t has {t.shape[0]} entries but x0 holds {x0.shape[0]} images")
    if epsilon is None:
        epsilon = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    elif epsilon.shape != x0.shape:
        raise ValueError(f"epsilon has shape {tuple(epsilon.shape)}, x0 has {tuple(x0.shape)}: they must match")
    alpha_bar = _gather(alphaBars, t, x0)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * epsilon  # Eq. (4)


def predict_x0_from_eps(x_t, t, eps, alpha_bar):
    """Invert Eq. (4): x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
    a = _gather(alpha_bar, t, x_t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def q_posterior(x0, x_t, t, schedule):
    """Mean and variance of q(x_{t-1} | x_t, x_0) = N(tilde(mu)_t, tilde(beta)_t I), Eqs. (6)-(7)."""
    mean = _gather(schedule.posterior_mean_coef1, t, x_t) * x0 + _gather(schedule.posterior_mean_coef2, t, x_t) * x_t
    return mean, _gather(schedule.posterior_variance, t, x_t)


class DDPM(nn.Module, PyTorchModelHubMixin, library_name="ddpm", repo_url=None):
    """A diffusion model: noise schedule + eps-network + what is needed to rebuild it.

    `save_pretrained(dir)` writes model.safetensors and config.json (every __init__ argument);
    `DDPM.from_pretrained(dir_or_hub_id)` rebuilds it (see ddpm/checkpoint.py for the checks).
    Classes: labels 0..num_classes-1; label `num_classes` is the *null* class used for
    unconditional prediction and classifier-free guidance.
    """

    def __init__(self, image_size=28, in_channels=1, num_classes=None, class_names=None,
                 schedule="linear", T=1000, beta_start=1e-4, beta_end=0.02, net=None, dataset=None):
        super().__init__()
        if class_names is not None and num_classes is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names given for num_classes={num_classes}")
        self.image_size, self.in_channels = image_size, in_channels
        self.num_classes, self.class_names, self.dataset = num_classes, class_names, dataset
        self.schedule = NoiseSchedule(schedule, T, beta_start, beta_end)
        self.net = UNet2D(in_channels=in_channels, num_classes=num_classes, **(net or {}))
        if image_size % self.net.size_divisor:
            raise ValueError(f"image_size {image_size} does not fit this network: it must be a multiple of "
                             f"{self.net.size_divisor} (patch_size x 2 per downsampling)")

    @property
    def T(self):
        return self.schedule.T

    @property
    def image_shape(self):
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def null_class(self):
        return self.num_classes

    @property
    def device(self):
        return next(self.parameters()).device

    def check_images(self, x):
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"images must have shape [B, {', '.join(map(str, self.image_shape))}], got {tuple(x.shape)}")

    def check_classes(self, y):
        """Raise unless every label is a class of this model (or its null class, `num_classes`)."""
        if y is None:
            return
        if self.num_classes is None:
            raise ValueError("this model is unconditional: it takes no class labels")
        y = torch.as_tensor(y)
        if y.numel() and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
            raise ValueError(f"class labels must lie in [0, {self.num_classes}) (or {self.num_classes} for "
                             f"the null class), got {sorted(set(y.flatten().tolist()))}")

    def eps(self, x_t, t, y=None):
        """eps_theta(x_t, t, y); y = None means the null class for a conditional model."""
        if y is None and self.num_classes is not None:
            y = torch.full((x_t.shape[0],), self.null_class, device=x_t.device, dtype=torch.long)
        return self.net(x_t, t, y)

    def loss(self, x0, y=None, *, generator=None):
        """Algorithm 1, lines 2-5: the simple loss || eps - eps_theta(x_t, t) ||^2 for a batch x0."""
        self.check_images(x0)
        self.check_classes(y)
        t = torch.randint(0, self.T, (x0.shape[0],), device=x0.device, generator=generator)   # Alg. 1, line 3
        eps = torch.randn(x0.shape, device=x0.device, generator=generator)                     # Alg. 1, line 4
        x_t = sample_xt(x0, t, eps, self.schedule.alpha_bar)
        return F.mse_loss(self.eps(x_t, t, y), eps)                                            # Alg. 1, line 5

    @classmethod
    def _from_pretrained(cls, *, model_id, revision=None, cache_dir=None, force_download=False,
                         local_files_only=False, token=None, map_location="cpu", strict=True, **model_kwargs):
        """Called by `from_pretrained` with the config already read: load model.safetensors only, strictly."""
        from .checkpoint import load_weights, weights_path
        model = cls(**model_kwargs)
        path = weights_path(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                            local_files_only=local_files_only, token=token)
        load_weights(model, path, device=map_location)
        return model.eval()
