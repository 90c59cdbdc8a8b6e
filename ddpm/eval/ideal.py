"""The ideal denoiser: the best possible eps-model for a finite training set, in closed form.

If the data were exactly the N training images x_i (each with probability 1/N), the minimiser of the loss of
Algorithm 1 would be E[x_0 | x_t], the posterior mean under q (Karras et al. 2022, Appendix B.3):

    x0_hat(x_t) = sum_i w_i x_i,   w = softmax_i( -|| x_t - sqrt(alpha_bar_t) x_i ||^2 / (2 (1 - alpha_bar_t)) )
    eps_hat     = (x_t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t)                              (Eq. 4)

Used as the network of a DDPM, it samples, and every sample is a copy of a training image: the reverse process of
the perfect fit to the training set memorises. That a trained network does not copy is what it did *not* learn.
"""
import torch
from torch import nn

from ..diffusion import DDPM
from ..schedule import make_betas


class IdealDenoiser(nn.Module):
    """eps_hat(x_t, t, y) of the closed-form posterior mean over `images` [N, C, H, W] in [-1, 1]; with `labels`
    [N] and a class y it averages over that class's images only (the null class: over all). The images are its
    parameters (frozen): the model is its training set."""

    size_divisor = 1
    config = None                   # not this package's network: save_pretrained refuses it

    def __init__(self, images, labels=None, *, num_classes=None, alpha_bar):
        super().__init__()
        if images.dim() != 4:
            raise ValueError(f"images must be [N, C, H, W] in [-1, 1], got shape {tuple(images.shape)}")
        if (labels is None) != (num_classes is None):
            raise ValueError("give labels and num_classes together (a class-conditional ideal denoiser), or neither")
        self.in_channels, self.num_classes = images.shape[1], num_classes
        self.images = nn.Parameter(images.detach().double(), requires_grad=False)
        self.register_buffer("labels", None if labels is None else torch.as_tensor(labels).long())
        self.register_buffer("alpha_bar", torch.as_tensor(alpha_bar, dtype=torch.float64))

    def weights(self, x_t, t, y=None):
        """w [B, N]: the posterior probability of each training image given x_t, the softmax above."""
        a = self.alpha_bar[t].view(-1, 1)                                                    # [B, 1]
        x = x_t.double().flatten(1)                                                          # [B, D]
        keys = self.images.flatten(1)                                                        # [N, D]
        d2 = (x * x).sum(1, keepdim=True) - 2 * a.sqrt() * (x @ keys.T) + a * (keys * keys).sum(1)  # ||x_t - sqrt(a) x_i||^2
        logits = -d2 / (2 * (1 - a))
        if y is not None and self.labels is not None:
            if y.dim() != 1:
                raise ValueError("the ideal denoiser takes class labels [B], not class weights")
            null = y == self.num_classes
            logits = logits.masked_fill((self.labels[None, :] != y[:, None]) & ~null[:, None], float("-inf"))
        return torch.softmax(logits, dim=1)

    def x0_hat(self, x_t, t, y=None):
        """E[x_0 | x_t] [B, C, H, W] (float64)."""
        return (self.weights(x_t, t, y) @ self.images.flatten(1)).view(x_t.shape)

    def forward(self, x_t, t, y=None):
        a = self.alpha_bar[t].view(-1, *([1] * (x_t.dim() - 1)))
        return ((x_t.double() - a.sqrt() * self.x0_hat(x_t, t, y)) / (1 - a).sqrt()).to(x_t.dtype)  # Eq. (4)


def ideal_model(images, labels=None, *, like):
    """A DDPM whose eps-network is the ideal denoiser of images [N, C, H, W] (and labels [N]), on the schedule of
    the DDPM `like` (so both walk the same steps): usable by sample(), sample_steps() and vlb_terms()."""
    config = like.config
    betas = make_betas(like.schedule.name, like.T, config.get("beta_start", 1e-4), config.get("beta_end", 0.02))
    num_classes = like.num_classes if labels is not None else None
    net = IdealDenoiser(images, labels, num_classes=num_classes, alpha_bar=torch.cumprod(1 - betas, 0))
    return DDPM(image_size=images.shape[-1], in_channels=images.shape[1], num_classes=num_classes,
                class_names=like.class_names if num_classes else None, schedule=like.schedule.name, T=like.T,
                beta_start=config.get("beta_start", 1e-4), beta_end=config.get("beta_end", 0.02), net=net,
                dataset=like.dataset).eval()


@torch.inference_mode()
def x0_hat_gap(ddpm, ideal, x0, ts, y=None, *, generator=None):
    """Per t of ts, on held-out images x0 [B, C, H, W]: the RMSE (on [0, 255]) between the network's x0_hat and the
    ideal denoiser's from the same x_t, and of each against the true x0: {"net_vs_ideal", "net", "ideal"}, [len(ts)]."""
    out = {"net_vs_ideal": [], "net": [], "ideal": []}
    for t in ts:
        t_b = torch.full((len(x0),), int(t), device=x0.device)
        a = ddpm.schedule.alpha_bar[int(t)].item()
        x_t = a ** 0.5 * x0 + (1 - a) ** 0.5 * torch.randn(x0.shape, generator=generator, device=x0.device)   # Eq. (4)
        net = ((x_t - (1 - a) ** 0.5 * ddpm.eps(x_t, t_b, y)) / a ** 0.5).clamp(-1, 1)
        best = ideal.net.x0_hat(x_t, t_b, y).float()
        for key, (u, v) in {"net_vs_ideal": (net, best), "net": (net, x0), "ideal": (best, x0)}.items():
            out[key].append(127.5 * ((u - v) ** 2).mean().sqrt().item())
    return out
