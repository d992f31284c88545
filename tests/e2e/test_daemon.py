"""Real daemons end to end: rotation under load, outages, IPC commands, signals, single instance, secrets in logs."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import jwt
import psycopg
import pytest

from tokend import paths
from tokend.emulator.directory import TokenRejected
from tokend.emulator.postgres import Postgres

from support.builders import GROUP, SECRET, sp_config
from support.clients import pgpass_token, psql
from support.procs import cpu_seconds
from support.product import PRODUCT_PYTHON, tokend
from support.tenant import Tenant
from support.waits import wait_for


def assert_no_secret_in(text: str, em: Tenant) -> None:
    assert SECRET not in text
    for issued in em.emulator.directory.issued:
        token = issued["token"]
        assert token not in text
        assert token.split(".")[2] not in text  # not even the signature alone


def test_status_token_exec(em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg)
    status = d.wait_ready()
    ident = status["identities"][0]
    assert ident["name"] == "sp" and ident["source"] == "service-principal" and ident["state"] == "ok"
    assert ident["principal"] == em.app.client_id and ident["expires_on"] > time.time() + 3000
    assert ident["refresh_at"] < ident["expires_on"] and ident["last_error"] is None
    target = status["targets"][0]
    assert {k: target[k] for k in ("name", "host", "port", "database", "user", "identity")} == {
        "name": "db",
        "host": "127.0.0.1",
        "port": postgres.port,
        "database": "appdb",
        "user": GROUP,
        "identity": "sp",
    }
    wait_for(lambda: d.status()["targets"][0]["sinks"]["pgpass"]["state"] == "ok", what="pgpass written")
    sink = d.status()["targets"][0]["sinks"]["pgpass"]
    assert sink["location"] == str(pgpass) and sink["last_write"] >= time.time() - 60

    human = tokend("status", "--config", str(cfg))
    assert human.returncode == 0 and "sp" in human.stdout and "expires in" in human.stdout

    token = tokend("token", "--config", str(cfg))
    assert token.returncode == 0, token.stderr
    assert token.stdout.strip() == pgpass_token(pgpass)
    assert em.emulator.directory.check(token.stdout.strip(), GROUP)
    assert tokend("token", "db", "--config", str(cfg)).stdout == token.stdout
    # scripts' hot path: answered by the daemon without importing azure-identity (or argparse, or logging)
    probe_imports = (
        "import sys; from tokend.cli import main; rc = main(['token', '--config', sys.argv[1]]); "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('azure', 'msal', 'argparse', 'logging')]; "
        "print(rc, heavy, file=sys.stderr)"
    )
    r = subprocess.run([PRODUCT_PYTHON, "-c", probe_imports, str(cfg)], capture_output=True, text=True)
    assert r.stdout == token.stdout and r.stderr.strip() == "0 []", r.stderr

    r = tokend("exec", "db", "--config", str(cfg), "--", "psql", "-Atc", "select current_user, current_database()")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{GROUP}|appdb"
    r = tokend("exec", "--config", str(cfg), "db", "--", "sh", "-c", 'echo "$PGSSLMODE $PGHOST $PGPORT $PGUSER"')
    assert r.stdout.strip() == f"require 127.0.0.1 {postgres.port} {GROUP}"
    env = dict(os.environ, PGSSLMODE="verify-full")
    r = tokend("exec", "db", "--config", str(cfg), "--", "sh", "-c", 'echo "$PGSSLMODE"', env=env)
    assert r.stdout.strip() == "verify-full"
    r = tokend("exec", "db", "--config", str(cfg), "--", "false")
    assert r.returncode == 1  # the command's own exit code passes through

    missing = tokend("token", "nope", "--config", str(cfg))
    assert missing.returncode == 2 and "no target 'nope'" in missing.stderr

    # the IPC socket and its folder are private
    sock = paths.socket_path(cfg)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700

    assert d.stop() == 0
    assert_no_secret_in(d.log(), em)


def test_token_and_exec_without_daemon(em: Tenant, postgres: Postgres, pgpass: Path, write_config) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    r = tokend("token", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert em.emulator.directory.check(r.stdout.strip(), GROUP)
    r = tokend("exec", "db", "--config", str(cfg), "--", "psql", "-Atc", "select current_user")
    assert r.returncode == 0 and r.stdout.strip() == GROUP, r.stderr
    status = tokend("status", "--config", str(cfg))
    assert status.returncode == 1 and "no tokend daemon" in status.stderr and "tokend run" in status.stderr


def test_single_instance_and_signals(em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    first = daemon(cfg)
    first.wait_ready()
    second = tokend("run", "--config", str(cfg), timeout=30)
    assert second.returncode == 1
    assert "already running" in second.stderr and str(first.proc.pid) in second.stderr
    assert "Traceback" not in second.stderr
    for sig in (signal.SIGTERM, signal.SIGINT):
        d = first if sig == signal.SIGTERM else daemon(cfg)
        d.wait_ready()
        t0 = time.monotonic()
        d.proc.send_signal(sig)
        assert d.proc.wait(30) == 0
        # not held up by a sleeping refresher (it sleeps up to 10 s at a time): how fast is bench/, not here
        assert time.monotonic() - t0 < 8
        assert not paths.socket_path(cfg).exists()
    # tokend stop takes the same path
    d = daemon(cfg)
    d.wait_ready()
    assert tokend("stop", "--config", str(cfg)).returncode == 0
    assert d.proc.wait(5) == 0


def test_kill_9_then_restart(em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon) -> None:
    pgpass.write_text("# mine\nother:5432:*:me:secret\n")
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg)
    d.wait_ready()
    wait_for(lambda: pgpass_token(pgpass), what="token in pgpass")
    d.proc.kill()
    d.proc.wait()
    assert pgpass.read_text().endswith("# mine\nother:5432:*:me:secret\n")
    assert psql(postgres.port).returncode == 0  # still valid after the crash
    d2 = daemon(cfg)
    d2.wait_ready()
    assert psql(postgres.port).stdout.strip() == GROUP


def test_removed_target_leaves_pgpass(em: Tenant, postgres: Postgres, pgpass: Path, write_config) -> None:
    two = sp_config(em, postgres.port) + '\n[targets.old]\nhost = "old.example"\nuser = "someone"\nidentity = "sp"\n'
    cfg = write_config(two)
    assert tokend("run", "--once", "--config", str(cfg)).returncode == 0
    assert "old.example" in pgpass.read_text()
    cfg.write_text(sp_config(em, postgres.port))
    assert tokend("run", "--once", "--config", str(cfg)).returncode == 0
    assert "old.example" not in pgpass.read_text() and pgpass_token(pgpass)


def test_unwritable_pgpass_is_one_line_and_writes_nothing(
    em: Tenant, postgres: Postgres, tmp_path: Path, write_config
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    cfg = write_config(sp_config(em, postgres.port, extra=f'[sinks.pgpass]\npath = "{blocker}/pgpass"\n'))
    r = tokend("run", "--once", "--config", str(cfg))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a folder" in lines[0] and "Traceback" not in r.stderr
    assert blocker.read_text() == "x"


def probe(pg: Postgres, pgpass: Path, em: Tenant) -> list[str]:
    """One probe: the token in pgpass is valid now, psql and psycopg log in as the group with no password. A failed
    login is told with the token check's own reason and how long the token read before it had left."""
    problems = []
    since = time.time()
    token = pgpass_token(pgpass)
    try:
        em.emulator.directory.check(token or "", GROUP)
    except TokenRejected as e:
        problems.append(f"pgpass: {e}")
    r = psql(pg.port)
    if r.returncode != 0 or r.stdout.strip() != GROUP:
        refused = [c["reason"] for c in list(em.emulator.ldap.checks) if c["at"] >= since and not c["ok"]]
        left = jwt.decode(token or "", options={"verify_signature": False})["exp"] - since if token else None
        server = [ln for ln in pg.log.read_text(errors="replace").splitlines() if "LDAP" in ln][-2:]
        problems.append(
            f"psql: {r.stderr.strip()} (token check: {refused or 'none refused'}; token had {left} s left;"
            f" the server said {server})"
        )
    try:
        with psycopg.connect(
            host="127.0.0.1", port=pg.port, dbname="appdb", user=GROUP, sslmode="require", connect_timeout=10
        ) as conn:
            user = conn.execute("select current_user").fetchone()
            if user != (GROUP,):
                problems.append(f"psycopg: logged in as {user}")
    except psycopg.Error as e:
        problems.append(f"psycopg: {e}")
    return problems


@pytest.mark.soak
@pytest.mark.slow
def test_five_minutes_of_60_second_tokens(em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon) -> None:
    em.emulator.directory.lifetime = 60
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg, "--debug")
    d.wait_ready()
    wait_for(lambda: pgpass_token(pgpass), what="token in pgpass")
    start, problems, probes, seen = time.monotonic(), [], 0, set()
    while time.monotonic() - start < 300:
        t0 = time.monotonic()
        problems += probe(postgres, pgpass, em)
        probes += 1
        seen.add(pgpass_token(pgpass))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    assert problems == [], (problems[:5], [ln for ln in d.log().splitlines() if "identity sp" in ln][-20:])
    assert probes >= 200 and len(seen) >= 8  # at least one new token every ~35 s
    assert d.proc.poll() is None
    assert d.stop() == 0
    assert_no_secret_in(d.log(), em)


@pytest.mark.soak
def test_outage_shorter_than_token_life_costs_no_connect(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon
) -> None:
    em.emulator.directory.lifetime = 60
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg)
    d.wait_ready()
    first = wait_for(lambda: pgpass_token(pgpass), what="token in pgpass")
    second = wait_for(lambda: (t := pgpass_token(pgpass)) != first and t, timeout=60, what="a rotation")
    issued = next(i for i in em.emulator.directory.issued if i["token"] == second)
    # The outage covers the next refresh (due at half-life) and ends before the held token expires.
    wait_for(lambda: time.time() >= issued["iat"] + 25, timeout=40)
    em.emulator.refuse_connections()
    outage_end = issued["iat"] + 45
    problems = []
    while time.time() < outage_end:
        problems += probe(postgres, pgpass, em)
        time.sleep(0.5)
    em.emulator.accept_connections()
    end = time.time() + 20
    while time.time() < end:
        problems += probe(postgres, pgpass, em)
        time.sleep(0.5)
    assert problems == [], problems[:5]
    assert pgpass_token(pgpass) not in (first, second)
    assert "connection refused" in d.log().lower() or "failed to establish" in d.log().lower()


@pytest.mark.soak
def test_long_outage_recovers_within_seconds(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon
) -> None:
    em.emulator.directory.lifetime = 60
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg)
    d.wait_ready()
    wait_for(lambda: pgpass_token(pgpass), what="token in pgpass")
    em.emulator.refuse_connections()
    cpu0 = cpu_seconds(d.proc.pid)
    # the held token expires during the outage and leaves pgpass
    wait_for(lambda: pgpass_token(pgpass) is None, timeout=75, interval=0.5, what="expired token removed")
    status = d.status()
    assert status["identities"][0]["state"] == "failed" and status["identities"][0]["last_error"]
    time.sleep(10)  # part of the outage itself, not a wait for a condition
    assert d.proc.poll() is None
    cpu = cpu_seconds(d.proc.pid) - cpu0
    assert cpu < 10, f"daemon used {cpu:.1f} s of CPU during the outage: spinning"
    back = time.monotonic()
    em.emulator.accept_connections()
    wait_for(lambda: psql(postgres.port).returncode == 0, timeout=30, interval=0.5, what="login after outage")
    recovered = time.monotonic() - back
    assert recovered < 20, recovered
    assert d.status()["identities"][0]["state"] == "ok"


def test_status_json_is_the_contract(em: Tenant, postgres: Postgres, write_config, daemon) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg)
    d.wait_ready()
    out = json.loads(
        subprocess.run([*tokend_cmd(), "status", "--json", "--config", str(cfg)], capture_output=True, text=True).stdout
    )
    assert set(out) >= {"identities", "targets"}
    assert set(out["identities"][0]) >= {
        "name",
        "source",
        "state",
        "principal",
        "expires_on",
        "refresh_at",
        "last_error",
    }
    assert set(out["targets"][0]) >= {"name", "host", "port", "database", "user", "identity", "sinks"}
    assert set(out["targets"][0]["sinks"]["pgpass"]) >= {"state", "last_write"}
    assert all(isinstance(out["identities"][0][k], int) for k in ("expires_on", "refresh_at"))


def tokend_cmd() -> list[str]:
    from support.product import TOKEND

    return [TOKEND]


def test_status_watch_redraws(em: Tenant, postgres: Postgres, write_config, daemon) -> None:
    from support.product import TOKEND

    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg)
    d.wait_ready()
    proc = subprocess.Popen([TOKEND, "status", "--watch", "--config", str(cfg)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        seen, deadline = [], time.monotonic() + 15
        while sum(line.startswith("IDENTITY") for line in seen) < 2 and time.monotonic() < deadline:
            seen.append(proc.stdout.readline())
        assert sum(line.startswith("IDENTITY") for line in seen) == 2
        assert not any("\033[" in line for line in seen)  # no colour or screen control when not on a terminal
    finally:
        proc.terminate()
        proc.wait(5)
