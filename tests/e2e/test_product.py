"""The product as a new user meets it: stops at any moment are clean, reloads never overlap, bad connection
details are refused before anything is written."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tokend.emulator.postgres import Postgres
from tokend.sinks import block

from support.builders import GROUP, sp_config
from support.clients import pgpass_token, psql
from support.product import TOKEND, tokend
from support.tenant import Tenant
from support.waits import wait_for

USER = "# mine\nlegacy.example:5432:*:bob:hunter2\n"


def catches_sigterm(pid: int) -> bool:
    """Has the process installed a SIGTERM handler yet (its SigCgt mask in /proc)?"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    mask = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), 16)
    return bool(mask & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_at_any_moment_of_start_up_is_clean(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, sig: int
) -> None:
    """20 starts, each stopped at a random moment between the command's first instructions and the end of its
    first-token wait (imports, config, the lock, a token request the emulator holds): exit 0, pgpass intact."""
    cfg = write_config(sp_config(em, postgres.port))
    assert tokend("run", "--once", "--config", str(cfg)).returncode == 0  # a still-valid block, as after a restart
    pgpass.write_text(pgpass.read_text() + USER)
    before = pgpass.read_bytes()
    rng = random.Random(sig)
    em.emulator.hang_next(10_000, 60)  # first tokens never come: the daemon sits in its first-token wait
    exits = []
    for _ in range(20):
        proc = subprocess.Popen(
            [TOKEND, "run", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        wait_for(
            lambda proc=proc: catches_sigterm(proc.pid) or proc.poll() is not None,
            timeout=10,
            interval=0.001,
            what="the command's first instructions",
        )
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(sig)
        out = proc.communicate(timeout=20)[1]
        exits.append((proc.returncode, out.strip()[-300:]))
        assert pgpass.read_bytes() == before
    assert all(code == 0 for code, _ in exits), exits


def test_reloads_arriving_together_never_empty_pgpass(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon, home: Path
) -> None:
    """The file watcher, SIGHUP and `tokend reload` fired together, 20 rounds, each round a different config
    (the pgpass path spelled two ways, a target added and removed), while a probe reads pgpass every 2 ms."""
    base = sp_config(em, postgres.port)
    spellings = ['[sinks.pgpass]\npath = "~/.pgpass"\n', f'[sinks.pgpass]\npath = "{pgpass}"\n']
    extra = '[targets.extra]\nhost = "extra.example"\nuser = "x"\nidentity = "sp"\n'
    cfg = write_config(base)
    d = daemon(cfg)
    d.wait_ready()
    wait_for(lambda: pgpass_token(pgpass), what="first write")
    missing, reads, stop = [], [0], threading.Event()

    def probe() -> None:
        while not stop.is_set():
            try:
                data = pgpass.read_bytes()
            except FileNotFoundError:
                data = b""
            reads[0] += 1
            if block.BEGIN not in data or f":{GROUP}:".encode() not in data:
                missing.append(time.monotonic())
            time.sleep(0.002)

    t = threading.Thread(target=probe)
    t.start()
    try:
        for i in range(20):
            cfg.write_text(base + spellings[i % 2] + (extra if i % 3 else ""))
            d.proc.send_signal(signal.SIGHUP)
            r = tokend("reload", "--config", str(cfg))
            assert r.returncode == 0, r.stderr
        wait_for(lambda: d.status()["config_error"] is None, what="settled")
    finally:
        stop.set()
        t.join()
    assert not missing, f"the block was missing in {len(missing)} of {reads[0]} reads"
    assert reads[0] > 100 and d.proc.poll() is None
    assert psql(postgres.port).stdout.strip() == GROUP


@pytest.mark.parametrize("host", ["127.0.0.1:5432", "[::1]:5432", "postgres://h.example/db", ""])
def test_connection_details_that_can_never_work_are_refused_before_anything_is_written(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, host: str
) -> None:
    pgpass.write_text(USER)
    cfg = write_config(sp_config(em, postgres.port).replace('host = "127.0.0.1"', f'host = "{host}"'))
    r = tokend("run", "--once", "--config", str(cfg))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "targets.db.host" in lines[0] and "Traceback" not in r.stderr
    assert pgpass.read_text() == USER


def test_private_folders_and_no_stale_lock(em: Tenant, postgres: Postgres, write_config, daemon, home: Path) -> None:
    from tokend import paths

    old = os.umask(0)  # the loosest umask: tokend's folders are 0700 anyway
    try:
        cfg = write_config(sp_config(em, postgres.port))
        d = daemon(cfg)
        d.wait_ready()
    finally:
        os.umask(old)
    for folder in (
        home / ".local" / "state" / "tokend",
        paths.log_dir(),
        paths.runtime_dir(),
        home / ".local" / "state",
    ):
        assert oct(folder.stat().st_mode & 0o777) == "0o700", folder
    assert paths.lock_path(cfg).exists()
    assert d.stop() == 0
    assert not paths.lock_path(cfg).exists() and not paths.socket_path(cfg).exists()
