"""DDPM is a flow: DDIM with eta = 0 is Euler's method on the flow-matching form of the same model's ODE.

With alpha = sqrt(alpha_bar_t) and sigma = sqrt(1 - alpha_bar_t), Eq. (4) reads x_t = alpha x_0 + sigma eps. Divide
by alpha + sigma:

    z = x_t / (alpha + sigma),   tau = sigma / (alpha + sigma)   =>   z = (1 - tau) x_0 + tau eps

a straight line from the data (tau = 0) to the noise (tau = 1), the interpolant of flow matching / rectified flow
(Lipman et al. 2023; Liu et al. 2023). Its velocity dz/dtau = eps - x_0 is predicted by v = eps_hat - x0_hat, and one
Euler step z' = z + (tau' - tau) v gives z' = (1 - tau') x0_hat + tau' eps_hat, i.e. x' = alpha' x0_hat + sigma' eps_hat:
DDIM's update, Song et al. (2021) Eq. (12) with sigma_t = 0. The two differ by rounding only, with or without
clipping x0_hat (DDIM then uses the eps that fits the clipped x0_hat, and so does v here).
"""
import math

import torch

from ..sampling import ddim_step, guided_eps, timesteps


def flow_euler_step(x_t, t, t_prev, eps, schedule, *, clip_x0=True):
    """One Euler step of dz/dtau = v from t to t_prev < t (-1: the clean image), in x-space: (x_{t_prev}, x0_hat, v)."""
    alpha_bar, a_prev = schedule.at(t).alpha_bar, schedule.at(t_prev).alpha_bar
    alpha, sigma = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    alpha_p, sigma_p = math.sqrt(a_prev), math.sqrt(1 - a_prev)
    x0_hat = (x_t - sigma * eps) / alpha                                                  # Eq. (15)
    if clip_x0:
        x0_hat = x0_hat.clamp(-1, 1)
        eps = (x_t - alpha * x0_hat) / sigma                                              # the eps that fits it
    v = eps - x0_hat                                                                       # dz/dtau
    z, tau, tau_p = x_t / (alpha + sigma), sigma / (alpha + sigma), sigma_p / (alpha_p + sigma_p)
    z_prev = z + (tau_p - tau) * v                                                         # Euler
    return (alpha_p + sigma_p) * z_prev, x0_hat, v


@torch.inference_mode()
def flow_vs_ddim(ddpm, *, n=4, steps=20, y=None, guidance_scale=1.0, clip_x0=True, dtype=torch.float64, generator=None):
    """From the same x_T, DDIM (eta = 0, the package's ddim_step) and Euler on the flow-matching ODE, `steps` steps
    each: the two final images, the largest difference between them at any step, and the straightness of each
    run's path (|end - start| / the length of the polyline through every point: 1 for a straight line; in z for
    the flow, in x for DDIM). Both runs compute their steps in `dtype` (the network sees float32): in float64 they
    agree to rounding; in float32 a last-digit difference grows by alpha_{t_prev} / alpha_t per step (x0_hat
    divides by alpha_t = 0.006 at t = T - 1), to about 1e-5. Returns a dict."""
    x_T = torch.randn((n, *ddpm.sample_shape), generator=generator, device=ddpm.device).to(dtype)
    yb = None if y is None else torch.as_tensor(y, device=ddpm.device).expand(n)

    y2 = None if yb is None else yb.repeat(2)
    ddim, flow, z_path = [x_T], [x_T], []
    for t, t_prev in timesteps("ddim", ddpm.T, steps):
        # both runs in one network call (one call per step, not two: the panel's cost is the calls)
        eps_ddim, eps_flow = guided_eps(ddpm, torch.cat([ddim[-1], flow[-1]]).float(), t, y2, guidance_scale
                                        ).to(dtype).chunk(2)
        ddim.append(ddim_step(ddim[-1], t, t_prev, eps_ddim, ddpm.schedule, clip_x0=clip_x0)[0])
        alpha_bar = ddpm.schedule.at(t).alpha_bar
        z_path.append(flow[-1] / (math.sqrt(alpha_bar) + math.sqrt(1 - alpha_bar)))
        flow.append(flow_euler_step(flow[-1], t, t_prev, eps_flow, ddpm.schedule, clip_x0=clip_x0)[0])
    z_path.append(flow[-1])                                                                # tau = 0: z = x_0
    gap = max(float((a - b).abs().max()) for a, b in zip(ddim, flow, strict=True))
    return {"ddim": ddim[-1], "flow": flow[-1], "max_difference": gap,
            "straightness_z": straightness(z_path), "straightness_x": straightness(ddim)}


def straightness(path):
    """|end - start| / sum of |step| per image, for a path given as a list of tensors [B, ...]: [B], 1 = straight."""
    chord = (path[-1] - path[0]).flatten(1).norm(dim=1)
    length = sum((b - a).flatten(1).norm(dim=1) for a, b in zip(path[:-1], path[1:], strict=True))
    return (chord / length).cpu()
