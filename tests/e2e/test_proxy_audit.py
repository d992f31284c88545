"""The person behind a group login, visible: the proxy's sessions carry the token's principal in
application_name, as the server's pg_stat_activity (and its logs' %a) show it; and the member's own audit log
has one JSON line per session, with the client's pid and executable, and never a token."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tokend import logs
from tokend.emulator.postgres import Postgres

from support.builders import GROUP, proxy_config
from support.clients import psql_at
from support.daemon import started
from support.net import PROXY_PORT
from support.product import tokend
from support.tenant import Tenant
from support.waits import wait_for


@contextmanager
def open_psql(conninfo: str) -> Iterator[subprocess.Popen[str]]:
    """A real psql session, connected and waiting for its next command on stdin; closed on the way out."""
    p = subprocess.Popen(
        ["psql", conninfo, "-w", "-At"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield p
    finally:
        assert p.stdin is not None
        p.stdin.close()
        p.wait(timeout=30)


def names_as(postgres: Postgres, user: str) -> list[str]:
    """The application_name of every session of ``user``, from the admin's own connection (the Unix socket)."""
    out = postgres.sql(f"select application_name from pg_stat_activity where usename = '{user}'", "appdb")
    return [line for line in out.splitlines() if line]


def test_pg_stat_activity_names_the_person_behind_the_group(
    em: Tenant, postgres: Postgres, write_config, daemon, no_password
) -> None:
    d = daemon(write_config(proxy_config(em, postgres)))
    folder = started(d)["listen"][0]["host"]
    principal = em.app.client_id  # a service principal's token names it by its app id
    with open_psql(f"host={folder} port=6432 dbname=appdb user='{GROUP}'"):
        seen = wait_for(lambda: names_as(postgres, GROUP), what="the proxy's session in pg_stat_activity")
        assert seen == [f"psql ({principal} via tokend)"]
    wait_for(lambda: not names_as(postgres, GROUP), what="the session gone")
    long = "a-reporting-tool-with-a-very-long-name-" * 3
    with open_psql(f"host={folder} port=6432 dbname=appdb user='{GROUP}' application_name={long}"):
        seen = wait_for(lambda: names_as(postgres, GROUP), what="the long-named session")
        tail = f" ({principal} via tokend)"
        assert seen == [long[: 63 - len(tail)] + tail], seen


def audit_lines(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        return []


def test_the_audit_log_has_a_line_per_session_with_the_clients_process_and_no_token(
    em: Tenant, postgres: Postgres, write_config, daemon, no_password
) -> None:
    cfg = write_config(proxy_config(em, postgres))
    d = daemon(cfg)
    folder = started(d)["listen"][0]["host"]
    path = logs.audit_file(cfg)
    routes = {
        "unix": f"host={folder} port=6432 dbname=appdb user='{GROUP}'",
        "tcp": f"host=127.0.0.1 port={PROXY_PORT} dbname=appdb user='{GROUP}' sslmode=require",
    }
    pids = {}
    for route, conninfo in routes.items():
        with open_psql(conninfo) as p:
            pids[route] = p.pid
            assert p.stdin is not None
            p.stdin.write("select repeat('x', 5000);\n")
    r = psql_at(f"host={folder} port=6432 dbname=otherdb user='{GROUP}'")  # refused by tokend: another database
    assert r.returncode != 0
    lines = wait_for(lambda: (got := audit_lines(path)) and len(got) >= 3 and got, what="three audit lines")
    assert len(lines) == 3, lines
    unix, tcp, refused = lines
    for line, route in ((unix, "unix"), (tcp, "tcp")):
        assert line["pid"] == pids[route], (route, line)
        assert Path(line["executable"]).name == "psql", line  # the real binary (Debian's wrapper execs it)
        assert line["outcome"] == "ok" and line["target"] == "db" and line["database"] == "appdb", line
        assert line["user"] == GROUP and line["principal"] == em.app.client_id and line["oid"] == em.app.oid, line
        assert line["application_name"] == "psql" and line["uid"] == os.getuid(), line
        assert line["bytes_to_client"] > 5000 and 0 < line["bytes_to_server"] < 1000, line
        assert line["start"] <= line["end"] and line["start"].endswith("+00:00"), line
    assert unix["listener"].endswith(".s.PGSQL.6432") and tcp["listener"] == f"127.0.0.1:{PROXY_PORT}"
    assert refused["outcome"].startswith("refused: target db is for database 'appdb'"), refused
    assert refused["database"] == "otherdb" and refused["pid"] and refused["bytes_to_server"] == 0, refused
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = tokend("token", "--config", str(cfg)).stdout.strip()
    assert len(token) > 100 and token not in path.read_text(encoding="utf-8")
    assert token.split(".")[2] not in path.read_text(encoding="utf-8")  # not even its signature


def test_the_audit_log_can_be_turned_off(em: Tenant, postgres: Postgres, write_config, daemon, no_password) -> None:
    cfg = write_config(proxy_config(em, postgres) + "\n[proxy]\naudit_log = false\n")
    d = daemon(cfg)
    folder = started(d)["listen"][0]["host"]
    assert psql_at(f"host={folder} port=6432 dbname=appdb user='{GROUP}'").returncode == 0
    assert not logs.audit_file(cfg).exists()


def test_application_name_false_passes_the_clients_own(
    em: Tenant, postgres: Postgres, write_config, daemon, no_password
) -> None:
    d = daemon(write_config(proxy_config(em, postgres, extra="application_name = false\n")))
    folder = started(d)["listen"][0]["host"]
    with open_psql(f"host={folder} port=6432 dbname=appdb user='{GROUP}' application_name=nightly-report"):
        assert wait_for(lambda: names_as(postgres, GROUP), what="the session") == ["nightly-report"]
