"""pgcli (PyPI's, in .venv-clients, which tests/run.sh installs) run as a person runs it, but non-interactively:
``-c SQL`` runs one statement and exits, ``-t`` prints rows only, ``-w`` never prompts for a password (pgcli then
relies on libpq, through psycopg, which reads pgpass), ``--single-connection`` opens no second connection for
completions. Its settings and history go to the test's own HOME."""

from __future__ import annotations

import os
import subprocess

import pytest

from support.builders import GROUP
from support.installs import wait_installed
from support.product import REPO

PGCLI = REPO / ".venv-clients" / "bin" / "pgcli"


def pgcli(
    port: int, sslmode: str, user: str = GROUP, sql: str = "select current_user", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """pgcli against 127.0.0.1:``port`` (database appdb) as ``user``, no password given."""
    wait_installed("clients")
    if not PGCLI.exists():
        pytest.fail("pgcli missing: tests/run.sh installs it (pip install pgcli) into .venv-clients")
    e = {**(env if env is not None else os.environ), "PGSSLMODE": sslmode, "PAGER": "cat", "TERM": "dumb"}
    e.pop("PGPASSWORD", None)
    return subprocess.run(
        [
            str(PGCLI),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            user,
            "-d",
            "appdb",
            "-w",
            "--single-connection",
            "--less-chatty",
            "-t",
            "-c",
            sql,
        ],
        capture_output=True,
        text=True,
        env=e,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
