"""Freshness: 60-second tokens for N minutes with three 20-second emulator outages; pgpass probed every 100 ms
(share holding a valid token; target 100 %) and psql every second (target 0 failures).

Run: .venv/bin/python bench/freshness.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time

from tokend.emulator.directory import TokenRejected
from tokend.emulator.postgres import Postgres
from tokend.sinks.pgpass import parse

from _setup import bench_env, machine, running_daemon

GROUP = "DBA Group"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=10)
    minutes = p.parse_args().minutes
    with bench_env() as b:
        b.emulator.directory.lifetime = 60
        pg = Postgres(b.emulator.ldap.port).start()
        try:
            pg.add_roles([GROUP])
            pgpass = b.home / ".pgpass"
            cfg = b.config(
                b.sp_identity() + f'[targets.db]\nhost = "127.0.0.1"\nport = {pg.port}\n'
                f'database = "appdb"\nuser = "{GROUP}"\nidentity = "sp"\n'
            )
            with running_daemon(b, cfg):
                results = probe(b, pg, pgpass, minutes * 60)
        finally:
            pg.stop()
    share = 100.0 * results["valid"] / max(results["pgpass_probes"], 1)
    print(f"# freshness: {minutes:g} min of 60-s tokens, three 20-s outages ({machine()})")
    print(f"{'measure':<44} {'value':>10}  target")
    print(f"{'pgpass probes (every 100 ms)':<44} {results['pgpass_probes']:>10}")
    print(f"{'  holding a valid token':<44} {share:>9.2f}%  100 %")
    print(f"{'psql logins (every 1 s)':<44} {results['psql']:>10}")
    print(f"{'  failed':<44} {results['psql_failed']:>10}  0")
    print(f"{'tokens seen in pgpass':<44} {len(results['tokens']):>10}")
    print(f"{'outages (s, at minute)':<44} {', '.join(results['outages']):>10}")


def probe(b, pg: Postgres, pgpass, seconds: float) -> dict:
    stop = threading.Event()
    out = {"pgpass_probes": 0, "valid": 0, "psql": 0, "psql_failed": 0, "tokens": set(), "outages": []}
    env = {k: v for k, v in b.env.items() if k != "PGPASSWORD"}

    def psql_loop() -> None:
        while not stop.wait(1.0):
            r = subprocess.run(
                [
                    "psql",
                    f"host=127.0.0.1 port={pg.port} dbname=appdb user='{GROUP}' sslmode=require",
                    "-w",
                    "-Atc",
                    "select 1",
                ],
                env=env,
                capture_output=True,
            )
            out["psql"] += 1
            out["psql_failed"] += r.returncode != 0

    t = threading.Thread(target=psql_loop, daemon=True)
    t.start()
    start = time.monotonic()
    outage_at = [seconds * f for f in (0.2, 0.5, 0.8)]
    while (elapsed := time.monotonic() - start) < seconds:
        if outage_at and elapsed >= outage_at[0]:
            outage_at.pop(0)
            b.emulator.refuse_connections()
            threading.Timer(20, b.emulator.accept_connections).start()
            out["outages"].append(f"20@{elapsed / 60:.1f}")
        try:
            token = next((ln[4] for ln in parse(pgpass.read_text()) if ln[3] == GROUP), "")
        except OSError:
            token = ""
        out["pgpass_probes"] += 1
        try:
            b.emulator.directory.check(token, GROUP)
            out["valid"] += 1
            out["tokens"].add(token)
        except TokenRejected:
            pass
        time.sleep(0.1)
    stop.set()
    t.join()
    return out


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
