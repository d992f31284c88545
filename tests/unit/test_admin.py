"""admin.py's pure parts: the SQL add-group prints, principals listed once, near-miss names, group sync's state."""

from __future__ import annotations

import json

import pytest

from tokend.admin import (
    Listed,
    Principal,
    Synced,
    add_group_sql,
    fold,
    near_miss,
    render_principals,
    render_synced,
    sync_state,
    unique_principals,
)
from tokend.errors import UsageError


def test_members_only_adds_nologin_last_inside_the_transaction() -> None:
    plain = add_group_sql("DBA Group", "appdb", ["sales"])
    members = add_group_sql("DBA Group", "appdb", ["sales"], members_only=True)
    assert "NOLOGIN" not in plain
    assert members.startswith(plain.removesuffix("COMMIT;\n"))
    assert members.endswith('ALTER ROLE "DBA Group" NOLOGIN;\nCOMMIT;\n')
    quoted = add_group_sql('Odd "Quoted" Group', "appdb", ["sales"], members_only=True)
    assert 'ALTER ROLE "Odd ""Quoted"" Group" NOLOGIN;' in quoted
    with pytest.raises(UsageError, match="control character"):
        add_group_sql("two\nlines", "appdb", ["sales"], members_only=True)


def test_each_principal_once_administrators_included() -> None:
    false_rows = [
        ["DBA Group", "group", "g-oid", "tid", "0", "0"],
        ["admin@contoso.example", "user", "a-oid", "tid", "0", "1"],
        ["ci-app", "service", "s-oid", "tid", "0", "0"],
    ]
    true_rows = [["admin@contoso.example", "user", "a-oid", "tid", "0", "1"]]
    listed = unique_principals(false_rows + true_rows)
    assert [p.role for p in listed] == ["DBA Group", "admin@contoso.example", "ci-app"]
    assert listed[1] == Listed("admin@contoso.example", "user", "a-oid", True)
    # a server whose (false) leaves the administrators out still lists them, once, as administrators
    assert unique_principals(false_rows[::2] + true_rows) == [
        Listed("DBA Group", "group", "g-oid", False),
        Listed("ci-app", "service", "s-oid", False),
        Listed("admin@contoso.example", "user", "a-oid", True),
    ]
    # an administrator that (false) lists without the flag is an administrator all the same
    assert unique_principals([["x", "user", "o", "t", "0", "0"], ["x", "user", "o", "t", "0", "1"]])[0].admin
    assert unique_principals([[None, "user"], ["short"]]) == [Listed("short", "?", "", False)]


def test_names_that_differ_only_in_case_or_spaces() -> None:
    roles = ["DBA Group", "dba-group", "Readers", "DBA Group Two"]
    assert fold(" DBA  Group ") == fold("dbagroup") == "dbagroup"
    for typed in ("dba group", "DBA  Group", "DBAGroup", " dba group", "DBA\u00a0Group"):
        assert near_miss(typed, roles) == "DBA Group", typed
    assert near_miss("DBA Group", roles) is None  # an exact match is no near miss
    assert near_miss("DBA-Group", roles) == "dba-group"
    assert near_miss("DBA Groups", roles) is None and near_miss("Writers", roles) is None


def test_group_sync_state_from_the_setting() -> None:
    assert [sync_state(v) for v in ("on", "ON", "true", "1", " on ")] == ["on"] * 5
    assert [sync_state(v) for v in ("off", "OFF", "false", "0")] == ["off"] * 4
    assert [sync_state(v) for v in (None, "", "  ")] == ["unknown"] * 3


def _principal(role: str, kind: str, member_of: list[str], synced: list[str], sync: str | None) -> Principal:
    return Principal(role, kind, f"{role}-oid", False, kind != "group", member_of, {}, synced, sync)


def test_list_marks_synced_memberships_and_shows_the_setting() -> None:
    found = [
        _principal("DBA Group", "group", [], [], "on"),
        _principal("dana@contoso.example", "user", ["DBA Group", "Other"], ["DBA Group"], None),
    ]
    human = render_principals(found, as_json=False)
    assert human.splitlines()[0] == "group sync (pgaadauth.enable_group_sync): on"
    assert "DBA Group (sync), Other" in human and "Other (sync)" not in human
    data = json.loads(render_principals(found, as_json=True))
    assert isinstance(data, list) and data[1]["synced_into"] == ["DBA Group"] and data[0]["group_sync"] == "on"
    alone = render_principals([_principal("ci-app", "service", [], [], None)], as_json=False)
    assert not alone.startswith("group sync")  # no group principal: nothing to say about sync


def test_sync_output_names_each_change() -> None:
    out = render_synced([Synced("DBA Group", "dana@contoso.example", "created"), Synced("", "", "odd | row")], "h")
    assert out.splitlines() == ["group sync ran on h:", "  created: dana@contoso.example in 'DBA Group'", "  odd | row"]
    assert "already had" in render_synced([], "h")
