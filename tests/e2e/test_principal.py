"""``user = "@principal"`` end to end: with Azure's group sync on and the group role NOLOGIN, one config serves
every member — the pgpass line, ``tokend token --host …`` and status name the signed-in person's own role, and an
account switch moves the line to the new name. Real device-code sign-ins, real psql, the token-checking PostgreSQL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokend.emulator.postgres import Postgres
from tokend.sinks.pgpass import parse

from support import groupsync
from support.clients import psql_at
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
    profile = tokend("clients", "pgadmin", "mine", "--config", str(cfg))  # a GUI client's profile keeps her name
    assert profile.returncode == 0 and f'"Username": "{s.dana.upn}"' in profile.stdout, profile.stderr
    assert "@principal" not in profile.stdout

    # another person signs in with the same config: the line moves to her name, his goes
    erin = s.em.emulator.directory.add_user(f"erin{s.db}@contoso.example")
    s.em.emulator.directory.add_member(s.group, erin.oid)
    assert s.admin("sync").returncode == 0
    assert tokend("logout", "me", "--config", str(cfg)).returncode == 0
    assert login(cfg, s.em.emulator, erin.upn, "me").returncode == 0
    wait_for(lambda: erin.upn in users_in(pgpass) and s.dana.upn not in users_in(pgpass), what="the line moved")
    r = s.login(erin.upn, None, "select current_user, x from reports.t")
    assert r.stdout.strip() == f"{erin.upn}|1", r.stderr


def test_a_principal_target_logs_in_as_the_member_through_the_proxy(server: Server, daemon) -> None:
    """The proxy logs in as the member's own role for user = "@principal" (the group role is NOLOGIN)."""
    s = server
    members_only(s)
    cfg = s.configure(s.target("mine", "@principal", extra='sinks = []\nlisten = ["unix:6433"]\n'))
    assert login(cfg, s.em.emulator, s.dana.upn, "me").returncode == 0
    d = daemon(cfg)
    d.wait_ready()
    mine = wait_for(lambda: next(t for t in d.status()["targets"] if t["name"] == "mine")["proxy"], what="listening")
    folder = mine["listen"][0]["host"]
    r = psql_at(f"host={folder} port=6433 dbname={s.db}", "select current_user, x from reports.t")
    assert r.stdout.strip() == f"{s.dana.upn}|1", r.stderr


def doctor_logins(cfg: Path) -> dict[str, dict[str, str]]:
    """``tokend doctor --login --json``: each target's login check by target name."""
    r = tokend("doctor", "--login", "--json", "--config", str(cfg), timeout=120)
    checks = json.loads(r.stdout)["checks"]
    return {c["name"].split()[1]: c for c in checks if c["name"].startswith("target ") and c["name"].endswith(" login")}


def signed_in(s: Server, daemon, upn: str, *tables: str) -> Path:
    """The config with ``tables``, identity me signed in as ``upn``, and a daemon that has written pgpass."""
    cfg = s.configure(*tables)
    assert login(cfg, s.em.emulator, upn, "me").returncode == 0
    daemon(cfg).wait_ready()
    return cfg


def test_doctor_login_explains_a_nologin_group_and_the_principal_target_logs_in(server: Server, daemon) -> None:
    s = server
    members_only(s)
    cfg = signed_in(s, daemon, s.dana.upn, s.target("team", s.group), s.target("mine", "@principal"))
    found = doctor_logins(cfg)
    team = found["team"]
    assert team["status"] == "fail" and "not permitted to log in" in team["evidence"], team
    assert "NOLOGIN) and group sync is on: its members log in as themselves" in team["evidence"]
    assert team["fix"] == 'log in as yourself: user = "@principal" in [targets.team]'
    shown = json.loads(tokend("doctor", "--json", "--config", str(cfg)).stdout)["checks"]
    assert {"name": "target mine user", "status": "ok", "evidence": f"@principal → {s.dana.upn}", "fix": ""} in shown
    mine = found["mine"]
    assert mine["status"] == "ok" and mine["evidence"] == (
        f"logged in through pgpass as {s.dana.upn} (@principal → {s.dana.upn})"
    ), mine


def test_a_new_member_is_told_to_wait_or_sync_and_logs_in_after_admin_sync(server: Server, daemon) -> None:
    s = server
    members_only(s)
    erin = s.em.emulator.directory.add_user(f"erin{s.db}@contoso.example")
    s.em.emulator.directory.add_member(s.group, erin.oid)
    cfg = signed_in(s, daemon, erin.upn, s.target("mine", "@principal"))
    before = doctor_logins(cfg)["mine"]
    assert before["status"] == "fail", before
    assert f"your own role {erin.upn!r} is not on the server yet" in before["evidence"]
    assert "every 30 minutes" in before["evidence"] and "tokend admin sync" in before["fix"]  # wait or sync
    assert s.admin("sync").returncode == 0
    after = doctor_logins(cfg)["mine"]
    assert after["status"] == "ok" and f"as {erin.upn}" in after["evidence"], after


def test_no_such_role(server: Server, daemon) -> None:
    s = server
    s.add_group()
    cfg = signed_in(s, daemon, s.dana.upn, s.target("team", s.group), s.target("other", "Nobody Here"))
    other = doctor_logins(cfg)["other"]
    assert other["status"] == "fail" and "no role 'Nobody Here' on the server" in other["evidence"], other
    assert "tokend admin add-group 'Nobody Here'" in other["fix"]


def test_a_role_that_differs_only_in_case_or_spaces(server: Server, daemon) -> None:
    s = server
    members_only(s)  # she has a role of her own to ask the server with
    s.pg.sql(f'ALTER ROLE "{s.group}" LOGIN')
    cfg = signed_in(s, daemon, s.dana.upn, s.target("team", s.group.lower()))
    team = doctor_logins(cfg)["team"]
    assert team["status"] == "fail" and f"but {s.group!r}: the names differ in case" in team["evidence"], team
    assert team["fix"] == f'write the name exactly: user = "{s.group}" in [targets.team]'


def test_a_nologin_group_with_sync_off(server: Server, daemon) -> None:
    s = server
    s.add_group()
    s.pg.sql(f'ALTER ROLE "{s.group}" NOLOGIN')
    own_role(s, s.dana.upn)  # made by an administrator: she can log in to ask the server
    cfg = signed_in(s, daemon, s.dana.upn, s.target("team", s.group))
    team = doctor_logins(cfg)["team"]
    assert team["status"] == "fail" and "NOLOGIN) and group sync is off: nobody logs in" in team["evidence"], team
    assert f'ALTER ROLE "{s.group}" LOGIN;' in team["fix"]


def test_ones_own_role_with_sync_off(server: Server, daemon) -> None:
    s = server
    s.add_group()
    cfg = signed_in(s, daemon, s.dana.upn, s.target("team", s.group), s.target("mine", "@principal"))
    mine = doctor_logins(cfg)["mine"]
    assert mine["status"] == "fail" and f"no role {s.dana.upn!r} for you, and group sync is off" in mine["evidence"]
    assert "log in as your group" in mine["fix"]


def own_role(s: Server, upn: str) -> None:
    """A person's own Entra role, made by an administrator (pgaadauth_create_principal)."""
    s.pg.sql(f"SET ROLE \"{s.em.app.name}\"; SELECT pgaadauth_create_principal('{upn}', false, false)", s.db)


def outsider(s: Server) -> str:
    """A person with a role of her own who is not in the group: she can log in to ask the server."""
    zoe = s.em.emulator.directory.add_user(f"zoe{s.db}@contoso.example")
    own_role(s, zoe.upn)
    return zoe.upn


def test_not_a_member_by_the_groups_claim(server: Server, daemon) -> None:
    s = server
    s.add_group()
    s.em.emulator.directory.groups_claim = True
    try:
        zoe = outsider(s)
        cfg = signed_in(s, daemon, zoe, s.target("team", s.group))
        team = doctor_logins(cfg)["team"]
    finally:
        s.em.emulator.directory.groups_claim = False
    assert team["status"] == "fail" and f"{zoe} is not a member of the Entra group {s.group!r}" in team["evidence"]
    assert "Members → Add members" in team["fix"], team


def test_membership_it_cannot_tell_without_the_groups_claim(server: Server, daemon) -> None:
    s = server
    s.add_group()
    zoe = outsider(s)
    cfg = signed_in(s, daemon, zoe, s.target("team", s.group))
    team = doctor_logins(cfg)["team"]
    assert team["status"] == "fail" and "cannot tell whether you are a member" in team["evidence"], team
    assert "the token carries no groups claim" in team["evidence"] and "tokend admin check" in team["fix"]


def test_init_check_says_why_and_the_fix(server: Server) -> None:
    s = server
    members_only(s)
    cfg = s.configure()
    assert login(cfg, s.em.emulator, s.dana.upn, "me").returncode == 0
    r = tokend(
        *("init", "--server", "127.0.0.1", "--port", str(s.pg.port), "--database", s.db, "--user", s.group),
        *("--identity", "me", "--name", "team", "--check", "--no-service", "--config", str(cfg)),
        env={**os.environ, "SSL_CERT_FILE": str(s.pg.ca_cert)},  # the server's CA, as Azure's is the system's
        timeout=120,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert f"login to 127.0.0.1 as {s.group} failed" in lines[0] and "group sync is on" in lines[0]
    assert lines[0].endswith('fix: log in as yourself: user = "@principal" in [targets.team]')


def test_an_apps_principal_target_uses_the_name_the_config_gives(server: Server, pgpass: Path) -> None:
    s = server
    cfg = s.configure(s.target("app", "@principal", identity="sp"))
    refused = tokend("run", "--once", "--config", str(cfg))
    assert refused.returncode == 2 and "identities.sp.principal_name" in refused.stderr  # asked for once, here
    line = f'client_id = "{s.em.app.client_id}"\n'
    cfg.write_text(cfg.read_text().replace(line, f'{line}principal_name = "{s.em.app.name}"\n', 1))
    assert tokend("run", "--once", "--config", str(cfg)).returncode == 0
    assert s.em.app.name in users_in(pgpass) and "@principal" not in users_in(pgpass)
    r = s.login(s.em.app.name, None)
    assert r.stdout.strip() == s.em.app.name, r.stderr
    listed = tokend("admin", "list", "--json", "--target", "app", "--config", str(cfg))  # logs in as the app too
    assert listed.returncode == 0 and s.em.app.name in [p["role"] for p in json.loads(listed.stdout)], listed.stderr
