"""The solved sheet: every placeholder of sheet3.ipynb filled from the package's own functions.

    python notebooks/solve.py        # writes notebooks/sheet3_solved.ipynb

A placeholder is a code cell whose metadata has "exercise": <name>; tests/test_notebook.py runs both notebooks
(every check passes in the solved one, says "not implemented yet" in the other) and keeps the solved copy in step.
"""
import os
import sys

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
SOLUTIONS = {
    "sample_xt": '''def sample_xt(x0, t, epsilon, alphaBars):
    return dd.sample_xt(x0, t, epsilon, alphaBars)          # Eq. (4), ddpm/diffusion.py''',
    "sample": '''def sample(ddpm, n_samples):
    return dd.sample(ddpm, n_samples)                         # Algorithm 2, ddpm/sampling.py''',
    "train": '''def train(ddpm, loader, n_epochs, optim, device):
    dd.train(ddpm, loader, n_epochs, optim, device)          # Algorithm 1, ddpm/training.py''',
    "sample_classes": '''def sample(ddpm, n_samples, classes: list[int] = None):
    return dd.sample(ddpm, n_samples, classes)''',
    "train_classconditional": '''def train_classconditional(ddpm, loader, n_epochs, optim, device):
    dd.train_classconditional(ddpm, loader, n_epochs, optim, device)   # 10% of the labels -> the null class''',
}


def solve(notebook):
    """A copy of `notebook` with each placeholder cell replaced by its solution."""
    solved = nbformat.from_dict(notebook)
    filled = set()
    for cell in solved.cells:
        if "placeholder" in cell.metadata.get("tags", []):
            name = cell.metadata["exercise"]
            cell.source = SOLUTIONS[name]
            filled.add(name)
    if filled != set(SOLUTIONS):
        raise ValueError(f"placeholders {sorted(filled)} do not match the solutions {sorted(SOLUTIONS)}")
    return solved


SHEET, SOLVED = os.path.join(HERE, "sheet3.ipynb"), os.path.join(HERE, "sheet3_solved.ipynb")


def main(source=SHEET, target=SOLVED):
    nbformat.write(solve(nbformat.read(source, as_version=4)), target)


if __name__ == "__main__":
    main(*sys.argv[1:])
