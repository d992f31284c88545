"""The local auth proxy: every client connects as the group with no password anywhere (no pgpass, no keychain, no
PGPASSWORD), on the Unix socket and on TCP with and without TLS; cancels reach the server; refusals are proper
errors; another local user is turned away; listeners follow the config; 500 connections at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tokend.emulator.postgres import Postgres

from support.builders import GROUP, proxy_config
from support.clients import jdbc, node_pg, psql_at
from support.daemon import started
from support.net import PROXY_PORT, free_port
from support.product import tokend
from support.tenant import Tenant
from support.waits import wait_for


def test_every_client_connects_with_no_password(
    em: Tenant, postgres: Postgres, write_config, daemon, no_password, tmp_path: Path
) -> None:
    d = daemon(write_config(proxy_config(em, postgres)))
    proxy = started(d)
    folder = proxy["listen"][0]["host"]
    assert proxy["listen"] == [{"host": folder, "port": 6432}, {"host": "127.0.0.1", "port": PROXY_PORT}]
    assert Path(folder).stat().st_mode & 0o777 == 0o700
    routes = {
        "unix": f"host={folder} port=6432 dbname=appdb",
        "tcp": f"host=127.0.0.1 port={PROXY_PORT} dbname=appdb sslmode=disable",
        "tls": f"host=127.0.0.1 port={PROXY_PORT} dbname=appdb sslmode=require",
    }
    for route, conninfo in routes.items():
        r = psql_at(conninfo + f" user='{GROUP}'")
        assert r.returncode == 0 and r.stdout.strip() == GROUP, (route, r.stderr)
    r = psql_at(routes["unix"])  # no user at all: libpq sends the OS login name, the proxy logs in as the group
    assert r.stdout.strip() == GROUP, r.stderr
    # the local certificate: verify-full works with the path status gives
    cert = proxy["certificate"]
    r = psql_at(f"host=127.0.0.1 port={PROXY_PORT} dbname=appdb user='{GROUP}' sslmode=verify-full sslrootcert={cert}")
    assert r.stdout.strip() == GROUP, r.stderr
    with psycopg.connect(host=folder, port=6432, dbname="appdb", user=GROUP) as c:
        assert c.execute("select current_user").fetchone() == (GROUP,)
    with psycopg.connect(host="127.0.0.1", port=PROXY_PORT, dbname="appdb", user=GROUP, sslmode="require") as c:
        assert c.execute("select current_user").fetchone() == (GROUP,)

    import asyncpg

    async def with_asyncpg(**kw: Any) -> str:
        conn = await asyncpg.connect(database="appdb", user=GROUP, **kw)
        try:
            return str(await conn.fetchval("select current_user"))
        finally:
            await conn.close()

    assert asyncio.run(with_asyncpg(host=folder, port=6432)) == GROUP
    assert asyncio.run(with_asyncpg(host="127.0.0.1", port=PROXY_PORT, ssl=False)) == GROUP
    assert asyncio.run(with_asyncpg(host="127.0.0.1", port=PROXY_PORT, ssl="require")) == GROUP
    for mode in ("disable", "require"):
        assert jdbc(f"jdbc:postgresql://127.0.0.1:{PROXY_PORT}/appdb?sslmode={mode}", tmp_path).stdout.strip() == GROUP
    for opts in (
        {"host": folder, "port": 6432},
        {"host": "127.0.0.1", "port": PROXY_PORT, "ssl": False},
        {"host": "127.0.0.1", "port": PROXY_PORT, "ssl": {"rejectUnauthorized": False}},
    ):
        r = node_pg({**opts, "user": GROUP, "database": "appdb"}, tmp_path)
        assert r.stdout.strip() == GROUP, (opts, r.stderr)
    status = d.status()["targets"][0]["proxy"]
    assert status["total"] >= 15 and status["open"] == 0


def test_cancels_reach_the_server(
    em: Tenant, postgres: Postgres, write_config, daemon, no_password, tmp_path: Path
) -> None:
    d = daemon(write_config(proxy_config(em, postgres)))
    folder = started(d)["listen"][0]["host"]
    for where in ({"host": folder, "port": 6432}, {"host": "127.0.0.1", "port": PROXY_PORT, "sslmode": "require"}):
        for how in ("cancel", "cancel_safe"):
            with psycopg.connect(dbname="appdb", user=GROUP, autocommit=True, **where) as c:  # type: ignore[arg-type]
                timer = threading.Timer(1.0, getattr(c, how))
                timer.start()
                t0 = time.monotonic()
                with pytest.raises(psycopg.errors.QueryCanceled):
                    c.execute("select pg_sleep(30)")
                assert time.monotonic() - t0 < 3.0, (where, how)
                assert c.execute("select 1").fetchone() == (1,)  # the session goes on
    out = jdbc(f"jdbc:postgresql://127.0.0.1:{PROXY_PORT}/appdb?sslmode=require", tmp_path, "cancel").stdout.split()
    assert out[0] == "57014" and int(out[1]) < 3000, out  # query_canceled, within 2 s of the cancel


def test_refusals_are_errors_the_client_shows(
    em: Tenant, postgres: Postgres, write_config, daemon, no_password, home: Path
) -> None:
    d = daemon(write_config(proxy_config(em, postgres)))
    folder = started(d)["listen"][0]["host"]
    r = psql_at(f"host={folder} port=6432 dbname=appdb user=mallory")
    assert r.returncode != 0 and 'logs in as "DBA Group" only, not "mallory"' in r.stderr
    r = psql_at(f"host={folder} port=6432 dbname=otherdb user='{GROUP}'")
    assert r.returncode != 0 and "is for database 'appdb'" in r.stderr
    d.stop()
    # the server refuses the token: the target's user is someone the identity is not
    d = daemon(write_config(proxy_config(em, postgres, user=em.alice.upn), "alice.toml"))
    folder = started(d)["listen"][0]["host"]
    r = psql_at(f"host={folder} port=6432 dbname=appdb user={em.alice.upn}")
    assert r.returncode != 0 and "authentication failed" in r.stderr and "tokend logged in as" in r.stderr, r.stderr
    d.stop()
    # no token yet: Entra is down from the start
    em.emulator.fail_next(10_000, 503)
    d = daemon(write_config(proxy_config(em, postgres), "down.toml"))
    folder = wait_for(lambda: (d.status() or {"targets": [{}]})["targets"][0].get("proxy"), what="listening")["listen"][
        0
    ]["host"]
    r = psql_at(f"host={folder} port=6432 dbname=appdb user='{GROUP}'")
    assert r.returncode != 0 and "tokend has no valid token for target db" in r.stderr and "tokend status" in r.stderr


def test_another_local_user_is_turned_away(
    em: Tenant, postgres: Postgres, write_config, daemon, no_password, other_user
) -> None:
    d = daemon(write_config(proxy_config(em, postgres)))
    folder = started(d)["listen"][0]["host"]
    runner = ("runuser", "-u", "tokend-other", "--")
    r = psql_at(f"host=127.0.0.1 port={PROXY_PORT} dbname=appdb user='{GROUP}' sslmode=disable", runner=runner)
    assert r.returncode != 0 and "serves its own user only" in r.stderr, r.stderr
    r = psql_at(f"host={folder} port=6432 dbname=appdb user='{GROUP}'", runner=runner)
    assert r.returncode != 0 and ("Permission denied" in r.stderr or "No such file" in r.stderr), r.stderr
    wait_for(lambda: "refused a connection from another local user" in d.log(), what="the refusal logged")
    assert psql_at(f"host=127.0.0.1 port={PROXY_PORT} dbname=appdb user='{GROUP}' sslmode=disable").returncode == 0


def test_listeners_follow_the_config_and_open_sessions_finish(
    em: Tenant, postgres: Postgres, write_config, daemon, no_password
) -> None:
    cfg = write_config(proxy_config(em, postgres, listen=f'["127.0.0.1:{PROXY_PORT}"]'))
    d = daemon(cfg)
    started(d)
    session = psycopg.connect(host="127.0.0.1", port=PROXY_PORT, dbname="appdb", user=GROUP, sslmode="disable")
    moved = free_port()
    cfg.write_text(proxy_config(em, postgres, listen=f'["127.0.0.1:{moved}"]'))
    wait_for(
        lambda: d.status()["targets"][0]["proxy"]["listen"] == [{"host": "127.0.0.1", "port": moved}], what="moved"
    )
    assert psql_at(f"host=127.0.0.1 port={moved} dbname=appdb sslmode=disable user='DBA Group'").returncode == 0
    assert psql_at(f"host=127.0.0.1 port={PROXY_PORT} dbname=appdb sslmode=disable user='DBA Group'").returncode != 0
    cfg.write_text(proxy_config(em, postgres, listen="[]").replace("sinks = []", 'sinks = ["pgpass"]'))  # removed
    wait_for(lambda: d.status()["targets"][0]["proxy"] is None, what="removed")
    assert session.execute("select current_user").fetchone() == (GROUP,)  # the open session went on untouched
    session.close()
    human = tokend("status", "--config", str(cfg)).stdout
    assert "proxy" not in human


@pytest.mark.parametrize("family, host", [("AF_INET", "127.0.0.1"), ("AF_INET6", "::1")])
def test_the_kernel_names_the_client_by_both_routes(family: str, host: str) -> None:
    """sock_diag's exact lookup and the /proc tables agree on who holds a loopback client socket; a socket that is
    not there is found by neither."""
    import socket

    from tokend.proxy import peer

    with socket.socket(getattr(socket, family)) as server:
        server.bind((host, 0))
        server.listen()
        client = socket.create_connection(server.getsockname()[:2])
        conn, _ = server.accept()
        with conn:
            theirs, ours = conn.getpeername()[:2], conn.getsockname()[:2]
            assert peer._diag_uid(conn.family, theirs, ours) == os.getuid()
            assert peer._proc_uid(theirs, ours) == os.getuid()
            assert peer.tcp_peer_uid(conn) == os.getuid()
            wrong = (theirs[0], theirs[1] ^ 1)  # a port no socket of this pair has
            assert peer._diag_uid(conn.family, wrong, ours) is None and peer._proc_uid(wrong, ours) is None
        client.close()


def test_doctor_checks_each_listener_and_logs_in_through_it(
    em: Tenant, postgres: Postgres, write_config, daemon, no_password
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        cfg = write_config(proxy_config(em, postgres, listen=f'["unix:6432", "127.0.0.1:{busy}"]'))
        d = daemon(cfg)
        d.wait_ready()
        wait_for(lambda: (d.status()["targets"][0]["proxy"] or {}).get("last_error"), what="the port refused")
        r = tokend("doctor", "--json", "--config", str(cfg))
        check = {c["name"]: c for c in json.loads(r.stdout)["checks"]}["target db proxy"]
        assert r.returncode == 1 and check["status"] == "fail" and str(busy) in check["evidence"], check
        assert "listen" in check["fix"]
    # the port is free again: the listener retries and doctor logs in through the proxy (no pgpass login: no sink)
    wait_for(lambda: not d.status()["targets"][0]["proxy"]["last_error"], what="the listener up", timeout=30)
    r = tokend("doctor", "--json", "--login", "--config", str(cfg))
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["target db proxy"]["status"] == "ok", checks
    assert checks["target db proxy login"] == {
        "name": "target db proxy login",
        "status": "ok",
        "evidence": f"logged in through the proxy as {GROUP}",
        "fix": "",
    }
    assert "target db login" not in checks  # no pgpass sink: no pgpass login to try


def test_five_hundred_connections_at_once(em: Tenant, write_config, daemon, no_password) -> None:
    import resource

    import asyncpg

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))
    pg = Postgres(em.emulator.ldap.port, max_connections=600).start()
    try:
        pg.add_roles([GROUP])
        d = daemon(write_config(proxy_config(em, pg)))
        folder = started(d)["listen"][0]["host"]

        async def one(i: int) -> str:
            kw: dict[str, Any] = (
                {"host": folder, "port": 6432} if i % 2 else {"host": "127.0.0.1", "port": PROXY_PORT, "ssl": False}
            )
            conn = await asyncpg.connect(database="appdb", user=GROUP, timeout=120, **kw)
            try:
                await asyncio.sleep(2)  # all of them open at once
                return str(await conn.fetchval("select current_user"))
            finally:
                await conn.close()

        async def all_of_them() -> list[Any]:
            return await asyncio.gather(*(one(i) for i in range(500)), return_exceptions=True)

        results = asyncio.run(all_of_them())
        failed = [r for r in results if r != GROUP]
        assert not failed, failed[:3]
        status = d.status()["targets"][0]["proxy"]
        assert status["total"] >= 500
        wait_for(lambda: d.status()["targets"][0]["proxy"]["open"] == 0, what="all closed")
    finally:
        with contextlib.suppress(Exception):
            pg.stop()
