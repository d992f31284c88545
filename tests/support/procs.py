"""What a running process costs: CPU seconds, resident memory, threads (psutil, so it reads the same everywhere)."""

from __future__ import annotations

import psutil


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, seconds."""
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def rss_mb(pid: int) -> float:
    """Resident memory of a live process, MiB."""
    return float(psutil.Process(pid).memory_info().rss) / (1 << 20)


def threads_of(pid: int) -> int:
    return int(psutil.Process(pid).num_threads())
