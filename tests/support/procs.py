"""What a running process costs: CPU seconds, resident memory, threads (psutil, so it reads the same everywhere)."""

from __future__ import annotations

import os

import psutil

from support.waits import wait_for


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


def settled_fds(pid: int) -> int:
    """How many descriptors a live process holds once the count stays put for 0.1 s: a status connection the test
    just closed is still open in the daemon for a moment, and counted in a baseline it would be one too many."""
    last = [-1]

    def same() -> int | None:
        n, previous = len(open_fds(pid)), last[0]
        last[0] = n
        return n if n == previous else None

    return int(wait_for(same, interval=0.1, what=f"the descriptors of {pid} to settle"))
