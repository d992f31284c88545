"""Sinks in-process: built through the table, explaining themselves (``diagnose``), and the pure parts of the
pg_service and PgBouncer sinks (their lines, PgBouncer's pidfile and signal rules)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from keyring.backends import fail

from tokend.errors import SinkError
from tokend.kinds import SINKS
from tokend.sinks import build, pg_service, pgbouncer
from tokend.sinks.keychain import KeychainSink

from support.builders import entry, target


@pytest.mark.parametrize("kind", list(SINKS))
def test_every_kind_builds_through_the_table_and_has_nothing_to_say_unused(kind: str, tmp_path: Path) -> None:
    sink = build(kind, {}, "owner1")
    assert sink.kind == kind and sink.owner == "owner1"
    if kind != "pgpass":  # pgpass always says whether the file is there
        assert sink.diagnose([], None) == []


def test_a_usable_place_is_ok_with_where_it_is(tmp_path: Path) -> None:
    sink = build("pg_service", {"path": str(tmp_path / "pg_service.conf")}, "o")
    (finding,) = sink.diagnose([target()], None)
    assert (finding.name, finding.status, finding.evidence) == ("pg_service", "ok", str(tmp_path / "pg_service.conf"))


@pytest.mark.parametrize(
    ("kind", "options", "says"),
    [
        ("pg_service", {"path": "/nonexistent-folder/pg_service.conf"}, "does not exist"),
        ("pgbouncer", {"path": "/tmp/tokend.ini"}, "set path (the include file"),
    ],
)
def test_an_unusable_place_fails_with_the_reason(kind: str, options: dict[str, str], says: str) -> None:
    (finding,) = build(kind, options, "o").diagnose([target()], None)
    assert finding.status == "fail" and says in finding.evidence and finding.fix


def test_no_keychain_is_diagnosed_with_what_to_start() -> None:
    (finding,) = KeychainSink({}, "o", kr=fail.Keyring()).diagnose([target()], None)
    assert finding.name == "keychain" and finding.status == "fail" and "Secret Service" in finding.evidence


def test_a_service_section_names_one_database_and_no_token() -> None:
    lines = pg_service.section(entry(value="tok-secret", database="*"))
    assert lines == ["[db]", "host=h.example", "port=5432", "dbname=postgres", "user=DBA Group", "sslmode=require"]
    assert "tok-secret" not in "".join(lines)


def test_the_service_file_follows_pgservicefile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "services"))
    assert pg_service.default_path() == tmp_path / "services"


@pytest.mark.parametrize(
    ("user", "quoted"),
    [("alice", "alice"), ("a.b@c.example", "a.b@c.example"), ("DBA Group", "'DBA Group'"), ("o'k\\", "'o\\'k\\\\'")],
)
def test_pgbouncer_lines_quote_what_needs_it(user: str, quoted: str) -> None:
    line = pgbouncer.line_for(entry(value="tok", database="appdb", user=user))
    assert line == f"db = host=h.example port=5432 dbname=appdb user={quoted} password=tok"


def test_pgbouncer_refuses_any_database_and_tokens_it_would_cut() -> None:
    with pytest.raises(SinkError, match="PgBouncer needs one database"):
        pgbouncer.line_for(entry(database="*"))
    with pytest.raises(SinkError, match="cuts passwords at 2047"):
        pgbouncer.line_for(entry(value="x" * 2048, database="appdb"))
    assert pgbouncer.line_for(entry(value="x" * 2047, database="appdb")).endswith("x" * 2047)


@pytest.mark.parametrize(
    ("content", "pid", "says"),
    [
        (b"4242\n", 4242, ""),
        (b"  77", 77, ""),
        (b"-1\n", None, "not PgBouncer's pid"),
        (b"0\n", None, "not PgBouncer's pid"),
        (b"1\n", None, "not PgBouncer's pid"),
        (b"abc\n", None, "not PgBouncer's pid"),
        (b"99999999999\n", None, "not PgBouncer's pid"),
        (None, None, "no PgBouncer pidfile"),
    ],
)
def test_the_pidfile_names_a_pid_above_one_or_is_refused(
    tmp_path: Path, content: bytes | None, pid: int | None, says: str
) -> None:
    pidfile = tmp_path / "pgbouncer.pid"
    if content is not None:
        pidfile.write_bytes(content)
    if pid is not None:
        assert pgbouncer.pidfile_pid(pidfile) == pid
    else:
        with pytest.raises(SinkError, match=says):
            pgbouncer.pidfile_pid(pidfile)


@pytest.mark.skipif(sys.platform == "win32", reason="PgBouncer's RELOAD is a POSIX signal")
def test_only_a_running_pgbouncer_of_ones_own_is_hung_up(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])  # a process of ours, but not PgBouncer
    try:
        with pytest.raises(SinkError, match="not PgBouncer"):
            pgbouncer.hang_up(sleeper.pid, tmp_path / "pid")
    finally:
        sleeper.kill()
        sleeper.wait()
    with pytest.raises(SinkError, match="is not running"):
        pgbouncer.hang_up(sleeper.pid, tmp_path / "pid")  # reaped: no such process


def test_purge_reports_only_removals_it_did(tmp_path: Path) -> None:
    """`--purge` says what it removed: nothing for a sink that held nothing of this config's (no keychain here,
    PgBouncer with no path, files without the block)."""
    assert KeychainSink({}, "o", kr=fail.Keyring()).purge() is None  # wrote nothing: the keychain is not opened
    assert build("pgbouncer", {}, "o").purge() is None
    assert build("pgbouncer", {"path": str(tmp_path / "none.ini")}, "o").purge() is None
    assert build("pg_service", {"path": str(tmp_path / "none.conf")}, "o").purge() is None
    theirs = tmp_path / "theirs.conf"
    theirs.write_text("[mine]\nhost=x\n")
    assert build("pg_service", {"path": str(theirs)}, "o").purge() is None
    assert theirs.read_text() == "[mine]\nhost=x\n"


def test_purge_removes_a_file_left_empty_and_keeps_one_with_the_users_lines(tmp_path: Path) -> None:
    made, shared = tmp_path / "pg_service.conf", tmp_path / "pgpass"
    build("pg_service", {"path": str(made)}, "o").sync([entry(database="appdb")])
    shared.write_text("legacy:5432:*:bob:pw\n")
    build("pgpass", {"path": str(shared)}, "o").sync([entry()])
    assert "held only this config's entries" in (build("pg_service", {"path": str(made)}, "o").purge() or "")
    assert not made.exists()  # no 0-byte file left behind
    assert build("pgpass", {"path": str(shared)}, "o").purge() == f"removed this config's entries from {shared}"
    assert shared.read_text() == "legacy:5432:*:bob:pw\n"
