"""pgcli, the real one from PyPI, logs in as the group: through tokend's pgpass (libpq reads it under psycopg) and
through the local auth proxy (no password at all)."""

from __future__ import annotations

from pathlib import Path

from tokend.emulator.postgres import Postgres

from support.builders import GROUP, proxy_config, sp_config
from support.daemon import started
from support.net import PROXY_PORT
from support.pgcli import pgcli
from support.product import tokend
from support.tenant import Tenant


def rows(out: str) -> list[str]:
    """pgcli's -t output: one line per row (the cell, space-padded as its table format leaves it)."""
    return [line.strip() for line in out.splitlines() if line.strip()]


def test_pgcli_through_pgpass(em: Tenant, postgres: Postgres, write_config, pgpass: Path) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    r = tokend("run", "--once", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert pgpass.exists()
    got = pgcli(postgres.port, "require")
    assert got.returncode == 0 and rows(got.stdout) == [GROUP], got.stdout + got.stderr


def test_pgcli_through_the_proxy(em: Tenant, postgres: Postgres, write_config, daemon, no_password) -> None:
    cfg = write_config(proxy_config(em, postgres, listen=f'["127.0.0.1:{PROXY_PORT}"]'))
    started(daemon(cfg))
    got = pgcli(PROXY_PORT, "prefer")
    assert got.returncode == 0 and rows(got.stdout) == [GROUP], got.stdout + got.stderr
    assert not (Path.home() / ".pgpass").exists()  # nothing a client could read a password from
