"""What a running process costs: CPU seconds, resident memory, threads (psutil, so it reads the same everywhere);
and a stand-in PgBouncer process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from support.users import open_path_for_others
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


def stand_in(folder: Path, user: str | None = None, hang_up_ends_it: bool = True) -> subprocess.Popen[bytes]:
    """A process called pgbouncer (/bin/sleep under PgBouncer's name: the pgbouncer sink signals nothing else), run
    by ``user`` (default: us). ``hang_up_ends_it``: SIGHUP's default action (even when this run ignores SIGHUP:
    nohup), so any signal it gets shows; else it ignores SIGHUP (the RELOAD) and counts nothing."""
    exe = folder / "pgbouncer"
    if not exe.exists():
        shutil.copy("/bin/sleep", exe)
        exe.chmod(0o755)
        open_path_for_others(exe)
    who: dict[str, Any] = {"user": user, "group": user, "extra_groups": []} if user else {}
    action = signal.SIG_DFL if hang_up_ends_it else signal.SIG_IGN  # set before the exec, it stays after it
    proc = subprocess.Popen([str(exe), "300"], preexec_fn=lambda: signal.signal(signal.SIGHUP, action), **who)
    wait_for(lambda: Path(f"/proc/{proc.pid}/comm").read_text().strip() == "pgbouncer", what="the stand-in")
    return proc


@contextmanager
def sleeping_pgbouncer(folder: Path) -> Iterator[Path]:
    """``stand_in`` ignoring SIGHUP, its pid in ``folder``/pgbouncer.pid (yielded) while the block runs."""
    proc = stand_in(folder, hang_up_ends_it=False)
    pidfile = folder / "pgbouncer.pid"
    pidfile.write_text(f"{proc.pid}\n")
    try:
        yield pidfile
    finally:
        proc.kill()
        proc.wait()
