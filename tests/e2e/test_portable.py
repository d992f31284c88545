"""The daemon end to end on any OS (the CI matrix runs this on Linux, macOS and Windows): started from the installed
launcher, answering status and `tokend token` over this OS's IPC endpoint (a Unix socket, or Windows' named pipe),
writing pgpass, one daemon per config, and a clean stop. Only the emulator is needed — no PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tokend.sinks.pgpass import parse

from support.builders import GROUP, sp_config
from support.product import tokend
from support.tenant import Tenant
from support.waits import wait_for

pytestmark = pytest.mark.portable


def config(em: Tenant, pgpass: Path) -> str:
    return sp_config(
        em,
        5432,
        targets=f'[targets.db]\nhost = "db.example"\ndatabase = "appdb"\nuser = "{GROUP}"\nidentity = "sp"\n',
        extra=f'[sinks.pgpass]\npath = "{pgpass.as_posix()}"\n',
    )


def test_daemon_status_token_and_a_clean_stop(em: Tenant, write_config, daemon, tmp_path: Path) -> None:
    pgpass = tmp_path / "pgpass"
    cfg = write_config(config(em, pgpass))
    d = daemon(cfg)
    status = d.wait_ready()
    assert status["identities"][0]["principal"] == em.app.client_id
    wait_for(lambda: pgpass.exists() and parse(pgpass.read_text()), what="pgpass written")
    token = tokend("token", "--config", str(cfg))
    assert token.returncode == 0, token.stderr
    assert token.stdout.strip() == parse(pgpass.read_text())[0][4]
    assert em.emulator.directory.check(token.stdout.strip(), GROUP)
    human = tokend("status", "--config", str(cfg))
    assert human.returncode == 0 and "db" in human.stdout
    second = tokend("run", "--config", str(cfg), timeout=60)
    assert second.returncode == 1 and "already running" in second.stderr
    if sys.platform == "win32":
        assert tokend("stop", "--config", str(cfg)).returncode == 0
    else:
        d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(15) == 0
    assert parse(pgpass.read_text())[0][4] == token.stdout.strip()  # a stop leaves valid tokens where they are
    gone = tokend("status", "--config", str(cfg))
    assert gone.returncode == 1 and "no tokend daemon" in gone.stderr


def test_status_json_over_this_os_endpoint(em: Tenant, write_config, daemon, tmp_path: Path) -> None:
    cfg = write_config(config(em, tmp_path / "pgpass"))
    d = daemon(cfg)
    d.wait_ready()
    out = json.loads(tokend("status", "--json", "--config", str(cfg)).stdout)
    assert out["pid"] == d.proc.pid and out["targets"][0]["sinks"]["pgpass"]["state"] in ("ok", "pending")
    t0 = time.monotonic()
    for _ in range(20):
        assert tokend("token", "--config", str(cfg)).returncode == 0
    assert time.monotonic() - t0 < 60


def test_the_launcher_runs_without_site(tmp_path: Path) -> None:
    """`tokend --version` through the installed launcher: its Python part starts without site and finds tokend."""
    from support.product import TOKEND

    r = subprocess.run([TOKEND, "--version"], capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 0 and r.stdout.startswith("tokend ")
