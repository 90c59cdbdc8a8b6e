"""CPU speed: keep freed tensor memory in the process instead of handing it back to the system each step.

PyTorch's CPU tensors come from the C library's malloc. glibc returns large freed blocks to the operating
system (blocks above its mmap threshold, and free memory at the top of its heap above its trim threshold),
and a training step or a sampling loop frees and allocates its activations again at every step: each new
block is then mapped in and zero-filled by the kernel page by page. keep_freed_memory raises both
thresholds, so that freed blocks are reused, and keeps every thread on the main heap (one arena): a worker
thread's own arena lives in 64 MB heaps that glibc unmaps as soon as they are empty, whatever the thresholds
(an app job runs on one of Gradio's worker threads). Threads then share one allocator lock; a tensor's
malloc is rare next to the arithmetic on it.

`python benchmarks/app_targets.py` counts it in its training row (a fresh process each, bundled MNIST model,
batch 128): 14,272 minor page faults per step without, 2 with, on this project's 2-core machine.
Without the setting glibc moves both thresholds by itself as blocks come and go, so how often memory is
faulted back varies from process to process. The cost: a process keeps its peak memory after the work that
needed it (the peaks do not change). The app still hands freed memory back at the end of every job
(return_freed_memory, called by ddpm/app/jobs.py: trim_memory); within a job, between its steps, it is kept.

`python app.py` and the `ddpm` command (`python -m ddpm`) call it at start; in a notebook call
`ddpm.keep_freed_memory()` once. DDPM_KEEP_FREED_MEMORY=0 switches it off (the bench's "before" column runs so).
"""
import ctypes
import os
import sys

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024          # glibc's largest mmap threshold on 64-bit systems
TRIM_THRESHOLD = 2 ** 31 - 1                    # trim the heap only above 2 GiB free at its top (mallopt takes an int)


def _glibc():
    """The process's C library when it is glibc, else None (macOS, Windows, musl: the calls below do not apply)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    # glibc only: musl's mallopt accepts the calls and does nothing
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_memory():
    """Tell glibc's malloc to keep freed blocks (up to 32 MB each) for reuse, in one arena for all threads
    (set it before the threads that allocate start: a thread keeps the arena it has). Returns True when every
    setting took effect; False where it does not apply (not Linux with glibc: macOS, Windows, musl), when
    DDPM_KEEP_FREED_MEMORY=0, or when glibc refused one of the three. Process-wide and not undone; calling it
    again changes nothing. Setting either threshold also stops glibc from moving them by itself."""
    setting = os.environ.get("DDPM_KEEP_FREED_MEMORY", "").strip() or "1"
    if setting not in ("0", "1"):
        raise ValueError(f"DDPM_KEEP_FREED_MEMORY={setting!r}: give 1 (keep freed memory, the default) or 0 (off)")
    libc = _glibc()
    if setting == "0" or libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    done = [mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            mallopt(M_ARENA_MAX, 1)]
    return all(done)


def return_freed_memory():
    """Hand the memory freed so far back to the system now (glibc's malloc_trim): the app does it after each job,
    so that a server keeps no job's peak. Returns True when glibc released some; False where it does not apply."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
