"""Measuring samples: judge classifiers (judge.py), accuracy and Fréchet distance (metrics.py), the evaluation
table of `python -m ddpm evaluate` (evaluate.py), curves against steps and guidance (sweep.py), nearest training
images (neighbours.py). The paper's results recomputed on a model: the variational bound in bits/dim (likelihood.py),
rate-distortion and shared-x_t samples (paper.py: Figures 5 and 7), the spectral lens (spectral.py), the ideal
denoiser of a training set (ideal.py), DDIM as Euler on the flow-matching ODE (flow.py). Used by the app and the CLI;
imports only the core."""
