"""The person behind a group login, visible: the proxy's sessions carry the token's principal in
application_name, as the server's pg_stat_activity (and its logs' %a) show it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from tokend.emulator.postgres import Postgres

from support.builders import GROUP, proxy_config
from support.daemon import started
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
