"""The local proxy's cost: pgbench select-only (-S, 8 clients) through tokend's proxy, through stunnel4 (Debian's C
TLS relay with `protocol = pgsql`, the reference for what a relay costs) and direct TLS to the same token-checking
PostgreSQL, alternated --rounds times in one run. Prints per-round TPS, the medians of the per-round ratios, each
relay's CPU per transaction (µs, from /proc), and connection set-up (pgbench -C: a new connection per transaction).

Run: .venv/bin/python bench/proxy.py [--rounds 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tokend.emulator.postgres import Postgres

from _setup import TOKEND, bench_env, cpu_seconds, machine, running_daemon

PROXY_PORT = 16499
STUNNEL_PORT = 16498


def pgbench(bindir: Path, conninfo: str, env: dict[str, str], seconds: int, *extra: str) -> float:
    r = subprocess.run(
        [str(bindir / "pgbench"), "-n", "-S", "-c", "8", "-j", "2", "-T", str(seconds), *extra, conninfo],
        env=env,
        capture_output=True,
        text=True,
    )
    for line in r.stdout.splitlines():
        if line.startswith("tps"):
            return float(line.split()[2])
    raise RuntimeError(f"pgbench failed: {r.stdout}{r.stderr}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=10)
    args = p.parse_args()
    if not shutil.which("stunnel4"):
        raise SystemExit("stunnel4 is not installed (apt-get install stunnel4)")
    with bench_env() as b:
        pg = Postgres(b.emulator.ldap.port).start()
        try:
            pg.add_roles(["DBA Group"])
            subprocess.run(
                [
                    str(pg.bindir / "pgbench"),
                    "-i",
                    "-s",
                    "1",
                    "-h",
                    str(pg.sockdir),
                    "-p",
                    str(pg.port),
                    "-U",
                    "tokend_admin",
                    "appdb",
                ],
                check=True,
                capture_output=True,
            )
            pg.sql('GRANT SELECT ON ALL TABLES IN SCHEMA public TO "DBA Group"', "appdb")
            cfg = b.config(
                b.sp_identity() + f'[targets.db]\nhost = "127.0.0.1"\nport = {pg.port}\n'
                f'database = "appdb"\nuser = "DBA Group"\nidentity = "sp"\nsinks = []\n'
                f'listen = ["unix:{PROXY_PORT}", "127.0.0.1:{PROXY_PORT}"]\nsslrootcert = "{pg.ca_cert}"\n'
            )
            with running_daemon(b, cfg) as daemon:
                token = subprocess.run(
                    [TOKEND, "token", "--config", str(cfg)], env=b.env, capture_output=True, text=True, check=True
                ).stdout.strip()
                env = {
                    **{k: v for k, v in b.env.items() if not k.startswith("PG")},
                    "PGUSER": "DBA Group",
                    "PGDATABASE": "appdb",
                }
                folder = Path(b.env["XDG_RUNTIME_DIR"]) / "tokend"
                proxy_dir = next(p for p in folder.iterdir() if p.is_dir() and p.name != "locks")
                conf = Path(tempfile.mkdtemp()) / "stunnel.conf"
                conf.write_text(
                    f"foreground = yes\npid =\n[pg]\nclient = yes\naccept = 127.0.0.1:{STUNNEL_PORT}\n"
                    f"connect = 127.0.0.1:{pg.port}\nprotocol = pgsql\nverifyChain = no\n"
                )
                stunnel = subprocess.Popen(
                    ["stunnel4", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                time.sleep(1.0)
                routes = {
                    "direct TLS": (f"host=127.0.0.1 port={pg.port} sslmode=require", None, token),
                    "stunnel4": (f"host=127.0.0.1 port={STUNNEL_PORT} sslmode=disable", stunnel.pid, token),
                    "tokend proxy (unix socket)": (f"host={proxy_dir} port={PROXY_PORT}", daemon.pid, None),
                    "tokend proxy (tcp)": (f"host=127.0.0.1 port={PROXY_PORT} sslmode=disable", daemon.pid, None),
                }
                tps: dict[str, list[float]] = {k: [] for k in routes}
                cpu: dict[str, list[float]] = {k: [] for k in routes}
                for _ in range(args.rounds):
                    for name, (conninfo, pid, password) in routes.items():
                        e = {**env, **({"PGPASSWORD": password} if password else {})}
                        c0 = cpu_seconds(pid) if pid else 0.0
                        t = pgbench(pg.bindir, conninfo, e, args.seconds)
                        if pid:
                            cpu[name].append((cpu_seconds(pid) - c0) / (t * args.seconds) * 1e6)
                        tps[name].append(t)
                setup = {}
                for name, (conninfo, _pid, password) in routes.items():
                    e = {**env, **({"PGPASSWORD": password} if password else {})}
                    setup[name] = 1000 / pgbench(pg.bindir, conninfo, e, args.seconds, "-C") * 8
                stunnel.terminate()
        finally:
            pg.stop()
    print(f"# local proxy, pgbench -S -c 8, {args.rounds} rounds of {args.seconds} s ({machine()})")
    print(f"{'route':<30} {'tps per round':<26} {'median':>8} {'cpu µs/txn':>11} {'connect ms':>11}")
    for name in routes:
        rounds = " ".join(f"{t:.0f}" for t in tps[name])
        c = f"{statistics.median(cpu[name]):.1f}" if cpu[name] else "-"
        print(f"{name:<30} {rounds:<26} {statistics.median(tps[name]):>8.0f} {c:>11} {setup[name]:>11.2f}")
    for name in ("tokend proxy (unix socket)", "tokend proxy (tcp)"):
        vs_stunnel = statistics.median(a / b for a, b in zip(tps[name], tps["stunnel4"], strict=True))
        vs_direct = statistics.median(a / b for a, b in zip(tps[name], tps["direct TLS"], strict=True))
        print(f"{name}: {vs_stunnel:.2f} × stunnel4, {vs_direct:.2f} × direct TLS (medians of per-round ratios)")
    s_direct = statistics.median(a / b for a, b in zip(tps["stunnel4"], tps["direct TLS"], strict=True))
    print(f"stunnel4: {s_direct:.2f} × direct TLS")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
