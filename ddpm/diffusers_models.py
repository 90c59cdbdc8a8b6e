"""diffusers models in, our samplers on top: a diffusers `UNet2DModel` folder, or a `DDPMPipeline` folder
(model_index.json, unet/, scheduler/), loaded as a DDPM whose network is the diffusers UNet behind our
eps(x_t, t, y) interface, and whose schedule is read from the scheduler's config.

diffusers is imported only here and only when such a folder is loaded; weights are read from safetensors only.
"""
import json
import os

from torch import nn

UNET_CLASSES = ("UNet2DModel",)
SCHEDULES = {"linear": "linear", "squaredcos_cap_v2": "cosine", "sigmoid": "sigmoid"}


def _read(path):
    with open(path) as f:
        return json.load(f)


def unet_folder(folder):
    """The folder that holds the diffusers UNet config of `folder` (itself or its unet/), or None."""
    for candidate in (os.path.join(folder, "unet"), folder):
        config = os.path.join(candidate, "config.json")
        if os.path.isfile(config):
            try:
                if _read(config).get("_class_name") in UNET_CLASSES:
                    return candidate
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                return None
    return None


VARIANCES = {"fixed_small": "beta_tilde", "fixed_large": "beta"}


def schedule_args(folder):
    """(DDPM's schedule arguments, our variance name) from `folder`/scheduler/scheduler_config.json (defaults
    when there is none: the linear schedule, T = 1000, sigma_t^2 = beta_t), refusing what our samplers do not
    implement, by name."""
    path = os.path.join(folder, "scheduler", "scheduler_config.json")
    if not os.path.isfile(path):
        return {}, "beta"
    config = _read(path)
    for key, ours in (("variance_type", tuple(VARIANCES)), ("rescale_betas_zero_snr", (False, None)),
                      ("thresholding", (False, None))):
        if config.get(key) not in ours and not (key == "variance_type" and key not in config):
            raise ValueError(f"{path}: {key} {config.get(key)!r} is not supported; supported: {list(ours)}")
    prediction = config.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise ValueError(f"{path}: prediction_type {prediction!r} is not supported; this package's samplers "
                         "take eps-prediction models (prediction_type 'epsilon')")
    name = config.get("beta_schedule", "linear")
    if name not in SCHEDULES:
        raise ValueError(f"{path}: beta_schedule {name!r} is not supported; supported: {sorted(SCHEDULES)}")
    if config.get("trained_betas") is not None:
        raise ValueError(f"{path}: trained_betas (a list of betas) are not supported; supported: {sorted(SCHEDULES)}")
    return (dict(schedule=SCHEDULES[name], T=int(config.get("num_train_timesteps", 1000)),
                 beta_start=float(config.get("beta_start", 1e-4)), beta_end=float(config.get("beta_end", 0.02))),
            VARIANCES[config.get("variance_type", "fixed_small")])


class DiffusersUNet(nn.Module):
    """A diffusers UNet2DModel as eps_theta(x_t, t, y) for an unconditional DDPM (y must be None)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.in_channels, self.num_classes, self.config = unet.config.in_channels, None, None
        self.size_divisor = 2 ** (len(unet.config.block_out_channels) - 1)

    def forward(self, x, t, y=None):
        if y is not None:
            raise ValueError("this diffusers UNet is unconditional: it takes no class labels")
        return self.unet(x, t).sample


def read_diffusers(folder):
    """(network, DDPM's other arguments, variance) from a diffusers UNet2DModel or DDPMPipeline folder:
    `DDPM(net=net, **arguments)` with `.variance = variance` is the model (ddpm.load_model does this)."""
    try:                           # here only: loading ddpm imports no diffusers unless such a folder is read
        from diffusers import UNet2DModel
    except ImportError as err:
        raise ImportError("loading a diffusers model needs the diffusers package: pip install diffusers") from err
    where = unet_folder(folder)
    if not os.path.isfile(os.path.join(where, "diffusion_pytorch_model.safetensors")):
        raise ValueError(f"{where} has no diffusion_pytorch_model.safetensors; this package loads safetensors only, "
                         "never pickled .bin weights")
    config = _read(os.path.join(where, "config.json"))
    labels = {key: config.get(key) for key in ("num_class_embeds", "class_embed_type") if config.get(key) is not None}
    if labels:                     # loaded as unconditional, its first forward pass would fail inside diffusers
        raise ValueError(f"{where} is a class-conditional UNet2DModel ({', '.join(f'{k} {v!r}' for k, v in labels.items())}); "
                         "this package loads unconditional diffusers UNets only (num_class_embeds and class_embed_type "
                         "None): its class-conditional samplers need a null class for guidance, which a diffusers UNet "
                         "has not. Train a class-conditional model with `python -m ddpm train` instead")
    unet = UNet2DModel.from_pretrained(where, use_safetensors=True)
    if unet.config.time_embedding_type != "positional":
        raise ValueError(f"{where}: time_embedding_type {unet.config.time_embedding_type!r} is not supported; "
                         "supported: 'positional' (DDPM's integer-step embedding)")
    if unet.config.out_channels != unet.config.in_channels:
        raise ValueError(f"{where}: only UNet2DModels that predict noise of the input's shape are supported "
                         f"(out_channels {unet.config.out_channels}, in_channels {unet.config.in_channels})")
    size = unet.config.sample_size
    schedule, variance = schedule_args(folder)
    return DiffusersUNet(unet), dict(image_size=size if isinstance(size, int) else size[0],
                                     in_channels=unet.config.in_channels,
                                     dataset=os.path.basename(os.path.normpath(folder)), **schedule), variance
