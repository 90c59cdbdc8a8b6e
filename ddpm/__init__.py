"""ddpm: Denoising Diffusion Probabilistic Models (Ho et al. 2020), small and readable.

The core, one idea per file (each imports only the files above it in this list):
    memory.py      CPU speed: keep freed tensor memory for reuse (glibc), instead of page-faulting it back
    schedule.py    noise schedules (linear, cosine, sigmoid) and the time-index convention
    unet.py        the network eps_theta(x_t, t, y) for images; mlp.py the same for vectors (2-D points)
    checkpoint.py  safetensors + JSON files: reading and writing
    diffusion.py   forward process q (sample_xt, Eq. 4), the posterior q(x_{t-1}|x_t,x_0), the DDPM object, load_model
    sampling.py    Algorithm 2, DDIM, classifier-free guidance: sample, sample_steps, ddpm_step, ddim_step
    distributed.py torchrun: the process group, checking that the replicas agree
    training.py    Algorithm 1: train, train_classconditional, EMA (on one process or many)
    data.py        MNIST, FashionMNIST, CIFAR-10/100 through torchvision, in [-1, 1]
    pretrained.py  the bundled models (pretrained/, installed as ddpm/bundled/)
    points.py      2-D point clouds for the playground
    plots.py       image grids, upscaled nearest-neighbour
On top of the core: ddpm/eval/ (judge classifiers, metrics, evaluation), ddpm/exercise/ (checks a student's
sample_xt, sample, train and names the mistake: ddpm.exercise.check_function), ddpm/tools/ (CLI, bench)
and ddpm/app/ (the teaching app's handlers).
"""
from . import points
from .checkpoint import load_training_state, save_training_state
from .data import DATASETS, load_dataset, make_loader, to_uint8, to_unit_range
from .diffusion import DDPM, load_model, predict_x0_from_eps, q_posterior, sample_xt
from .memory import keep_freed_memory
from .pretrained import load_pretrained
from .sampling import (SAMPLERS, Sampler, Step, compiled, ddim_step, ddpm_step, dpmpp_2m_step, get_sampler, sample,
                       sample_steps, timesteps)
from .schedule import SCHEDULES, NoiseSchedule
from .training import EMA, train, train_classconditional
from .mlp import MLP
from .unet import FULL_RES, PATCH2, UNet2D
from . import exercise            # last: it checks students against the core above

__all__ = ["points", "exercise", "load_training_state", "save_training_state", "DATASETS", "load_dataset", "make_loader",
           "to_uint8", "to_unit_range", "DDPM", "load_model", "predict_x0_from_eps", "q_posterior", "sample_xt",
           "keep_freed_memory", "load_pretrained", "SAMPLERS", "Sampler", "Step", "compiled", "ddim_step", "ddpm_step",
           "dpmpp_2m_step", "get_sampler", "sample", "sample_steps", "timesteps", "SCHEDULES", "NoiseSchedule", "EMA",
           "train", "train_classconditional", "MLP", "FULL_RES", "PATCH2", "UNet2D"]
