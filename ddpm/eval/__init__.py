"""Measuring samples: judge classifiers (judge.py), accuracy and Fréchet distance (metrics.py), the evaluation
table of `python -m ddpm evaluate` (evaluate.py). Used by the app and the CLI; imports only the core."""
