"""Scale: one identity with 1,000 targets (token requests per rotation; target exactly 1), a pgpass with 10,000
user lines (rewrite median; target ≤ 50 ms), 50 identities (start-up, memory, requests), and `tokend doctor` over
10,000 targets with the daemon running (seconds; it was 28 s before doctor's pgpass checks became linear).

Run: .venv/bin/python bench/scale.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tokend.config import Target
from tokend.sinks import Entry
from tokend.sinks.pgpass import PgpassSink, parse
from tokend.token import Token

from _setup import TOKEND, bench_env, machine, rss_mb, running_daemon


def thousand_targets() -> tuple[float, int, int]:
    with bench_env() as b:
        b.emulator.directory.lifetime = 60
        targets = "".join(
            f'[targets.t{i}]\nhost = "db{i}.example"\nuser = "DBA Group"\nidentity = "sp"\n' for i in range(1000)
        )
        cfg = b.config(b.sp_identity() + targets)
        pgpass = b.home / ".pgpass"
        with running_daemon(b, cfg):
            start = len(b.emulator.token_requests())
            seen: set[str] = set()
            deadline = time.monotonic() + 100
            while time.monotonic() < deadline and len(seen) < 4:
                try:
                    lines = parse(pgpass.read_text())
                except OSError:
                    lines = []
                if len(lines) == 1000:
                    seen.add(lines[0][4])
                time.sleep(0.2)
            requests = len(b.emulator.token_requests()) - start
    rotations = len(seen) - 1
    return requests / max(rotations, 1), rotations, len(lines)


def big_pgpass() -> tuple[float, float]:
    folder = Path(tempfile.mkdtemp(prefix="tokend-bench-"))
    path = folder / "pgpass"
    path.write_text("".join(f"host{i}.example:5432:*:user{i}:password{i}\n" for i in range(10_000)))
    sink = PgpassSink({"path": str(path)}, "bench")
    target = Target("t", "db.example", 5432, "*", "DBA Group", "me", ("pgpass",))
    times = []
    for i in range(50):
        t0 = time.perf_counter()
        sink.sync([Entry(target, Token(f"eyJ{i}" + "x" * 2000, 2e9, 0))])
        times.append(time.perf_counter() - t0)
    size = path.stat().st_size / 1e6
    path.unlink()
    folder.rmdir()
    return statistics.median(times) * 1000, size


def fifty_identities() -> tuple[float, float, int]:
    with bench_env() as b:
        ids = "".join(b.sp_identity(f"id{i}") for i in range(50))
        targets = "".join(
            f'[targets.t{i}]\nhost = "db{i}.example"\nuser = "DBA Group"\nidentity = "id{i}"\n' for i in range(50)
        )
        cfg = b.config(ids + targets)
        t0 = time.monotonic()
        with running_daemon(b, cfg) as proc:
            ready = time.monotonic() - t0
            rss = rss_mb(proc.pid)
            r = subprocess.run([TOKEND, "status", "--json", "--config", str(cfg)], env=b.env, capture_output=True)
            assert all(i["state"] == "ok" for i in json.loads(r.stdout)["identities"])
            requests = len(b.emulator.token_requests())
    return ready, rss, requests


def doctor_ten_thousand_targets() -> float:
    with bench_env() as b:
        targets = "".join(
            f'[targets.t{i}]\nhost = "h{i}.example"\nuser = "u"\nidentity = "sp"\n' for i in range(10_000)
        )
        cfg = b.config(b.sp_identity() + targets)
        with running_daemon(b, cfg):
            t0 = time.monotonic()
            r = subprocess.run([TOKEND, "doctor", "--json", "--config", str(cfg)], env=b.env, capture_output=True)
            took = time.monotonic() - t0
            assert "pgpass shadowing" in {c["name"] for c in json.loads(r.stdout)["checks"]}
    return took


def main() -> None:
    per_rotation, rotations, lines = thousand_targets()
    median, size = big_pgpass()
    ready, rss, requests = fifty_identities()
    doctor = doctor_ten_thousand_targets()
    print(f"# scale ({machine()})")
    print(f"{'measure':<52} {'value':>10}  target")
    print(
        f"{'1,000 targets, one identity: token requests/rotation':<52} {per_rotation:>10.2f}  1 "
        f"({rotations} rotations, {lines} pgpass lines)"
    )
    print(f"{'pgpass with 10,000 user lines: rewrite median (ms)':<52} {median:>10.2f}  ≤ 50 ({size:.2f} MB file)")
    print(f"{'50 identities: start to all tokens (s)':<52} {ready:>10.2f}")
    print(f"{'50 identities: resident memory (MB)':<52} {rss:>10.1f}")
    print(f"{'50 identities: token requests at start':<52} {requests:>10}  50")
    print(f"{'10,000 targets: tokend doctor, daemon running (s)':<52} {doctor:>10.2f}")


if __name__ == "__main__":
    main()
