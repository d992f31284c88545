"""The local proxy's cost: pgbench select-only (-S, 8 clients) through tokend's proxy, through stunnel4 (Debian's C
TLS relay with `protocol = pgsql`, the reference for what a relay costs) and direct TLS to the same token-checking
PostgreSQL, alternated --rounds times in one run. Prints per-round TPS, the medians of the per-round ratios, each
relay's CPU per transaction (µs, from /proc), and connection set-up (pgbench -C: a new connection per transaction).

Then, with --setup and --memory (both run unless --only names one part):
- connection set-up, one client at a time (pgbench -C -c 1: connect, log in, one select, close), through the proxy's
  Unix socket and TCP listener against direct TLS verified like the proxy's server leg (verify-full), alternated;
  the target: the Unix socket within 1.15× of direct;
- the daemon's memory per idle connection that never logs in (plain, and after a TLS handshake), and per refused
  connection (another local user's: `nobody`, through runuser, so it needs root), from its resident memory before
  and with them open; the target: under 50 KB.

Run: .venv/bin/python bench/proxy.py [--rounds 3] [--seconds 10] [--only throughput|setup|memory]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import ssl
import statistics
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from tokend.emulator.postgres import Postgres

from _setup import TOKEND, bench_env, cpu_seconds, machine, rss_mb, running_daemon

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


def setup_ms(bindir: Path, conninfo: str, env: dict[str, str], seconds: int) -> float:
    """Milliseconds per connection, one client, a new connection per transaction."""
    r = subprocess.run(
        [str(bindir / "pgbench"), "-n", "-S", "-C", "-c", "1", "-T", str(seconds), conninfo],
        env=env,
        capture_output=True,
        text=True,
    )
    for line in r.stdout.splitlines():
        if line.startswith("tps"):
            return 1000 / float(line.split()[2])
    raise RuntimeError(f"pgbench failed: {r.stdout}{r.stderr}")


def settled_rss(pid: int) -> float:
    """Resident memory once it stops moving (two samples 0.5 s apart within 0.1 MB), MB."""
    last = rss_mb(pid)
    for _ in range(40):
        time.sleep(0.5)
        now = rss_mb(pid)
        if abs(now - last) < 0.1:
            return now
        last = now
    return last


def idle_connections(where: str | int, n: int, tls: bool = False) -> list[socket.socket]:
    """``n`` connections that never send a start-up message (after a TLS handshake with ``tls``)."""
    out: list[socket.socket] = []
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    for _ in range(n):
        if isinstance(where, str):
            s = socket.socket(socket.AF_UNIX)
            s.connect(where)
        else:
            s = socket.create_connection(("127.0.0.1", where))
        if tls:
            s.sendall(struct.pack("!ii", 8, 80877103))
            assert s.recv(1) == b"S"
            s = ctx.wrap_socket(s)
        out.append(s)
    return out


REFUSED = """
import socket, sys
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(int(sys.argv[2]))]
print("open", flush=True)
sys.stdin.readline()
for s in socks:
    while s.recv(4096):
        pass
"""


def memory(daemon_pid: int, unix: str, tcp: int, n: int) -> dict[str, float]:
    """KB of the daemon's resident memory per connection of each kind, ``n`` of them open at once."""
    out: dict[str, float] = {}
    for name, args in (("idle, plain (unix socket)", (unix, n)), ("idle, after TLS (tcp)", (tcp, n, True))):
        before = settled_rss(daemon_pid)
        conns = idle_connections(*args)  # type: ignore[arg-type]
        out[name] = (settled_rss(daemon_pid) - before) * 1024 / n
        for c in conns:
            c.close()
        time.sleep(1)
    if os.geteuid() == 0 and shutil.which("runuser"):
        before = settled_rss(daemon_pid)
        other = subprocess.Popen(
            ["runuser", "-u", "nobody", "--", "python3", "-c", REFUSED, str(tcp), str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert other.stdin is not None and other.stdout is not None
        assert other.stdout.readline().strip() == "open"
        out["refused (another user)"] = (settled_rss(daemon_pid) - before) * 1024 / n
        other.stdin.write("\n")
        other.stdin.flush()
        other.wait(60)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--only", choices=("throughput", "setup", "memory"))
    p.add_argument("--idle", type=int, default=500, help="connections held open for the memory figures")
    args = p.parse_args()
    parts = [args.only] if args.only else ["throughput", "setup", "memory"]
    if "throughput" in parts and not shutil.which("stunnel4"):
        raise SystemExit("stunnel4 is not installed (apt-get install stunnel4)")
    with bench_env() as b:
        pg = Postgres(b.emulator.ldap.port, max_connections=2 * args.idle + 50).start()
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
                if "throughput" in parts:
                    throughput(args, pg, env, token, proxy_dir, daemon.pid)
                if "setup" in parts:
                    setup(args, pg, env, token, proxy_dir, daemon.pid)
                if "memory" in parts:
                    print(f"\n# daemon memory per connection, {args.idle} open at once ({machine()})")
                    print(f"{'connection':<30} {'KB each':>8}")
                    for name, kb in memory(
                        daemon.pid, str(proxy_dir / f".s.PGSQL.{PROXY_PORT}"), PROXY_PORT, args.idle
                    ).items():
                        print(f"{name:<30} {kb:>8.1f}")
        finally:
            pg.stop()


def throughput(
    args: argparse.Namespace, pg: Postgres, env: dict[str, str], token: str, proxy_dir: Path, daemon_pid: int
) -> None:
    conf = Path(tempfile.mkdtemp()) / "stunnel.conf"
    conf.write_text(
        f"foreground = yes\npid =\n[pg]\nclient = yes\naccept = 127.0.0.1:{STUNNEL_PORT}\n"
        f"connect = 127.0.0.1:{pg.port}\nprotocol = pgsql\nverifyChain = no\n"
    )
    stunnel = subprocess.Popen(["stunnel4", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    routes = {
        "direct TLS": (f"host=127.0.0.1 port={pg.port} sslmode=require", None, token),
        "stunnel4": (f"host=127.0.0.1 port={STUNNEL_PORT} sslmode=disable", stunnel.pid, token),
        "tokend proxy (unix socket)": (f"host={proxy_dir} port={PROXY_PORT}", daemon_pid, None),
        "tokend proxy (tcp)": (f"host=127.0.0.1 port={PROXY_PORT} sslmode=disable", daemon_pid, None),
    }
    tps: dict[str, list[float]] = {k: [] for k in routes}
    cpu: dict[str, list[float]] = {k: [] for k in routes}
    try:
        for _ in range(args.rounds):
            for name, (conninfo, pid, password) in routes.items():
                e = {**env, **({"PGPASSWORD": password} if password else {})}
                c0 = cpu_seconds(pid) if pid else 0.0
                t = pgbench(pg.bindir, conninfo, e, args.seconds)
                if pid:
                    cpu[name].append((cpu_seconds(pid) - c0) / (t * args.seconds) * 1e6)
                tps[name].append(t)
        connect = {}
        for name, (conninfo, _pid, password) in routes.items():
            e = {**env, **({"PGPASSWORD": password} if password else {})}
            connect[name] = 1000 / pgbench(pg.bindir, conninfo, e, args.seconds, "-C") * 8
    finally:
        stunnel.terminate()
    print(f"# local proxy, pgbench -S -c 8, {args.rounds} rounds of {args.seconds} s ({machine()})")
    print(f"{'route':<30} {'tps per round':<26} {'median':>8} {'cpu µs/txn':>11} {'connect ms':>11}")
    for name in routes:
        rounds = " ".join(f"{t:.0f}" for t in tps[name])
        c = f"{statistics.median(cpu[name]):.1f}" if cpu[name] else "-"
        print(f"{name:<30} {rounds:<26} {statistics.median(tps[name]):>8.0f} {c:>11} {connect[name]:>11.2f}")
    for name in ("tokend proxy (unix socket)", "tokend proxy (tcp)"):
        vs_stunnel = statistics.median(a / b for a, b in zip(tps[name], tps["stunnel4"], strict=True))
        vs_direct = statistics.median(a / b for a, b in zip(tps[name], tps["direct TLS"], strict=True))
        print(f"{name}: {vs_stunnel:.2f} × stunnel4, {vs_direct:.2f} × direct TLS (medians of per-round ratios)")
    s_direct = statistics.median(a / b for a, b in zip(tps["stunnel4"], tps["direct TLS"], strict=True))
    print(f"stunnel4: {s_direct:.2f} × direct TLS")


def setup(
    args: argparse.Namespace, pg: Postgres, env: dict[str, str], token: str, proxy_dir: Path, daemon_pid: int
) -> None:
    """Connection set-up, one client at a time, alternated rounds. The ratio is to direct TLS verified as the proxy
    verifies its server leg (verify-full); `require` (encrypted, not verified) is shown beside it."""
    routes = {
        "direct TLS (verify-full)": (
            f"host=127.0.0.1 port={pg.port} sslmode=verify-full sslrootcert={pg.ca_cert}",
            token,
        ),
        "direct TLS (require)": (f"host=127.0.0.1 port={pg.port} sslmode=require", token),
        "tokend proxy (unix socket)": (f"host={proxy_dir} port={PROXY_PORT}", None),
        "tokend proxy (tcp, plain)": (f"host=127.0.0.1 port={PROXY_PORT} sslmode=disable", None),
        "tokend proxy (tcp, TLS)": (f"host=127.0.0.1 port={PROXY_PORT} sslmode=require", None),
    }
    ms: dict[str, list[float]] = {k: [] for k in routes}
    cpu: dict[str, list[float]] = {k: [] for k in routes}
    for _ in range(args.rounds):
        for name, (conninfo, password) in routes.items():
            e = {**env, **({"PGPASSWORD": password} if password else {})}
            c0 = cpu_seconds(daemon_pid)
            ms[name].append(setup_ms(pg.bindir, conninfo, e, args.seconds))
            cpu[name].append((cpu_seconds(daemon_pid) - c0) * 1000 / (args.seconds * 1000 / ms[name][-1]))
    print(f"\n# connection set-up, pgbench -S -C -c 1, {args.rounds} rounds of {args.seconds} s ({machine()})")
    print(f"{'route':<30} {'ms per connection, per round':<30} {'median':>8} {'× direct':>9} {'daemon cpu ms':>14}")
    direct = ms["direct TLS (verify-full)"]
    for name in routes:
        rounds = " ".join(f"{t:.2f}" for t in ms[name])
        ratio = statistics.median(a / b for a, b in zip(ms[name], direct, strict=True))
        c = f"{statistics.median(cpu[name]):.2f}" if name.startswith("tokend") else "-"
        print(f"{name:<30} {rounds:<30} {statistics.median(ms[name]):>8.2f} {ratio:>9.2f} {c:>14}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
