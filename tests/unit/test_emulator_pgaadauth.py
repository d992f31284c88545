"""The emulator's pgaadauth stand-in, its pure parts: what the directory becomes in SQL, and the periodic sync."""

from __future__ import annotations

import threading

import pytest

from tokend.emulator import pgaadauth
from tokend.emulator.directory import Directory

from support.waits import wait_for


def test_the_directory_as_entra_objects_and_members() -> None:
    d = Directory()
    alice = d.add_user("alice@contoso.example")
    app = d.add_app("O'Brien's app")
    mi = d.add_managed_identity("my-vm")
    group = d.add_group("DBA Group", alice.oid, app.oid, mi.oid)
    assert sorted(pgaadauth.entra_objects(d)) == sorted(
        [
            (alice.oid, "alice@contoso.example", "user"),
            (app.oid, "O'Brien's app", "service"),
            (mi.oid, "my-vm", "service"),
            (group.oid, "DBA Group", "group"),
        ]
    )
    sql = pgaadauth.publish_sql(d)
    assert sql.startswith("BEGIN;\n") and sql.endswith("\nCOMMIT;")
    assert "'O''Brien''s app'" in sql  # quotes doubled: a name stays a name
    assert f"('{group.oid}', '{alice.oid}')" in sql and f"('{group.oid}', '{mi.oid}')" in sql
    assert f"INSERT INTO pgaadauth.tenant VALUES ('{d.tenant_id}');" in sql
    with pytest.raises(ValueError, match="NUL"):
        pgaadauth._lit("nul\0here")


def test_directory_changes_reach_the_listeners() -> None:
    d = Directory()
    seen: list[list[tuple[str, int]]] = []
    d.listeners.append(lambda directory: seen.append([(g.name, len(g.members)) for g in directory.groups.values()]))
    d.add_group("Team")
    bob = d.add_user("bob@contoso.example")
    d.add_member("Team", bob.oid)
    d.remove_member("Team", bob.oid)
    renamed = d.rename_group("Team", "Crew")
    assert renamed.former_names == {"Team"} and set(d.groups) == {"Crew"}
    assert seen == [[("Team", 0)], [("Team", 0)], [("Team", 1)], [("Team", 0)], [("Crew", 0)]]


def test_group_sync_runs_on_its_interval_and_survives_a_failing_run() -> None:
    calls: list[int] = []
    fail = threading.Event()
    fail.set()

    def run() -> None:
        calls.append(1)
        if fail.is_set():
            fail.clear()
            raise RuntimeError("server away")

    sync = pgaadauth.GroupSync(run, interval=0.01).start()
    try:
        wait_for(lambda: sync.runs >= 3, what="three runs")
        assert sync.last_error is None and len(calls) >= 3  # the failed first run was retried
    finally:
        sync.stop()
    with pytest.raises(ValueError, match="positive"):
        pgaadauth.GroupSync(run, interval=0)
    assert pgaadauth.AZURE_INTERVAL == 1800.0
