"""The challenges: fixed, seeded inputs for each item, stored as safetensors beside this file.

The data are six 8x8 images, two per class (a ring, a bar, a cross), so that the best possible eps_theta is known in
closed form (models.py) and Algorithm 2 has an exact reference without a trained network. Two schedules: T = 1000 with
the paper's betas (1e-4 .. 0.02), and T = 100 with betas scaled by 1000 / T (1e-3 .. 0.2), so that x_{T-1} is noise
in both. The files are built by `build()` from fixed seeds; `write()` rewrites them and a test checks they agree.

    sample_xt.safetensors  x0_T, t_T, epsilon_T (16 images per T, t = 0 and T-1 included), alphaBars_T;
                           fresh_x0 / fresh_t: a batch for sample_xt(x0, t, None, alphaBars) (T = 1000)
    sample.safetensors     one step of Algorithm 2 per row: x_t_T, t_T, eps_T (eps_theta(x_t, t) of the exact
                           model), z_T; the schedule (betas_T, alphas_T, alpha_bar_T); the data (points, point_labels)
    train.safetensors      the training set of the training checks: x0 [192, 1, 8, 8] in [-1, 1], labels y
"""
import os

import torch
from safetensors.torch import load_file, save_file

from .models import SCHEDULES, points, points_eps, schedule

FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "challenges")
CLASSES, N_PER_CLASS = [2, 0, 1], 2                       # sample(ddpm, 2, classes=[2, 0, 1]): 6 images
UPLOAD_ITEMS = ("sample_xt", "sample")                    # the items a student can check from outputs alone

def _steps(T):
    """16 steps per schedule: both ends (0 and T-1), the first few, and a spread; each half is one call of 8."""
    return torch.tensor([0, 1, 2, 10, T // 10, T // 4, T // 2, T - 2,
                         T - 1, T - 3, 3 * T // 4, 3 * T // 5, 2 * T // 5, T // 20, 5, 0])


def _images(n, generator):
    """n images near the data: a random point plus a little noise, kept in [-1, 1]."""
    pts, _ = points()
    pick = torch.randint(0, len(pts), (n,), generator=generator)
    return (pts[pick] + 0.15 * torch.randn((n, *pts.shape[1:]), generator=generator)).clamp(-1, 1)


def build():
    """{file name: {tensor name: tensor}}: every challenge, from fixed seeds."""
    g = torch.Generator().manual_seed(36)
    xt, step = {}, {}
    for T in SCHEDULES:
        sched = schedule(T)
        t = _steps(T)
        xt.update({f"x0_{T}": _images(16, g), f"t_{T}": t, f"epsilon_{T}": torch.randn((16, 1, 8, 8), generator=g),
                   f"alphaBars_{T}": sched.alpha_bar.clone()})
        x0, noise = _images(16, g), torch.randn((16, 1, 8, 8), generator=g)
        a = sched.alpha_bar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise                                    # Eq. (4)
        step.update({f"x_t_{T}": x_t, f"t_{T}": t, f"eps_{T}": points_eps(x_t, t, sched.alpha_bar.double()).float(),
                     f"z_{T}": torch.randn((16, 1, 8, 8), generator=g), f"betas_{T}": sched.betas.clone(),
                     f"alphas_{T}": sched.alphas.clone(), f"alpha_bar_{T}": sched.alpha_bar.clone()})
    xt.update({"fresh_x0": _images(64, g), "fresh_t": torch.randint(0, 1000, (64,), generator=g)})
    pts, labels = points()
    step.update({"points": pts, "point_labels": labels})
    pick = torch.randperm(192, generator=g) % len(pts)
    train = {"x0": (pts[pick] + 0.15 * torch.randn((192, 1, 8, 8), generator=g)).clamp(-1, 1), "y": labels[pick]}
    return {"sample_xt.safetensors": xt, "sample.safetensors": step, "train.safetensors": train}


_NOTES = {
    "sample_xt.safetensors": "For T in (1000, 100): x0_T [16,1,8,8], t_T [16] (0-based: the paper's t is t + 1), "
                             "epsilon_T, alphaBars_T [T]. Upload x_t_1000 and x_t_100 = sample_xt(x0_T, t_T, "
                             "epsilon_T, alphaBars_T), each [16,1,8,8], as .npz or .safetensors.",
    "sample.safetensors": "One step of Algorithm 2 per row. For T in (1000, 100): x_t_T [16,1,8,8], t_T [16] "
                          "(0-based), eps_T = eps_theta(x_t_T, t_T), z_T (the noise to add where the step adds "
                          "noise), betas_T, alphas_T, alpha_bar_T. Upload x_prev_1000 and x_prev_100 [16,1,8,8]; "
                          "optionally y: the labels [6] your sample passes to the network for n_samples = 2, "
                          "classes = [2, 0, 1].",
    "train.safetensors": "The training set of the training checks: x0 [192,1,8,8] in [-1, 1], labels y [192].",
}


def write(folder=FOLDER):
    """Rebuild the challenge files (they are in the package; run this only when build() changes)."""
    os.makedirs(folder, exist_ok=True)
    for name, tensors in build().items():
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(folder, name),
                  metadata={"about": _NOTES[name]})


def load(name):
    """The tensors of one challenge file, by item name ("sample_xt", "sample", "train")."""
    return load_file(os.path.join(FOLDER, f"{name}.safetensors"))


def upload_instructions(item):
    """What to compute from the challenge file of `item` and which arrays to upload (also in the file's metadata)."""
    challenge_files(item)
    return _NOTES[f"{item}.safetensors"]


def challenge_files(item):
    """The path of the challenge file a student downloads for `item` ("sample_xt" or "sample"); its
    metadata says which arrays to upload. Training is checked by running it (check_function)."""
    if item not in UPLOAD_ITEMS:
        raise ValueError(f"no download for {item!r}: the items checked from uploaded outputs are {list(UPLOAD_ITEMS)}; "
                         "train and train_classconditional are checked by running them: "
                         "ddpm.exercise.check_function(item, my_function)")
    return os.path.join(FOLDER, f"{item}.safetensors")
