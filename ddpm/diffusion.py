"""The forward process q and the DDPM object: a noise schedule plus the network eps_theta.

The process is not the network: the functions here take `alpha_bar` (or a schedule) as an argument,
and `DDPM` only bundles a schedule, an eps-network and the metadata needed to rebuild both.
Time-index convention: see ddpm/schedule.py (t in {0..T-1}, alpha_bar_prev(0) = 1).
Images are float tensors [B, C, H, W] with values in [-1, 1] (ddpm.data.to_unit_range makes them from uint8).
"""
import copy
import inspect
import os
import warnings

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .checkpoint import (CheckpointError, load_weights, missing_folder, model_card, read_config, weights_path,
                         write_model_card)
from .diffusers_models import read_diffusers, unet_folder
from .mlp import MLP
from .schedule import NoiseSchedule, check_t
from .unet import UNet2D, default_net


def _gather(values, t, x):
    """values[t] reshaped to broadcast against a batch x of shape [B, C, H, W]."""
    return values.to(x.device)[t].view(-1, *([1] * (x.dim() - 1)))


def check_image_range(x, name="x0"):
    """Raise a ValueError unless x holds float images in [-1, 1], the range every model here is trained on:
    uint8 pixels (0..255) and [0, 1] images are the usual mistakes, and both train a model silently wrong."""
    if not torch.is_tensor(x) or not x.is_floating_point():
        kind = x.dtype if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{name} must be a float tensor of images in [-1, 1], got {kind}; "
                         "for uint8 pixels use ddpm.data.to_unit_range(images) (x / 127.5 - 1)")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.001 or hi > 1.001:
        raise ValueError(f"{name} must lie in [-1, 1], got values from {lo:.4g} to {hi:.4g}"
                         + ("; uint8-like pixels: use x / 127.5 - 1" if hi > 2 else ""))
    if lo >= 0 and x.dim() == 4 and bool((x != x[:1]).any()):       # several different images, none with a negative pixel
        raise ValueError(f"{name} looks like images in [0, 1] (values from {lo:.4g} to {hi:.4g}, none negative); "
                         "this package works in [-1, 1]: use x * 2 - 1")


def sample_xt(x0, t, epsilon, alphaBars, *, generator=None):
    """Sample from q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I), Eq. (4).

    x0: [B, C, H, W] clean images in [-1, 1] (or [B, D] vectors); t: [B] integer steps in {0..T-1} (or one for all);
    epsilon: noise of x0's shape, or None to draw it (from `generator`); alphaBars: [T], e.g.
    `ddpm.schedule.alpha_bar` or `NoiseSchedule("linear", 1000).alpha_bar`.
    """
    if x0.dim() == 4:                       # images; other data (points of the playground) has no fixed range
        check_image_range(x0)
    alphaBars = torch.as_tensor(alphaBars, dtype=x0.dtype, device=x0.device)      # a tensor, an array or a list
    t = check_t(t, len(alphaBars)).to(x0.device)
    if t.dim() == 0:
        t = t.expand(x0.shape[0])
    if x0.dim() == 3 and t.shape[0] > 1:      # one t per image: a batch [B, H, W] that lost its channel axis
        raise ValueError(f"x0 has shape {tuple(x0.shape)} with {t.shape[0]} steps t: an image batch needs its channel "
                         "dimension, [B, C, H, W]; for grey-scale images use x0.unsqueeze(1)")
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


class ScheduleWarning(UserWarning):
    """A schedule whose last step is not noise: samples started from pure noise come out as texture."""


def _warn_if_not_noise(schedule, name, T, beta_start, beta_end, limit=0.01):
    """Warn, with the fix, when bar(alpha)_{T-1} > limit: x_{T-1} then still holds the image, and Algorithm 2, which
    starts from N(0, I), starts from something the network never saw (the linear betas 1e-4..0.02 need T ~ 1000)."""
    alpha_bar = float(schedule.alpha_bar[-1])
    if alpha_bar <= limit:
        return
    fix = (f"scale the betas by 1000 / T: beta_start={beta_start * 1000 / T:g}, beta_end={beta_end * 1000 / T:g}"
           if name != "cosine" and T < 1000 else "raise beta_end")
    warnings.warn(f"with schedule={name!r}, T={T} and betas {beta_start:g}..{beta_end:g}, alpha_bar at t = T-1 is "
                  f"{alpha_bar:.3g}: x_(T-1) keeps sqrt(alpha_bar) = {alpha_bar ** 0.5:.2f} of the image and is not noise, "
                  f"so samples drawn from pure noise come out as texture. Fix: {fix}, or use schedule='cosine'",
                  ScheduleWarning, stacklevel=3)


class DDPM(nn.Module, PyTorchModelHubMixin, library_name="ddpm", repo_url=None):
    """A diffusion model: a noise schedule, the network eps_theta(x_t, t, y), and what rebuilds both.

    Arguments (all are stored in config.json by `save_pretrained`):
        image_size:   side of the square images, e.g. 28 (MNIST) or 32 (CIFAR)
        in_channels:  1 for grey-scale, 3 for RGB
        num_classes:  number of classes for a class-conditional model, None for an unconditional one.
                      Labels are 0..num_classes-1; label `num_classes` is the *null* class that
                      classifier-free guidance uses for the unconditional prediction
        class_names:  optional names of the classes (len == num_classes), shown by the app and the CLI
        schedule:     "linear" (Ho et al.), "cosine" (Nichol & Dhariwal) or "sigmoid"; see ddpm/schedule.py
        T:            number of diffusion steps. With the linear schedule's default betas, x_T is pure noise
                      only for T around 1000: at T = 100 alpha_bar_T is still 0.36 (scale the betas by 1000 / T
                      or take the cosine schedule)
        beta_start, beta_end: first and last beta of the linear and sigmoid schedules, each in (0, 1)
        net:          the network: a `UNet2D` module, or a dict of UNet2D settings (e.g. ddpm.unet.FULL_RES);
                      None takes ddpm.unet.default_net(image_size), the CLI's default (PATCH2 for 28x28).
                      in_channels and num_classes come from the arguments above.
                      With data_dim: an `MLP` module or a dict of its settings (width, depth, emb_channels)
        dataset:      name of the training set ("mnist", ...), for the model card and the evaluation
        data_dim:     None for images; a number D for data that are vectors of D numbers (2: points in the
                      plane, as in the app's playground). image_size and in_channels are then unused

    `save_pretrained(dir)` writes model.safetensors and config.json; `load_model(dir_or_hub_id)` (or
    `DDPM.from_pretrained`) rebuilds it. `config` holds these arguments as config.json does.
    """

    def __init__(self, image_size=28, in_channels=1, num_classes=None, class_names=None,
                 schedule="linear", T=1000, beta_start=1e-4, beta_end=0.02, net=None, dataset=None, data_dim=None):
        super().__init__()
        if class_names is not None and (num_classes is None or len(class_names) != num_classes):
            raise ValueError(f"{len(class_names)} class_names given for num_classes={num_classes}")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(f"num_classes must be an integer >= 1 (or None: unconditional), got {num_classes!r}")
        self.image_size, self.in_channels = image_size, in_channels
        self.num_classes, self.class_names, self.dataset, self.data_dim = num_classes, class_names, dataset, data_dim
        self.schedule = NoiseSchedule(schedule, T, beta_start, beta_end)
        _warn_if_not_noise(self.schedule, schedule, T, beta_start, beta_end)
        if data_dim is not None:
            self.net = self._vector_net(net, data_dim, num_classes)
            self._hub_mixin_config["net"] = self.net.config
            return
        if isinstance(net, nn.Module) and hasattr(net, "in_channels") and hasattr(net, "size_divisor"):
            # a UNet2D, or another image network with the same interface (ddpm.diffusers_models.DiffusersUNet)
            if (net.in_channels, net.num_classes) != (in_channels, num_classes):
                raise ValueError(f"the {type(net).__name__} given as net has in_channels={net.in_channels}, num_classes="
                                 f"{net.num_classes}; this DDPM has in_channels={in_channels}, num_classes={num_classes}")
            self.net = net
        elif net is None or isinstance(net, dict):
            net = default_net(image_size) if net is None else net
            self.net = UNet2D(in_channels=in_channels, num_classes=num_classes, **net)
        else:
            raise ValueError(f"net must be a UNet2D or a dict of its settings, got {type(net).__name__}")
        if image_size % self.net.size_divisor:
            raise ValueError(f"image_size {image_size} does not fit this network: it must be a multiple of "
                             f"{self.net.size_divisor} (patch_size x 2 per downsampling)")
        # config.json holds the network's full settings, also when a module was passed (None: not ours to save)
        self._hub_mixin_config["net"] = self.net.config

    def save_pretrained(self, save_directory, **kwargs):
        """model.safetensors + config.json (PyTorchModelHubMixin); refused for a network that is not this package's."""
        if self.net.config is None:
            raise ValueError(f"this DDPM's network is a {type(self.net).__name__} from another library; save it with "
                             "that library (e.g. diffusers' save_pretrained), not as a ddpm checkpoint")
        out = super().save_pretrained(save_directory, **kwargs)
        write_model_card(os.fspath(save_directory), self)          # data, recipe, steps, wall time, scores when known
        return out

    def push_to_hub(self, repo_id, **kwargs):
        """save_pretrained into a temporary folder and upload it (huggingface_hub); the card names `repo_id`."""
        self.hub_id = repo_id
        try:
            return super().push_to_hub(repo_id, **kwargs)
        finally:
            del self.hub_id

    def generate_model_card(self, *args, **kwargs):
        """The model card that huggingface_hub's save_pretrained / push_to_hub write (see checkpoint.model_card)."""
        return model_card(self)

    @staticmethod
    def _vector_net(net, data_dim, num_classes):
        if isinstance(data_dim, bool) or not isinstance(data_dim, int) or data_dim < 1:
            raise ValueError(f"data_dim must be an integer >= 1 (or None for images), got {data_dim!r}")
        if isinstance(net, MLP):
            if (net.dim, net.num_classes) != (data_dim, num_classes):
                raise ValueError(f"the MLP given as net has dim={net.dim}, num_classes={net.num_classes}; this DDPM "
                                 f"has data_dim={data_dim}, num_classes={num_classes}")
            return net
        if net is None or isinstance(net, dict):
            return MLP(dim=data_dim, num_classes=num_classes, **(net or {}))
        raise ValueError(f"with data_dim, net must be an MLP or a dict of its settings, got {type(net).__name__}")

    @property
    def config(self):
        """The arguments that build this model, as config.json holds them: a plain dict, a copy (changing it changes
        nothing here). `DDPM(**ddpm.config)` is the same model with fresh weights; "net" is the network's settings,
        or None for a network of another library (a diffusers UNet), which they cannot rebuild."""
        return copy.deepcopy(dict(self._hub_mixin_config))

    @property
    def T(self):
        return self.schedule.T

    variance = "beta"        # the default sigma_t^2 of Algorithm 2 for this model (a diffusers model brings its own)

    @property
    def image_shape(self):
        """The same as sample_shape (its name before 2-D data): (C, H, W) for images."""
        return self.sample_shape

    @property
    def sample_shape(self):
        """The shape of one sample: (C, H, W) for images, (data_dim,) for vectors."""
        return (self.data_dim,) if self.data_dim is not None else (self.in_channels, self.image_size, self.image_size)

    @property
    def null_class(self):
        return self.num_classes

    @property
    def device(self):
        return next(self.parameters()).device

    def check_images(self, x):
        """Raise unless x is a batch of this model's samples, [B, *sample_shape]."""
        if not torch.is_tensor(x) or tuple(x.shape[1:]) != self.sample_shape or x.dim() != len(self.sample_shape) + 1:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            what = "images" if self.data_dim is None else "samples"
            no_channel = torch.is_tensor(x) and self.data_dim is None and tuple(x.shape[1:]) == self.sample_shape[1:]
            raise ValueError(f"{what} must have shape [B, {', '.join(map(str, self.sample_shape))}], got {shape}"
                             + ("; the batch lacks its channel dimension: use x.unsqueeze(1)" if no_channel else ""))

    def check_classes(self, y):
        """Raise unless every label is a class of this model (or its null class, `num_classes`)."""
        if y is None:
            return
        if self.num_classes is None:
            raise ValueError("this model is unconditional: it takes no class labels")
        y = torch.as_tensor(y)
        if y.is_floating_point() and y.dim() == 2:            # class weights: a mixture of class embeddings
            sums_to_one = torch.allclose(y.sum(1), torch.ones(len(y), device=y.device))
            if y.shape[1] != self.num_classes + 1 or (y < 0).any() or not sums_to_one:
                raise ValueError(f"class weights must be [B, {self.num_classes + 1}] (the classes and the null class), "
                                 f"non-negative, each row summing to 1; got shape {tuple(y.shape)}")
            return
        if y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(f"class labels must be integers, got a {y.dtype} tensor")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
            raise ValueError(f"class labels must lie in [0, {self.num_classes}) (or {self.num_classes} for "
                             f"the null class), got {sorted(set(y.flatten().tolist()))}")

    def eps(self, x_t, t, y=None):
        """eps_theta(x_t, t, y); y = None means the null class for a conditional model."""
        if not torch.is_tensor(x_t) or x_t.dim() != len(self.sample_shape) + 1:   # the network's error would not say why
            self.check_images(x_t)
        if y is None and self.num_classes is not None:
            y = torch.full((x_t.shape[0],), self.null_class, device=x_t.device, dtype=torch.long)
        return self.net(x_t, t, y)

    def loss(self, x0, y=None, *, generator=None, t=None, eps=None):
        """Algorithm 1, lines 2-5: the simple loss || eps - eps_theta(x_t, t) ||^2 for a batch x0.
        t and eps are drawn here unless given (a distributed run draws them for its global batch)."""
        self.check_images(x0)
        self.check_classes(y)
        if t is None:
            t = torch.randint(0, self.T, (x0.shape[0],), device=x0.device, generator=generator)   # Alg. 1, line 3
        if eps is None:
            eps = torch.randn(x0.shape, device=x0.device, generator=generator)                     # Alg. 1, line 4
        x_t = sample_xt(x0, t, eps, self.schedule.alpha_bar)
        return F.mse_loss(self.eps(x_t, t, y), eps)                                            # Alg. 1, line 5

    @classmethod
    def _from_pretrained(cls, *, model_id, revision=None, cache_dir=None, force_download=False,
                         local_files_only=False, token=None, map_location="cpu", strict=True, **model_kwargs):
        """Called by `from_pretrained` with the config already read: load model.safetensors only, strictly."""
        model = cls(**model_kwargs)
        path = weights_path(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                            local_files_only=local_files_only, token=token)
        load_weights(model, path, device=map_location)
        return model.eval()


def load_model(model_id, device="cpu", *, names=()):
    """A DDPM from a checkpoint folder, a diffusers UNet2DModel / DDPMPipeline folder, or a Hub repo id, in eval
    mode, with a clear error for anything missing or foreign (no config.json, a config of another library,
    weights that do not fit; a folder that is not there: "no such folder", naming the closest folder or name in `names`)."""
    model_id = os.fspath(model_id)
    if not model_id.strip():
        raise CheckpointError("the model id is empty: give a folder (e.g. runs/mnist), a bundled name or a Hub repo id "
                              "(owner/name)")
    if os.path.isdir(model_id) and unet_folder(model_id) is not None:      # a diffusers UNet2DModel / DDPMPipeline
        net, arguments, variance = read_diffusers(model_id)
        model = DDPM(net=net, **arguments).to(device).eval()
        model.variance = variance                     # the scheduler's variance_type, as our variance name
        return model
    if os.path.isdir(model_id):
        # from_pretrained silently drops keys DDPM does not take: a foreign config must not load quietly
        read_config(model_id, set(inspect.signature(DDPM.__init__).parameters) - {"self"}, what="DDPM")
    elif os.path.exists(model_id):
        raise CheckpointError(f"{model_id} is a file; pass the folder that holds model.safetensors and config.json")
    else:
        line, hub_id = missing_folder(model_id, names)
        if not hub_id:
            raise CheckpointError(line)
        try:                        # a misspelled folder or a Hub repo id: when neither loads, say both
            return DDPM.from_pretrained(model_id, map_location=str(device))
        except OSError as err:
            raise CheckpointError(f"{line}; as a Hugging Face Hub repo id it did not load either: {err}") from err
    return DDPM.from_pretrained(model_id, map_location=str(device))
