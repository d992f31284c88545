"""``user = "@principal"`` end to end: with Azure's group sync on and the group role NOLOGIN, one config serves
every member — the pgpass line, ``tokend token --host …`` and status name the signed-in person's own role, and an
account switch moves the line to the new name. Real device-code sign-ins, real psql, the token-checking PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokend.emulator.postgres import Postgres
from tokend.sinks.pgpass import parse

from support import groupsync
from support.daemon import login
from support.groupsync import SETTING, Server
from support.product import tokend
from support.tenant import Tenant
from support.waits import wait_for


@pytest.fixture
def server(em: Tenant, postgres: Postgres, write_config, tmp_path: Path) -> Iterator[Server]:
    with groupsync.server(em, postgres, write_config, tmp_path) as s:
        yield s


def members_only(s: Server) -> None:
    """Group sync on, the members' roles made, the group role NOLOGIN: Azure's recommended set-up."""
    s.add_group()
    s.pg.set_parameter(SETTING, "on")
    assert s.admin("sync").returncode == 0
    s.add_group("--members-only")


def users_in(pgpass: Path) -> dict[str, str]:
    return {ln[3]: ln[4] for ln in parse(pgpass.read_text())} if pgpass.exists() else {}


def test_a_principal_target_logs_in_as_the_member_and_follows_an_account_switch(
    server: Server, pgpass: Path, daemon
) -> None:
    s = server
    members_only(s)
    cfg = s.configure(s.target("mine", "@principal"), s.target("team", s.group))
    assert login(cfg, s.em.emulator, s.dana.upn, "me").returncode == 0
    d = daemon(cfg)
    d.wait_ready()
    wait_for(lambda: s.dana.upn in users_in(pgpass), what="her own line in pgpass")
    assert "@principal" not in users_in(pgpass)
    r = s.login(s.dana.upn, None, "select current_user, x from reports.t")
    assert r.stdout.strip() == f"{s.dana.upn}|1", r.stderr  # through pgpass, as herself
    r = s.login(s.group, None)
    assert r.returncode != 0 and "not permitted to log in" in r.stderr  # the group target: NOLOGIN
    status = json.loads(tokend("status", "--json", "--config", str(cfg)).stdout)
    mine = next(t for t in status["targets"] if t["name"] == "mine")
    assert mine["user"] == "@principal" and mine["resolved_user"] == s.dana.upn
    assert next(t for t in status["targets"] if t["name"] == "team")["resolved_user"] == s.group
    assert f"@principal → {s.dana.upn}@127.0.0.1" in tokend("status", "--config", str(cfg)).stdout
    by_connection = tokend(
        "token", "--host", "127.0.0.1", "--port", str(s.pg.port), "--user", s.dana.upn, "--config", str(cfg)
    )
    assert by_connection.returncode == 0 and by_connection.stdout.strip() == users_in(pgpass)[s.dana.upn]
    env = tokend("exec", "mine", "--config", str(cfg), "--", "sh", "-c", 'echo "$PGUSER"')
    assert env.stdout.strip() == s.dana.upn, env.stderr

    # another person signs in with the same config: the line moves to her name, his goes
    erin = s.em.emulator.directory.add_user(f"erin{s.db}@contoso.example")
    s.em.emulator.directory.add_member(s.group, erin.oid)
    assert s.admin("sync").returncode == 0
    assert tokend("logout", "me", "--config", str(cfg)).returncode == 0
    assert login(cfg, s.em.emulator, erin.upn, "me").returncode == 0
    wait_for(lambda: erin.upn in users_in(pgpass) and s.dana.upn not in users_in(pgpass), what="the line moved")
    r = s.login(erin.upn, None, "select current_user, x from reports.t")
    assert r.stdout.strip() == f"{erin.upn}|1", r.stderr
