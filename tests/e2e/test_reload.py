"""Hot reload: config edits (atomic rename or in-place write), SIGHUP and `tokend reload` take one path; pgpass
follows the edit without being told (how fast: bench/reaction.py); a bad edit is refused while the running config
keeps serving."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tokend.emulator.postgres import Postgres
from tokend.sinks.pgpass import parse

from support.builders import GROUP, sp_config
from support.clients import psql
from support.product import tokend
from support.tenant import Tenant
from support.waits import wait_for


def lines(pgpass: Path) -> dict[str, tuple[str, ...]]:
    return {f"{ln[0]}:{ln[1]}": ln for ln in parse(pgpass.read_text())} if pgpass.exists() else {}


def rename_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp~")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_edits_are_followed_unasked(em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon) -> None:
    base = sp_config(em, postgres.port)
    cfg = write_config(base)
    d = daemon(cfg)
    d.wait_ready()
    db = f"127.0.0.1:{postgres.port}"
    wait_for(lambda: db in lines(pgpass), what="first write")
    token = lines(pgpass)[db][4]
    issued = len(em.emulator.directory.issued)

    # add a target by atomic rename (what editors do)
    rename_write(cfg, base + '\n[targets.extra]\nhost = "extra.example"\nport = 6432\nuser = "x"\nidentity = "sp"\n')
    wait_for(lambda: "extra.example:6432" in lines(pgpass), timeout=20, what="added target in pgpass")
    # change it by an in-place write
    cfg.write_text(base + '\n[targets.extra]\nhost = "extra.example"\nport = 7432\nuser = "x"\nidentity = "sp"\n')
    wait_for(
        lambda: "extra.example:7432" in lines(pgpass) and "extra.example:6432" not in lines(pgpass),
        timeout=20,
        what="changed target in pgpass",
    )
    # remove it
    cfg.write_text(base)
    wait_for(
        lambda: not any(k.startswith("extra.example") for k in lines(pgpass)), timeout=20, what="removed target gone"
    )
    # the identity did not change: its token was kept, not fetched again
    assert lines(pgpass)[db][4] == token
    assert len(em.emulator.directory.issued) == issued
    assert d.status()["config_error"] is None


def test_bad_edits_are_refused_and_the_old_config_keeps_serving(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon
) -> None:
    base = sp_config(em, postgres.port)
    cfg = write_config(base)
    d = daemon(cfg)
    d.wait_ready()
    wait_for(lambda: lines(pgpass), what="first write")
    before = pgpass.read_bytes()

    cfg.write_text(base + "\n[targets.broken\n")
    wait_for(lambda: (d.status() or {}).get("config_error"), timeout=20, what="syntax error reported")
    assert "not valid TOML" in d.status()["config_error"]
    r = tokend("reload", "--config", str(cfg))
    assert r.returncode == 2 and "not valid TOML" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert pgpass.read_bytes() == before and psql(postgres.port).stdout.strip() == GROUP

    rename_write(cfg, base + '\n[targets.orphan]\nhost = "o.example"\nuser = "x"\nidentity = "ghost"\n')
    wait_for(
        lambda: "ghost" in ((d.status() or {}).get("config_error") or ""), timeout=20, what="missing identity reported"
    )
    assert pgpass.read_bytes() == before and psql(postgres.port).stdout.strip() == GROUP
    status = tokend("status", "--config", str(cfg))
    assert "ghost" in status.stdout  # people see it too

    cfg.write_text(base)
    wait_for(lambda: (d.status() or {}).get("config_error") is None, timeout=20, what="error cleared")


def test_sighup_and_reload_command_take_the_same_path(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon
) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg)
    d.wait_ready()
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "(SIGHUP)" in d.log(), timeout=20, what="SIGHUP reload")
    assert tokend("reload", "--config", str(cfg)).returncode == 0
    wait_for(lambda: "(tokend reload)" in d.log(), timeout=20, what="reload command")
    assert d.proc.poll() is None
