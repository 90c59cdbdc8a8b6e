"""Measuring samples: judge classifiers (judge.py), accuracy and Fréchet distance (metrics.py), the evaluation
table of `python -m ddpm evaluate` (evaluate.py), curves against steps and guidance (sweep.py), nearest training
images (neighbours.py). Used by the app and the CLI; imports only the core."""
