"""Idle cost: a daemon with hour-long tokens left alone for N minutes: CPU seconds, wake-ups (context switches of
all its threads) and resident memory. Targets: ≤ 0.2 s CPU over 10 minutes, ≤ 80 MB.

Run: .venv/bin/python bench/idle.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _setup import bench_env, machine, rss_mb, running_daemon


def cpu(pid: int) -> float:
    import os

    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def switches(pid: int) -> int:
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=10)
    minutes = p.parse_args().minutes
    with bench_env() as b:
        b.emulator.directory.lifetime = 3600
        cfg = b.config(b.sp_identity() + '[targets.db]\nhost = "db.example"\nuser = "DBA Group"\nidentity = "sp"\n')
        with running_daemon(b, cfg) as proc:
            time.sleep(5)  # let start-up settle; then measure only idleness
            cpu0, sw0, requests0 = cpu(proc.pid), switches(proc.pid), len(b.emulator.requests)
            threads = len(list(Path(f"/proc/{proc.pid}/task").iterdir()))
            time.sleep(minutes * 60)
            used, woke = cpu(proc.pid) - cpu0, switches(proc.pid) - sw0
            rss = rss_mb(proc.pid)
            requests = len(b.emulator.requests) - requests0
    print(f"# idle cost: {minutes:g} idle minutes, hour-long tokens ({machine()})")
    print(f"{'measure':<34} {'value':>10}  target")
    print(f"{'CPU seconds':<34} {used:>10.3f}  ≤ 0.2 s per 10 min")
    print(f"{'wake-ups (context switches)':<34} {woke:>10}  {threads} threads; refreshers wake every 10 s")
    print(f"{'token requests':<34} {requests:>10}  0 (no refresh due)")
    print(f"{'resident memory (MB)':<34} {rss:>10.1f}  ≤ 80 MB")


if __name__ == "__main__":
    main()
