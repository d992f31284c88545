"""Azure's group sync, end to end: the emulator's pgaadauth stand-in on the token-checking PostgreSQL, `tokend admin
sync|list|check|add-group --members-only`, and real psql logging in with real tokens — as the group, and as a member
in their own name.

Roles are the cluster's, so every test makes its own group and members (unique names) and drops them after.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokend.emulator.postgres import Postgres

from support import groupsync
from support.groupsync import SETTING, Server
from support.product import tokend
from support.tenant import Tenant


@pytest.fixture
def server(em: Tenant, postgres: Postgres, write_config, tmp_path: Path) -> Iterator[Server]:
    """The group-sync server (tests/support/groupsync.py) with a ``team`` target: user = the group, pgpass."""
    with groupsync.server(em, postgres, write_config, tmp_path) as s:
        s.configure(s.target("team", s.group, identity="sp"))
        yield s


def add_group(s: Server, *extra: str) -> subprocess.CompletedProcess[str]:
    return s.admin("add-group", s.group, "--schema", "reports", *extra)


def test_with_sync_on_and_the_group_nologin_members_log_in_as_themselves(server: Server) -> None:
    s = server
    assert add_group(s, "--apply").returncode == 0
    s.pg.set_parameter(SETTING, "on")
    assert s.dana.upn not in s.roles()
    synced = s.admin("sync")
    assert synced.returncode == 0, synced.stderr
    assert f"created: {s.dana.upn} in {s.group!r}" in synced.stdout
    r = s.login(s.dana.upn, s.token(s.dana), "select current_user, x from reports.t")
    assert r.stdout.strip() == f"{s.dana.upn}|1", r.stderr  # her own role, the group's rights through membership
    members_only = add_group(s, "--members-only", "--apply")
    assert members_only.returncode == 0, members_only.stderr
    assert s.pg.sql(f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{s.group}'").strip() == "f"
    # the group target through tokend's pgpass: refused by the server, whoever's token
    assert tokend("run", "--once", "--config", str(s.cfg)).returncode == 0
    r = subprocess.run(
        ["psql", f"host=127.0.0.1 port={s.pg.port} dbname={s.db} user='{s.group}' sslmode=require", "-w", "-Atc", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0 and "not permitted to log in" in r.stderr, r.stderr
    r = s.login(s.group, s.token(s.dana))
    assert r.returncode != 0 and "not permitted to log in" in r.stderr
    r = s.login(s.dana.upn, s.token(s.dana), "select x from reports.t")
    assert r.stdout.strip() == "1", r.stderr
    # the token check itself still refuses the wrong principal for her role
    other = s.em.emulator.directory.add_user(f"zed{s.db}@contoso.example")
    r = s.login(s.dana.upn, s.token(other))
    assert r.returncode != 0 and "authentication failed" in r.stderr
    check = s.admin("check", s.group, "--schema", "reports", "--json")
    assert check.returncode == 1
    bad = [f for f in json.loads(check.stdout) if not f["ok"]]
    assert len(bad) == 1 and "NOLOGIN) and group sync is on" in bad[0]["what"]
    assert "your UPN" in bad[0]["fix"] and "LOGIN;" in bad[0]["fix"]


def test_a_new_member_logs_in_as_themselves_only_after_admin_sync(server: Server) -> None:
    s = server
    d = s.em.emulator.directory
    assert add_group(s, "--apply").returncode == 0
    s.pg.set_parameter(SETTING, "on")
    assert s.admin("sync").returncode == 0
    erin = d.add_user(f"erin{s.db}@contoso.example")
    d.add_member(s.group, erin.oid)
    r = s.login(erin.upn, s.token(erin))
    assert r.returncode != 0, r.stdout  # no role of her own yet
    r = s.login(s.group, s.token(erin))
    assert r.stdout.strip() == s.group, r.stderr  # the group name still works while the group role may log in
    synced = s.admin("sync")
    assert synced.returncode == 0 and f"created: {erin.upn} in {s.group!r}" in synced.stdout
    assert s.dana.upn not in synced.stdout  # she had hers already
    r = s.login(erin.upn, s.token(erin), "select x from reports.t")
    assert r.stdout.strip() == "1", r.stderr
    again = s.admin("sync")
    assert again.returncode == 0 and "already had their role" in again.stdout
    d.remove_member(s.group, erin.oid)
    gone = s.admin("sync")
    assert f"revoked: {erin.upn} in {s.group!r}" in gone.stdout
    r = s.login(erin.upn, s.token(erin), "select x from reports.t")
    assert r.returncode != 0 and "permission denied" in r.stderr  # her role stays, the group's rights do not


def test_admin_list_shows_each_principal_once_and_what_a_sync_made(server: Server) -> None:
    s = server
    assert add_group(s, "--apply").returncode == 0
    listing = s.admin("list", "--json")
    assert listing.returncode == 0, listing.stderr
    found = json.loads(listing.stdout)
    names = [p["role"] for p in found]
    assert len(names) == len(set(names)), names
    admin = next(p for p in found if p["role"] == s.em.app.name)
    assert admin["admin"] and admin["synced_into"] == [] and admin["group_sync"] is None
    assert next(p for p in found if p["role"] == s.group)["group_sync"] == "off"
    s.pg.set_parameter(SETTING, "on")
    assert s.admin("sync").returncode == 0
    s.pg.sql(f'CREATE ROLE "hand{s.db}" LOGIN; GRANT "{s.group}" TO "hand{s.db}"')  # not an Entra principal
    found = json.loads(s.admin("list", "--json").stdout)
    dana = next(p for p in found if p["role"] == s.dana.upn)
    assert dana["type"] == "user" and dana["object_id"] == s.dana.oid and dana["synced_into"] == [s.group]
    assert next(p for p in found if p["role"] == s.group)["group_sync"] == "on"
    assert [p["role"] for p in found].count(s.em.app.name) == 1
    human = s.admin("list")
    assert human.stdout.startswith(f"group sync ({SETTING}): on\n")
    assert f"{s.group} (sync)" in human.stdout


def test_members_only_and_sync_are_refused_while_sync_is_off(server: Server) -> None:
    s = server
    assert add_group(s, "--apply").returncode == 0
    for extra in ((), ("--apply",)):
        r = add_group(s, "--members-only", *extra)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and r.stdout == "", r.stderr
        assert "group sync is off" in lines[0] and SETTING in lines[0]
    assert s.pg.sql(f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{s.group}'").strip() == "t"
    r = s.admin("sync")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "group sync is off" in lines[0] and "--value ON" in lines[0]
    s.pg.set_parameter(SETTING, "on")
    dry = add_group(s, "--members-only")
    assert dry.returncode == 0 and f'ALTER ROLE "{s.group}" NOLOGIN;\nCOMMIT;\n' in dry.stdout
    assert s.pg.sql(f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{s.group}'").strip() == "t"  # printed only


def test_check_names_each_group_sync_case(server: Server) -> None:
    s = server

    def check(group: str) -> tuple[int, list[dict]]:
        r = s.admin("check", group, "--schema", "reports", "--json")
        return r.returncode, json.loads(r.stdout)

    code, found = check(s.group)
    assert code == 1 and "no role" in found[0]["what"] and "add-group" in found[0]["fix"]
    assert add_group(s, "--apply").returncode == 0
    code, found = check(s.group)
    assert code == 0, found
    assert any(f["ok"] and "group sync is off" in f["what"] for f in found)
    for wrong in (s.group.lower(), s.group.replace(" ", "  "), s.group.replace(" ", "").upper()):
        code, found = check(wrong)
        assert code == 1 and len(found) == 1, found
        assert f"but {s.group!r}" in found[0]["what"] and "differ" in found[0]["what"]
        assert f'user = "{s.group}"' in found[0]["fix"] and "add-group" not in found[0]["fix"]
    s.pg.sql(f'ALTER ROLE "{s.group}" NOLOGIN')
    code, found = check(s.group)
    bad = [f for f in found if not f["ok"]]
    assert code == 1 and len(bad) == 1 and "group sync is off, so its members have no roles" in bad[0]["what"]
    s.pg.set_parameter(SETTING, "on")
    assert s.admin("sync").returncode == 0
    code, found = check(s.group)
    bad = [f for f in found if not f["ok"]]
    assert code == 1 and len(bad) == 1 and "group sync is on: its members log in as themselves" in bad[0]["what"]
    assert any(f["ok"] and "2 member role(s)" in f["what"] for f in found)  # dana and the app
    s.pg.sql(f'ALTER ROLE "{s.group}" LOGIN')
    code, found = check(s.group)
    assert code == 0 and any("group sync is on" in f["what"] for f in found)


def test_a_renamed_group_keeps_its_role_and_its_sync(server: Server) -> None:
    s = server
    d = s.em.emulator.directory
    assert add_group(s, "--apply").returncode == 0
    s.pg.set_parameter(SETTING, "on")
    d.rename_group(s.group, f"{s.group} renamed")
    fred = d.add_user(f"fred{s.db}@contoso.example")
    d.add_member(f"{s.group} renamed", fred.oid)
    synced = s.admin("sync")
    assert f"created: {fred.upn} in {s.group!r}" in synced.stdout, synced.stdout  # matched by object id
    assert s.group in s.roles() and f"{s.group} renamed" not in s.roles()
    r = s.login(s.group, s.token(fred))
    assert r.stdout.strip() == s.group, r.stderr  # the old name still logs members in
    r = s.login(fred.upn, s.token(fred), "select x from reports.t")
    assert r.stdout.strip() == "1", r.stderr


def test_a_plain_role_in_the_way_is_skipped_and_a_dropped_group_role_is_not_synced(server: Server) -> None:
    s = server
    d = s.em.emulator.directory
    assert add_group(s, "--apply").returncode == 0
    s.pg.set_parameter(SETTING, "on")
    s.pg.sql(f'CREATE ROLE "{s.dana.upn}" LOGIN')  # made by hand, not mapped to her object id
    synced = s.admin("sync")
    assert f"skipped: a role of that name exists and is not this principal: {s.dana.upn} in {s.group!r}" in (
        synced.stdout
    ), synced.stdout
    assert s.pg.sql(f"SELECT pg_has_role('{s.dana.upn}', '{s.group}', 'MEMBER')").strip() == "f"
    s.pg.sql(f'DROP OWNED BY "{s.group}"', s.db)
    s.pg.sql(f'DROP ROLE "{s.group}"')
    gus = d.add_user(f"gus{s.db}@contoso.example")
    d.add_member(s.group, gus.oid)
    synced = s.admin("sync")
    assert synced.returncode == 0 and s.group not in synced.stdout  # Azure: "don't delete the group role"
    assert gus.upn not in s.roles()
