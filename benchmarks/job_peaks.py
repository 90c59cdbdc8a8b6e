"""Peak memory of the app's largest jobs, each in a fresh process with both bundled models loaded (docs/reliability.md
says how they bound the worst case):

    python benchmarks/job_peaks.py

A job's figure is the process's peak RSS after the job minus its peak after loading the models (Linux ru_maxrss).
"""
import os
import resource
import subprocess
import sys
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = {"grid_mnist": "a 10 x 10 guided MNIST grid", "grid_fashion_mnist": "a 10 x 10 guided FashionMNIST grid",
        "finetune": "a fine-tune of FashionMNIST on all its classes"}


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(job):
    sys.path.insert(0, ROOT)
    import torch
    from ddpm import keep_freed_memory
    from ddpm.app import finetune, grid, registry
    keep_freed_memory()                                      # as app.py runs
    torch.set_num_threads(1)
    reg, request = registry.registry(), SimpleNamespace(session_hash="peaks")
    for name in ("mnist", "fashion_mnist"):
        reg.model(name)
    base = peak_mb()
    if job.startswith("grid_"):
        model = job[len("grid_"):]
        grid.grid_run(model=model, classes=reg.model(model).class_names, sampler="ddim", steps=2, guidance=3.0, seed=0,
                      per_class=10, request=request)                                       # memory per step
    else:                                                                                          # does not grow with steps
        names = list(reg.model("fashion_mnist").class_names)
        for _ in finetune.finetune_run("fashion_mnist", "classes", names, "", None, "steps", 3, 5, request=request):
            pass
    print(f"{base:.0f} {peak_mb() - base:.0f}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        return one(sys.argv[2])
    for job, what in JOBS.items():
        out = subprocess.run([sys.executable, __file__, "--one", job], capture_output=True, text=True, check=True)
        base, extra = out.stdout.split()[-2:]
        print(f"{what}: +{extra} MB (models loaded: {base} MB)")


if __name__ == "__main__":
    main()
