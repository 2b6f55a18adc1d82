"""How many CPU threads torch should use: a count that does not collapse on a busy machine.

torch's default is one intra-op thread per core. When other processes already keep those cores busy, every
matmul then waits for its slowest thread (a descheduled thread stalls the whole parallel region): on a
2-core machine at load ≈ 3, a TOFU evaluation of SmolLM2-135M took 296 s with 2 threads where a 1-thread
run of the same work took about half that (issue 11). The default here is therefore

    threads = max(1, min(cores, round(cores − load₁)))

with cores = min(physical cores, CPUs this process may run on (``os.sched_getaffinity``)) and load₁ the
1-minute load average (``os.getloadavg``) measured before any work starts — the CPUs other processes are
already using. A quiet machine gets every core; a saturated one gets one thread.

``LETHE_THREADS=N`` (N ≥ 1) overrides it; an ``OMP_NUM_THREADS`` already in the environment is respected.
:func:`apply_default_threads` only acts before torch is imported (it sets ``OMP_NUM_THREADS``, which torch
reads when it starts), so it never changes the thread count of a process that already chose one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lethe.errors import LetheError

ENV = "LETHE_THREADS"


def physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs of /proc/cpuinfo; None where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    cores, physical = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            cores.add((physical, value.strip()))
    return len(cores) or None


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load_average() -> float:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def default_threads(load: float | None = None) -> int:
    """The thread count for this machine now (see the module docstring); ``LETHE_THREADS`` wins."""
    value = os.environ.get(ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise LetheError(f"{ENV} must be a whole number >= 1, got {value!r}")
        return int(value)
    cores = min(physical_cores() or available_cpus(), available_cpus())
    busy = load_average() if load is None else load
    return max(1, min(cores, round(cores - busy)))


def apply_default_threads() -> int | None:
    """Set ``OMP_NUM_THREADS`` to :func:`default_threads` before torch starts; returns the count, or None
    when torch is already imported or ``OMP_NUM_THREADS`` is set (the caller's choice stands)."""
    if "torch" in sys.modules or os.environ.get("OMP_NUM_THREADS"):
        return None
    threads = default_threads()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads
