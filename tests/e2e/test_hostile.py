"""Another local user attacks a running tokend for minutes while its user works: the attacker never gets a session,
and the daemon's own work — refreshes, pgpass writes, `tokend token`, the user's proxy logins — goes on. Marked
`soak`: tests/run.sh runs it in a pytest process of its own beside the rest."""

from __future__ import annotations

import json
import resource
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tokend.emulator.postgres import Postgres

from support.builders import GROUP, sp_config
from support.clients import pgpass_token, psql
from support.net import free_port
from support.procs import rss_mb
from support.product import PRODUCT_PYTHON, tokend
from support.tenant import Tenant
from support.users import AS_OTHER_USER
from support.waits import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.soak]

ATTACK_SECONDS = 80  # longer than one aggregation interval (60 s) and two refreshes of a 60-s token
MAX_RSS_MB = 150

ATTACK = r"""
import json, os, resource, socket, struct, sys, threading, time

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # an attacker takes all it may have (runuser gives 1024)
HOLD = min(4000, hard // 3)  # idle connections each holder keeps open
tcp, health, unix, seconds = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
end = time.monotonic() + seconds
body = b"user\0DBA Group\0database\0appdb\0\0"
STARTUP = struct.pack("!ii", 8 + len(body), 196608) + body
QUERY = b"Q" + struct.pack("!i", 4 + 19) + b"select current_user\0"
stats = {"sessions": 0, "queries": 0, "proxy_connects": 0, "health_connects": 0, "cancels": 0, "logins": 0,
         "unix_denied": 0, "errors": 0, "open_health": 0, "open_proxy": 0}
lock = threading.Lock()
died = []  # an attack thread that raised would quietly stop attacking: the test fails instead
threading.excepthook = lambda a: died.append(f"{a.thread.name}: {a.exc_type.__name__}: {a.exc_value}")


def count(key, n=1):
    with lock:
        stats[key] += n


def alive(s):
    # still held open by the daemon: nothing to read yet (a refusal is an error message, then the end)
    try:
        s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        pass
    return False


def login(s):
    # send a start-up as the group and see whether the proxy logs it in; if so, run a query
    try:
        s.sendall(STARTUP)
        s.settimeout(30)
        buf = b""
        while True:
            while len(buf) < 5 or len(buf) < 1 + struct.unpack("!i", buf[1:5])[0]:
                chunk = s.recv(65536)
                if not chunk:
                    return
                buf += chunk
            n = 1 + struct.unpack("!i", buf[1:5])[0]
            kind, msg, buf = buf[:1], buf[5:n], buf[n:]
            if kind == b"E":
                return
            if kind == b"R" and msg[:4] == b"\0\0\0\0":
                count("sessions")
            if kind == b"Z":
                s.sendall(QUERY)
            if kind == b"D":
                count("queries")
                return
    except OSError:
        return


def hold(port, key, most):
    # descriptor exhaustion: as many idle connections as the daemon will keep (most: the largest number still open)
    held = []
    while time.monotonic() < end:
        try:
            held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            count(key)
        except OSError:
            count("errors")
            time.sleep(0.01)
        if len(held) >= HOLD:
            held = [s for s in held if alive(s) or s.close()]
            with lock:
                stats[most] = max(stats[most], len(held))
            if len(held) >= HOLD:
                time.sleep(0.05)
    for s in held:
        s.close()


def idle_flood():
    # connect, say nothing, leave: the proxy's TCP listener and the Unix socket (its folder is closed to us)
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", tcp), timeout=2).close()
            count("proxy_connects")
        except OSError:
            count("errors")
            time.sleep(0.01)
        try:
            u = socket.socket(socket.AF_UNIX)
            u.connect(unix)
            u.close()
        except PermissionError:
            count("unix_denied")
        except OSError:
            count("errors")


def cancel_flood():
    i = 0
    while time.monotonic() < end:
        i += 1
        try:
            with socket.create_connection(("127.0.0.1", tcp), timeout=2) as s:
                s.sendall(struct.pack("!iiii", 16, 80877102, i, 4242))
                count("cancels")  # sent: how many the daemon had to refuse (a busy machine answers them slower)
                s.settimeout(5)
                while s.recv(4096):
                    pass
        except OSError:
            count("errors")
            time.sleep(0.01)


def burst():
    # 300 start-ups at once, every few seconds
    while time.monotonic() < end:
        socks = []
        for _ in range(300):
            try:
                socks.append(socket.create_connection(("127.0.0.1", tcp), timeout=2))
            except OSError:
                count("errors")
        threads = [threading.Thread(target=login, args=(s,)) for s in socks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        count("logins", len(socks))
        for s in socks:
            s.close()
        time.sleep(2)


threads = [threading.Thread(target=hold, args=(tcp, "proxy_connects", "open_proxy")),
           threading.Thread(target=hold, args=(health, "health_connects", "open_health")),
           threading.Thread(target=idle_flood), threading.Thread(target=cancel_flood), threading.Thread(target=burst)]
print("attacking", flush=True)
for t in threads:
    t.start()
for t in threads:
    t.join()
stats["died"] = died
print(json.dumps(stats), flush=True)
"""


def test_another_user_attacks_for_minutes_and_gets_nothing(
    em: Tenant, postgres: Postgres, write_config, daemon, pgpass: Path, other_user
) -> None:
    em.emulator.directory.lifetime = 60
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the attacker inherits it: thousands of sockets
    unix_port, tcp, health = free_port(), free_port(), free_port()
    targets = (
        f'[targets.px]\nhost = "127.0.0.1"\nport = {postgres.port}\ndatabase = "appdb"\nuser = "{GROUP}"\n'
        f'identity = "sp"\nsinks = []\nlisten = ["unix:{unix_port}", "127.0.0.1:{tcp}"]\n'
        f'sslrootcert = "{postgres.ca_cert}"\n\n'
        f'[targets.pp]\nhost = "127.0.0.1"\nport = {postgres.port}\ndatabase = "appdb"\nuser = "{GROUP}"\n'
        'identity = "sp"\n'
    )
    cfg = write_config(
        sp_config(em, postgres.port, targets=targets, extra=f'[observe]\nlisten = "127.0.0.1:{health}"\n')
    )
    d = daemon(cfg)
    d.wait_ready()
    proxy = wait_for(lambda: (d.status()["targets"][0]["proxy"] or {}).get("listen"), what="the proxy listening")
    folder = proxy[0]["host"]
    wait_for(lambda: pgpass_token(pgpass), what="pgpass written")
    attacker = subprocess.Popen(
        [
            *AS_OTHER_USER,
            PRODUCT_PYTHON,
            "-c",
            ATTACK,
            str(tcp),
            str(health),
            f"{folder}/.s.PGSQL.{unix_port}",
            str(ATTACK_SECONDS),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert attacker.stdout is not None
    assert attacker.stdout.readline().strip() == "attacking"
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    started = time.monotonic()
    failures: list[str] = []
    logins = rounds = 0
    tokens: set[str] = set()
    rss: list[float] = []
    stop = threading.Event()

    def sample_rss() -> None:
        while not stop.wait(0.5):
            rss.append(rss_mb(d.proc.pid))

    sampler = threading.Thread(target=sample_rss)
    sampler.start()
    try:
        while attacker.poll() is None:
            rounds += 1
            for route, conninfo in (
                ("unix", f"host={folder} port={unix_port} dbname=appdb"),
                ("tcp", f"host=127.0.0.1 port={tcp} dbname=appdb sslmode=require"),
            ):
                r = subprocess.run(
                    ["psql", f"{conninfo} user='{GROUP}' connect_timeout=60", "-w", "-Atc", "select current_user"],
                    capture_output=True,
                    text=True,
                    timeout=90,
                )
                logins += 1
                if r.stdout.strip() != GROUP:
                    failures.append(f"{time.monotonic() - started:.0f}s proxy {route}: {r.stderr.strip()}")
            r = tokend("token", "px", "--config", str(cfg), timeout=60)
            if r.returncode != 0 or not r.stdout.startswith("eyJ"):
                failures.append(f"{time.monotonic() - started:.0f}s tokend token: {r.stderr.strip()}")
            token = pgpass_token(pgpass)
            if token:
                tokens.add(token)
            r = psql(postgres.port)  # libpq reads pgpass: the token there is valid
            if r.stdout.strip() != GROUP:
                failures.append(f"{time.monotonic() - started:.0f}s pgpass login: {r.stderr.strip()}")
        out, err = attacker.communicate(timeout=60)
        assert attacker.returncode == 0, err[-3000:]
    finally:
        stop.set()
        sampler.join()
        if attacker.poll() is None:
            attacker.kill()
    stats = json.loads(out.strip().splitlines()[-1])
    assert not stats["died"], stats["died"]
    assert stats["sessions"] == 0 and stats["queries"] == 0, stats  # the attacker never got a session
    assert stats["proxy_connects"] > 5000 and stats["health_connects"] > 5000 and stats["cancels"] > 100, stats
    assert stats["unix_denied"] > 0 and stats["logins"] >= 300, stats
    assert not failures, failures[:5]
    assert rounds >= 10, rounds
    assert len(tokens) >= 2, tokens  # refreshes went on during the attack, and reached pgpass
    status = d.status()
    assert all(i["state"] == "ok" for i in status["identities"]), status["identities"]
    assert status["targets"][0]["proxy"]["total"] == logins  # every session the proxy ever made was ours
    assert max(rss) < MAX_RSS_MB, f"daemon RSS reached {max(rss):.0f} MB"
    log = d.log()
    assert "Traceback" not in log, log[-3000:]
    assert "more like it in the last 60 s" in log  # the refusals were counted, not written one by one
    print(f"attacker: {stats}; victim: {logins} proxy logins in {rounds} rounds; RSS max {max(rss):.0f} MB")
