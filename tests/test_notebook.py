"""notebooks/sheet3.ipynb runs top to bottom in a Jupyter kernel (nbclient) on a tiny fake MNIST written in
torchvision's raw layout, so nothing is downloaded: unsolved, every check says "not implemented yet" (and the
package's functions train and sample instead); solved by notebooks/solve.py, every check passes. The committed
solved copy is the one solve.py writes."""
import importlib.util
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
CHECKS = ["sample_xt", "sample", "train", "sample_classes", "train_classconditional"]
# the parameters cell, made small: 6 images, one epoch, T = 100, a tiny network
QUICK = """DATA = {root!r}
DATASET = "mnist"
N_EPOCHS = 1
BATCH_SIZE = 16
T = 100
NET = dict(base_channels=8, channel_mults=(1, 2), attn_levels=(1,), emb_channels=32, groups=4)
N_SAMPLES = 4
N_PER_CLASS = 1"""


def _solve():
    spec = importlib.util.spec_from_file_location("solve", os.path.join(NOTEBOOKS, "solve.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.solve


def _sheet():
    return nbformat.read(os.path.join(NOTEBOOKS, "sheet3.ipynb"), as_version=4)


def _run(notebook, data_root, workdir, monkeypatch):
    for cell in notebook.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = QUICK.format(root=str(data_root))
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")          # the kernel shares the test machine's 2 cores
    monkeypatch.setenv("MPLBACKEND", "Agg")
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return notebook


def _text(cell):
    return "\n".join(str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", "")) for out in cell.outputs)


def _checks(notebook):
    return {cell.metadata["exercise"]: _text(cell) for cell in notebook.cells
            if "check" in cell.metadata.get("tags", [])}


def test_the_sheet_has_the_tasks_in_order_with_placeholders():
    notebook = _sheet()
    text = "\n".join(cell.source for cell in notebook.cells)
    tasks = ["## Task 3.1", "## Task 3.2", "## Task 3.3", "### 3.3a)", "### 3.3b)", "### 3.3c)", "## Task 3.4", "### 3.4a)",
             "### 3.4b)", "## Task 3.5"]
    assert [text.index(task) for task in tasks] == sorted(text.index(task) for task in tasks)
    placeholders = [cell for cell in notebook.cells if "placeholder" in cell.metadata.get("tags", [])]
    assert [cell.metadata["exercise"] for cell in placeholders] == CHECKS
    assert all("# Your code goes here" in cell.source for cell in placeholders)
    for signature in ("def sample_xt(x0, t, epsilon, alphaBars):", "def sample(ddpm, n_samples):",
                      "def train(ddpm, loader, n_epochs, optim, device):",
                      "def sample(ddpm, n_samples, classes: list[int] = None):",
                      "def train_classconditional(ddpm, loader, n_epochs, optim, device):"):
        assert signature in text
    assert list(_checks(notebook)) == CHECKS
    assert "import ddpm as dd" in text and "%pip install" in text


def test_the_solved_copy_is_what_solve_writes():
    solved = nbformat.read(os.path.join(NOTEBOOKS, "sheet3_solved.ipynb"), as_version=4)
    assert [c.source for c in solved.cells] == [c.source for c in _solve()(_sheet()).cells]


@pytest.mark.parametrize("solved", [False, True], ids=["unsolved", "solved"])
def test_the_notebook_runs_and_every_check_says_so(solved, fake_data, tmp_path, monkeypatch):
    root, _ = fake_data
    notebook = _solve()(_sheet()) if solved else _sheet()
    workdir = tmp_path / "work"                    # the kernel's folder: "./data" would be created here
    workdir.mkdir()
    notebook = _run(notebook, root, workdir, monkeypatch)
    checks = _checks(notebook)
    assert list(checks) == CHECKS
    for name, text in checks.items():
        assert (": passed" if solved else ": not implemented yet") in text, (name, text)
    data_cell = next(c for c in notebook.cells if "load_data(DATASET, DATA)" in c.source)
    assert "6 images of shape (1, 28, 28)" in _text(data_cell) and "bundled" not in _text(data_cell)   # no download
    summary = _text(notebook.cells[-1])
    assert summary.count("passed" if solved else "not implemented yet") == len(CHECKS)
    assert os.listdir(workdir) == []
