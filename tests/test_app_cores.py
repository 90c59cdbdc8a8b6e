"""The app's jobs share the CPU cores: alone a job takes them all, jobs at once split them."""
import pytest
import torch

from ddpm import sample
from ddpm.app import cores as C
from ddpm.app.settings import changed_settings


@pytest.fixture(autouse=True)
def four_cores(monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setattr(C, "CORES", 4)
    yield
    torch.set_num_threads(threads)
    assert C._running == 0                      # every job counted itself out again


@C.shares_cores
def one_call():
    return torch.get_num_threads()


@C.shares_cores
def streamed(n, log):
    try:
        for _ in range(n):
            yield torch.get_num_threads()
    finally:
        log.append("closed")


def test_a_job_alone_takes_every_core_and_jobs_at_once_split_them():
    assert one_call() == 4
    log = []
    first = streamed(3, log)
    assert next(first) == 4                     # alone so far
    assert one_call() == 2                      # a second job while the first runs: half each
    second = streamed(2, log)
    assert next(second) == 2
    assert next(first) == 2                     # the streamed job's share shrank with the newcomer ...
    assert list(second) == [2] and log == ["closed"]
    assert next(first) == 4                     # ... and grows back when it is gone
    assert list(first) == [] and log == ["closed", "closed"]


def test_a_streamed_job_sets_its_share_before_every_step():
    """Gradio may run each step on another worker thread, whose count another job may have changed."""
    steps = streamed(3, [])
    assert next(steps) == 4
    torch.set_num_threads(1)
    assert next(steps) == 4
    steps.close()


def test_a_long_call_takes_its_share_between_sampling_steps(make_ddpm):
    """A class grid is one call (`sample`); with callback=take_share it shrinks when a job starts mid-run."""
    ddpm, seen, other = make_ddpm(T=20), [], streamed(5, [])

    def watch(step):
        if step.i == 1:
            next(other)                         # another visitor's job starts during the grid
        C.take_share()
        seen.append(torch.get_num_threads())

    C.shares_cores(lambda: sample(ddpm, 1, [0], sampler="ddim", steps=4, callback=watch))()
    other.close()
    assert seen == [4, 2, 2, 2]


def test_a_stream_closed_early_closes_the_handler_and_counts_itself_out():
    log = []
    steps = streamed(5, log)
    next(steps)
    steps.close()                               # what Gradio does when the browser goes away
    assert log == ["closed"] and C._running == 0


def test_a_failing_job_counts_itself_out():
    @C.shares_cores
    def broken():
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        broken()
    assert one_call() == 4


def test_more_jobs_than_cores_get_one_thread_each():
    jobs = [streamed(2, []) for _ in range(5)]
    assert [next(j) for j in jobs] == [4, 2, 1, 1, 1]
    for j in jobs:
        j.close()


def test_the_budget_is_the_setting_else_the_container_quota_else_the_cpus(tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("200000 100000\n")         # cgroup v2: 2 CPUs' worth of time per period
    with changed_settings(torch_threads=None):
        assert C.cpu_budget(quota) == 2
        quota.write_text("50000 100000\n")      # half a CPU: still one thread
        assert C.cpu_budget(quota) == 1
        cpus = C.cpu_budget(tmp_path / "missing")
        quota.write_text("max 100000\n")        # no quota
        assert C.cpu_budget(quota) == cpus >= 1
    with changed_settings(torch_threads=3):     # DDPM_APP_TORCH_THREADS=3; its bad values: tests/test_settings.py
        assert C.cpu_budget(quota) == 3
