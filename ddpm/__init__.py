"""ddpm: Denoising Diffusion Probabilistic Models (Ho et al. 2020), small and readable.

Where to find what:
    schedule.py   noise schedules (linear, cosine, sigmoid) and the time-index convention
    diffusion.py  forward process q (sample_xt, Eq. 4), the posterior q(x_{t-1}|x_t,x_0), the DDPM object
    unet.py       the network eps_theta(x_t, t, y)
    training.py   Algorithm 1: train, train_classconditional, EMA
    sampling.py   Algorithm 2, DDIM, classifier-free guidance: sample, sample_steps; compiled (opt-in speed)
    data.py       MNIST, FashionMNIST, CIFAR-10/100 through torchvision
    checkpoint.py safetensors + JSON checkpoints
"""
from .checkpoint import load_model, load_training_state, save_training_state
from .data import DATASETS, load_dataset, make_loader
from .diffusion import DDPM, predict_x0_from_eps, q_posterior, sample_xt
from .sampling import compiled, ddim_step, ddpm_step, sample, sample_steps, timesteps
from .schedule import NoiseSchedule
from .training import EMA, train, train_classconditional
from .unet import UNet2D
from .pretrained import load_pretrained
