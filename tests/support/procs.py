"""What a running process costs: CPU seconds, resident memory, threads (psutil, so it reads the same everywhere)."""

from __future__ import annotations

import os

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


def open_fds(pid: int) -> set[int]:
    """The descriptor numbers a live process holds."""
    return {int(n) for n in os.listdir(f"/proc/{pid}/fd")}  # Linux: psutil lists files and sockets, not all kinds
