"""Reliability and security: crashes mid-write, concurrent writers, faults of every kind, a wall clock that jumps,
and secrets that stay secret (modes, another local user, process arguments)."""

from __future__ import annotations

import os
import pwd
import random
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tokend import paths
from tokend.emulator.postgres import Postgres
from tokend.sinks.pgpass import parse

from support.builders import GROUP, SECRET, sp_config
from support.clients import pgpass_token, psql
from support.procs import cpu_seconds
from support.product import PRODUCT_PYTHON, tokend
from support.tenant import Tenant
from support.waits import wait_for

USER_LINES = "# mine, keep\nlegacy.example:5432:*:bob:hunter2\n*:*:*:carol:pa\\:ss\n"

WRITER = """
import sys
from tokend.config import Target
from tokend.sinks import Entry
from tokend.sinks.pgpass import PgpassSink
from tokend.token import Token
sink = PgpassSink({"path": sys.argv[1]}, "crash")
targets = [Target(f"t{n}", f"host{n}.example", 5432, "*", "DBA Group", "me", ("pgpass",)) for n in range(20)]
i = int(sys.argv[2])
while True:
    i += 1
    sink.sync([Entry(t, Token(f"token-{i}-" + "x" * 1800, 2e9, 0)) for t in targets[: 1 + i % 20]])
    print(i, flush=True)
"""


def test_kill_9_at_random_moments_never_damages_pgpass(tmp_path: Path) -> None:
    """The writer here is the daemon's own pgpass sink in a loop (to get 200+ rewrites quickly), killed -9 at random
    moments; after every kill the file parses, the user's lines are intact, and a new writer cleans the leftovers."""
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(USER_LINES)
    rewrites, kills, rng = 0, 0, random.Random(7)
    while rewrites < 200:
        proc = subprocess.Popen(
            [PRODUCT_PYTHON, "-c", WRITER, str(pgpass), str(rewrites)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        target = rewrites + rng.randint(1, 12)
        while rewrites < target:
            line = proc.stdout.readline()
            assert line, "writer died"
            rewrites = int(line)
        time.sleep(rng.random() * 0.01)  # land the kill anywhere inside the next write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        data = pgpass.read_text()
        assert data.endswith(USER_LINES)
        lines = parse(data)
        assert all(ln[4].startswith("token-") for ln in lines[:-2]) and len(lines) >= 3
    assert kills >= 15
    leftovers = list(tmp_path.glob(".pgpass.*.tokend.tmp"))
    subprocess.run(
        [PRODUCT_PYTHON, "-c", WRITER.replace("while True", "for _ in range(1)"), str(pgpass), "0"],
        check=True,
        capture_output=True,
    )
    assert not list(tmp_path.glob(".pgpass.*.tokend.tmp")), f"left over: {leftovers}"
    assert pgpass.read_text().endswith(USER_LINES)


def test_two_daemons_and_a_person_editing_lose_nothing(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon
) -> None:
    em.emulator.directory.lifetime = 8  # a rewrite every ~4 s from each daemon
    a = write_config(sp_config(em, postgres.port), "a.toml")
    b = write_config(
        sp_config(
            em, postgres.port, targets=('[targets.other]\nhost = "other.example"\nuser = "someone"\nidentity = "sp"\n')
        ),
        "b.toml",
    )
    pgpass.write_text(USER_LINES)
    da, db = daemon(a), daemon(b)
    da.wait_ready()
    db.wait_ready()
    added = []
    deadline = time.monotonic() + 25
    n = 0
    while time.monotonic() < deadline:  # a person saving with an editor (write a copy, rename it over)
        n += 1
        line = f"edit{n}.example:5432:*:u:p{n}\n"
        tmp = pgpass.with_name(".pgpass.editor~")
        tmp.write_text(pgpass.read_text() + line)
        tmp.chmod(0o600)  # editors keep the file's mode
        os.replace(tmp, pgpass)
        added.append(line)
        time.sleep(0.2)
    wait_for(
        lambda: {"other.example", "127.0.0.1"} <= {ln[0] for ln in parse(pgpass.read_text())},
        what="both daemons' lines",
    )
    text = pgpass.read_text()
    assert all(line in text for line in added), [line for line in added if line not in text][:3]
    assert USER_LINES in text
    # The block is intact and current: libpq logs in (8-s tokens: on a loaded machine the line may be between an
    # expired token's removal and the next one's write for a moment, so the login gets a deadline, not one try).
    wait_for(lambda: psql(postgres.port).stdout.strip() == GROUP, timeout=20, what="a login as the group via pgpass")


def test_faults_are_states_not_crashes(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon, tmp_path: Path
) -> None:
    """500s beyond azure-core's retries, DNS failure, and `az` missing: each
    gives its state and a one-line reason, retries with backoff, and never a crash or a busy loop."""
    sp = sp_config(em, postgres.port, targets="")
    dns = sp.replace("[identities.sp]", "[identities.dns]").replace(em.url, "https://no-such-host.invalid")
    targets = "".join(
        f'[targets.{n}]\nhost = "{n}.example"\nuser = "u"\nidentity = "{n}"\n' for n in ("sp", "dns", "cli")
    )
    cfg = write_config(sp + dns + '[identities.cli]\nsource = "azure-cli"\n' + targets)
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no az here
    em.emulator.fail_next(1000, 500)
    d = daemon(cfg, env=env)
    states = lambda: {i["name"]: i for i in (d.status() or {"identities": []})["identities"]}  # noqa: E731
    wait_for(lambda: states().get("sp", {}).get("state") == "failed", timeout=60, what="500s → failed")
    assert "500" in states()["sp"]["last_error"] or "server" in states()["sp"]["last_error"].lower()
    assert states()["dns"]["state"] == "failed"
    assert states()["cli"]["state"] == "unavailable" and "Azure CLI not found" in states()["cli"]["last_error"]
    cpu0, t0 = cpu_seconds(d.proc.pid), time.monotonic()
    time.sleep(15)  # watching the daemon under faults, not waiting for a condition
    assert cpu_seconds(d.proc.pid) - cpu0 < 0.25 * (time.monotonic() - t0), "busy looping under faults"
    for line in (states()[n]["last_error"] for n in ("sp", "dns", "cli")):
        assert "\n" not in line and "Traceback" not in line and len(line) <= 400
    em.emulator.fail_next(0)
    wait_for(lambda: states()["sp"]["state"] == "ok", timeout=30, what="recovered from 500s")
    assert d.proc.poll() is None


def test_tls_error_is_reported(em: Tenant, postgres: Postgres, write_config, tmp_path: Path) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    system_only = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    r = tokend("run", "--once", "--config", str(cfg), env={**os.environ, "REQUESTS_CA_BUNDLE": system_only})
    assert r.returncode == 1
    assert "certificate" in r.stderr.lower() or "ssl" in r.stderr.lower(), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.soak
def test_a_hang_ends_at_the_transport_timeout(em: Tenant, postgres: Postgres, write_config, daemon) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg)
    d.wait_ready()
    em.emulator.hang_next(1000, 300)
    t0 = time.monotonic()
    one_shot = write_config(cfg.read_text(), "once.toml")  # the running daemon holds cfg's instance lock
    r = tokend("run", "--once", "--config", str(one_shot), timeout=240)
    elapsed = time.monotonic() - t0
    assert r.returncode == 1 and ("timed out" in r.stderr.lower() or "timeout" in r.stderr.lower()), r.stderr
    assert elapsed < 120, elapsed
    assert d.status() is not None and d.proc.poll() is None  # the running daemon kept answering meanwhile


def test_wall_clock_jump_past_expiry_gets_a_fresh_token_within_seconds(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon, faketime
) -> None:
    """A laptop waking: the wall clock jumps two hours while the monotonic clock did not move (libfaketime, with
    monotonic time left real)."""
    env, offset = faketime
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg, env=env)
    before = d.wait_ready()["identities"][0]["expires_on"]
    offset.write_text("+2h\n")
    jumped = time.monotonic()
    wait_for(
        lambda: ((d.status() or {"identities": [{}]})["identities"][0].get("expires_on") or 0) > before + 7000,
        timeout=20,
        interval=0.2,
        what="a fresh token after the jump",
    )
    fresh = tokend("token", "--config", str(cfg)).stdout.strip()
    # the identity holds it; the pgpass writer follows: wait for the file, not for the identity
    wait_for(lambda: pgpass_token(pgpass) == fresh, timeout=20, interval=0.05, what="the fresh token in pgpass")
    # its boot clock says the old token has ~56 minutes left: only noticing the jump explains a fresh one this soon
    assert time.monotonic() - jumped < 60
    assert psql(postgres.port).stdout.strip() == GROUP  # and it is a real, valid token
    assert "overflow" not in d.log().lower()  # nobody's reads of the watched folders flood the watcher


def test_files_are_private_and_another_user_gets_nothing(
    em: Tenant, postgres: Postgres, pgpass: Path, home: Path, write_config, daemon
) -> None:
    cfg = write_config(sp_with_everything(em, postgres))
    d = daemon(cfg)
    d.wait_ready()
    wait_for(lambda: pgpass.exists() and (home / ".pg_service.conf").exists(), what="sinks written")
    made = [pgpass, home / ".pg_service.conf", paths.socket_path(cfg), paths.lock_path(cfg), paths.log_file(cfg)]
    for f in made:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    for folder in (paths.socket_path(cfg).parent, home / ".local" / "state" / "tokend" / "log"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    if os.geteuid() != 0:
        pytest.skip("creating a second local user needs root (CI runs as root)")
    other = "tokend-other"
    try:
        pwd.getpwnam(other)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", other], check=True)
    probe = (
        "import socket, sys\nprint('RAN')\nfor p in sys.argv[1:]:\n"
        "    try:\n        s = socket.socket(socket.AF_UNIX); s.connect(p); print('CONNECTED', p)\n"
        "    except OSError:\n        pass\n"
        "    try:\n        open(p, 'rb').read(1); print('READ', p)\n    except OSError:\n        pass\n"
    )
    control = home / "world-readable.txt"  # proves the probe can read what it is allowed to
    control.write_text("x")
    control.chmod(0o644)
    # let the other user reach the files (open the folders on the way); the files themselves must still refuse
    for f in [*made, control]:
        for parent in f.parents:
            if parent == Path("/"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
    r = subprocess.run(
        ["runuser", "-u", other, "--", "/usr/bin/python3", "-c", probe, *map(str, made), str(control)],
        capture_output=True,
        text=True,
    )
    assert "RAN" in r.stdout and f"READ {control}" in r.stdout, r.stdout + r.stderr
    leaked = [
        line for line in r.stdout.splitlines() if line.startswith(("CONNECTED", "READ")) and str(control) not in line
    ]
    assert not leaked, leaked


def sp_with_everything(em: Tenant, pg: Postgres) -> str:
    return sp_config(
        em,
        pg.port,
        targets=(
            f'[targets.db]\nhost = "127.0.0.1"\nport = {pg.port}\ndatabase = "appdb"\nuser = "{GROUP}"\n'
            'identity = "sp"\nsinks = ["pgpass", "pg_service"]\n'
        ),
    )


def test_no_token_in_child_arguments(em: Tenant, postgres: Postgres, write_config, daemon) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg)
    d.wait_ready()
    token = tokend("token", "--config", str(cfg)).stdout.strip()
    r = tokend(
        "exec", "db", "--config", str(cfg), "--", "sh", "-c", "cat /proc/$$/cmdline; echo; cat /proc/$PPID/cmdline"
    )
    assert r.returncode == 0
    assert token not in r.stdout and SECRET not in r.stdout
    assert token not in Path(f"/proc/{d.proc.pid}/cmdline").read_text()
