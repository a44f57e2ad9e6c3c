"""CPU threads: how many cvlm uses, and how its OpenMP threads wait, so a busy machine stays usable.

torch runs its CPU kernels on an OpenMP thread pool (libgomp in the PyPI wheels). Between two parallel
regions the pool's threads *spin* for a while before they sleep. On a machine whose cores are taken
by other jobs a spinning thread burns the time slice that the thread doing the work needs, and a job
beside two CPU-bound processes on 2 cores took 10-50x its time alone (``benchmarks/cpu_contention.py``).
With ``OMP_WAIT_POLICY=PASSIVE`` idle threads sleep at once: the same job takes about what fair
sharing allows, and alone it is as fast as before. The policy is read when OpenMP starts, i.e. when
torch is first imported, so :func:`configure_threads` must run before that; the ``cvlm`` command calls
it first thing. This module imports neither torch nor numpy at import time for the same reason.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
"""Where Linux mounts the cgroup file system (read for a container's CPU quota)."""

WAIT_POLICY = "PASSIVE"
"""The OpenMP wait policy cvlm sets unless the user chose one (see the module docstring)."""

MKL_REPRODUCIBILITY = "AUTO,STRICT"
"""MKL's conditional numerical reproducibility mode, set unless the user chose one (``MKL_CBWR``).

Without it MKL may split a matrix product's sums differently with 1 and 2 threads, and an explanation's
counterfactuals differ in the last bits (measured: 1.7e-6 in the UNet's output). Strict CNR makes MKL's
results independent of the thread count at no measurable cost (UNet forward 67 vs 70 ms). MKL reads it
once, when torch loads.
"""

# Variables with which a user tunes OpenMP waiting himself; cvlm then leaves the wait policy alone.
_USER_WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def cgroup_cores(root: Path = CGROUP_ROOT) -> int | None:
    """Whole cores a cgroup CPU quota allows (``docker --cpus 2``), or ``None`` where there is no quota.

    Reads cgroup v2 ``cpu.max`` or cgroup v1 ``cpu/cpu.cfs_quota_us`` and ``cpu.cfs_period_us``; a
    fractional quota rounds up (1.5 CPUs: 2 threads, each still gets its share of the time).

    Args:
        root: The cgroup file system.
    """
    try:
        if (root / "cpu.max").is_file():
            quota, period = (root / "cpu.max").read_text().split()[:2]
        elif (root / "cpu" / "cpu.cfs_quota_us").is_file():
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        else:
            return None
        if quota in ("max", "-1"):
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # unreadable or unexpected content: no limit known
        return None


def available_cores() -> int:
    """The number of cores this process may use: its CPU affinity, capped by a cgroup CPU quota.

    A ``taskset`` or cpuset limits the affinity and a container's ``--cpus`` sets a quota; either way
    ``os.cpu_count()`` would still count every core of the host, and more threads than usable cores only
    queue behind each other.

    >>> available_cores() >= 1
    True
    """
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        cores = max(1, os.cpu_count() or 1)
    quota = cgroup_cores()
    return min(cores, quota) if quota is not None else cores


def default_threads() -> int:
    """Threads to use when the user gives none: ``OMP_NUM_THREADS`` if set, else :func:`available_cores`."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return available_cores()


def configure_threads(threads: int | None = None) -> int:
    """Set the CPU threads of this process, a passive OpenMP wait policy and MKL's reproducible mode.

    Returns the thread count.

    Before torch is imported this sets environment variables that torch, MKL and OpenBLAS read when they
    load (they are inherited by worker processes and external generator commands too); when torch is
    already loaded (cvlm used as a library, the tests) it calls ``torch.set_num_threads``, and the wait
    policy keeps whatever value OpenMP started with.

    Args:
        threads: Threads for torch's intra-op pool; ``None`` keeps ``OMP_NUM_THREADS`` if the user set
            it and otherwise uses every core this process may run on.

    Returns:
        The number of threads now in effect.

    Raises:
        ValueError: If ``threads`` is smaller than 1.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}.")
    count = threads if threads is not None else default_threads()
    if not any(name in os.environ for name in _USER_WAIT_SETTINGS):
        os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    os.environ.setdefault("MKL_CBWR", MKL_REPRODUCIBILITY)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        # An explicit --threads wins over the environment; otherwise what the user set stays.
        if threads is not None or name not in os.environ:
            os.environ[name] = str(count)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)
    return count


__all__ = [
    "MKL_REPRODUCIBILITY",
    "WAIT_POLICY",
    "available_cores",
    "cgroup_cores",
    "configure_threads",
    "default_threads",
]
