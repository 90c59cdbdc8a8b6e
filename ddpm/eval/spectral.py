"""The spectral lens: the forward process drowns an image's frequency bands one after the other, fine detail first,
and the reverse process decides them in the opposite order, coarse first (Dieleman 2024, "Diffusion is spectral
autoregression"; Rissanen et al. 2023). Natural images have power falling with frequency, the noise is white:

    SNR_b(t) = alpha_bar_t P_x0(b) / ((1 - alpha_bar_t) P_eps(b)),   P_eps(b) = 1 for unit white noise

so each band b has its own step t_b where SNR_b crosses 1, predicted from the data spectrum alone. During a reverse run
a band of x0_hat "settles" when its error against the final sample falls below half the band's power: the error a
Wiener filter leaves at SNR = 1 (1 / (1 + SNR)), so settling and crossing should agree if the model denoises each
band about as well as a Wiener filter would.

Bands: the radius of a 2-D frequency in cycles per image, rounded (0 = the mean, H/2 = the Nyquist edge, beyond:
the corners); power: |FFT|^2 / (H W) (orthonormal: unit white noise has power 1 at every frequency).
"""
from dataclasses import dataclass

import numpy as np
import torch

from ..sampling import sample_steps
from ..schedule import SCHEDULES, NoiseSchedule

SETTLED = 0.5           # band error / band power at which a band counts as decided: a Wiener filter's at SNR = 1


def band_index(H, W):
    """The band of each frequency of an H x W FFT: round(sqrt(fy^2 + fx^2)) in cycles per image, [H, W] long."""
    fy = torch.fft.fftfreq(H) * H
    fx = torch.fft.fftfreq(W) * W
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2).round().long()


def radial_power(x):
    """Radially averaged power spectrum of images x [B, C, H, W]: the mean over images, channels and the
    frequencies of each band, [n_bands] float64 (numpy)."""
    H, W = x.shape[-2:]
    power = torch.fft.fft2(x.double().cpu(), norm="ortho").abs() ** 2                          # [B, C, H, W]
    bands = band_index(H, W).flatten()
    per_freq = power.mean((0, 1)).flatten()
    return (torch.zeros(int(bands.max()) + 1, dtype=torch.float64).index_add_(0, bands, per_freq)
            / torch.bincount(bands).double()).numpy()


@torch.inference_mode()
def spectra(x0, alpha_bar, *, generator=None):
    """The power spectra of x0, of unit noise eps and of x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps (Eq. 4)
    at one alpha_bar: {"x0", "noise", "x_t"}, each [n_bands]."""
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    x_t = alpha_bar ** 0.5 * x0.double() + (1 - alpha_bar) ** 0.5 * eps
    return {"x0": radial_power(x0), "noise": radial_power(eps), "x_t": radial_power(x_t)}


def band_snr(power_x0, alpha_bar):
    """SNR_b(t) = alpha_bar_t P_x0(b) / (1 - alpha_bar_t) for every t and band: [T, n_bands]."""
    alpha_bar = np.asarray(alpha_bar, dtype=np.float64)
    return (alpha_bar / (1 - alpha_bar))[:, None] * np.asarray(power_x0)[None, :]


def crossings(power_x0, alpha_bar):
    """Per band, the last t at which SNR_b(t) >= 1 (the step where the forward process drowns the band; -1 if
    it is below 1 from the start): [n_bands]. SNR falls with t, so this is where the contour SNR = 1 passes."""
    above = band_snr(power_x0, alpha_bar) >= 1                                                     # [T, n_bands]
    return np.where(above.any(0), above.shape[0] - 1 - np.argmax(above[::-1], 0), -1)


def crossings_per_schedule(power_x0, T=1000):
    """{schedule name: crossings} for every schedule of ddpm.schedule, at T steps."""
    return {name: crossings(power_x0, NoiseSchedule(name, T).alpha_bar.double().numpy()) for name in SCHEDULES}


def spearman(a, b):
    """Spearman's rank correlation of two sequences (average ranks for ties)."""
    def ranks(v):
        v = np.asarray(v, dtype=np.float64)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):                       # ties share their mean rank
            r[v == value] = r[v == value].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass
class Settling:
    """When each band of x0_hat is decided in one reverse run. ts: the run's steps; error [len(ts), n_bands]: band
    power of x0_hat - final sample over the final sample's band power; settled_t / predicted_t [n_bands]: the
    largest t from which the error stays below the level (SETTLED by default), and the SNR = 1 crossing of the
    data spectrum; rho: the Spearman correlation of settled_t with the band, over the whole rings up to the Nyquist
    edge (negative: coarse bands are decided first)."""
    ts: np.ndarray
    error: np.ndarray
    settled_t: np.ndarray
    predicted_t: np.ndarray
    rho: float
    samples: torch.Tensor


@torch.inference_mode()
def settling(ddpm, reference, *, n=8, y=None, sampler="ddim", steps=100, eta=1.0, guidance_scale=1.0, level=SETTLED,
             generator=None):
    """Run the reverse process on n images and find, for every band, the step at which x0_hat settles (its error
    stays below `level` of the band's power), against the step predicted from the spectrum of `reference` (real
    images [N, C, H, W] in [-1, 1]) alone."""
    x = torch.randn((n, *ddpm.sample_shape), generator=generator, device=ddpm.device)
    yb = None if y is None else torch.as_tensor(y, device=ddpm.device).expand(n)
    ts, hats = [], []
    for step in sample_steps(ddpm, x, y=yb, sampler=sampler, steps=steps, eta=eta, guidance_scale=guidance_scale,
                             generator=generator):
        ts.append(step.t)
        hats.append(step.x0_hat.cpu())
        final = step.x_prev.clamp(-1, 1).cpu()
    final_power = radial_power(final)
    error = np.stack([radial_power(h - final) for h in hats]) / final_power                     # [steps, n_bands]
    ts = np.array(ts)
    below = error <= level
    # the earliest step after which every later step is below: from the last step backwards, while below
    settled = np.array([ts[len(ts) - np.argmin(np.append(below[::-1, b], False))] if below[-1, b] else -1
                        for b in range(error.shape[1])])
    predicted = crossings(radial_power(reference), ddpm.schedule.alpha_bar.double().numpy())
    bands = np.arange(len(settled))
    whole = bands <= min(final.shape[-2:]) // 2                 # whole rings; beyond the Nyquist edge only corners
    return Settling(ts, error, settled, predicted, spearman(bands[whole], settled[whole]), final)
