"""The pgpass sink: user bytes kept, block first, escaping, atomic and locked writes, symlinks, modes; libpq's
matching rules (fe-connect.c passwordFromFile), target lookup by connection, and what the sink tells doctor."""

from __future__ import annotations

import os
import re
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokend.config import Config, Target
from tokend.errors import SinkError, UsageError
from tokend.sinks import block, pgpass
from tokend.sinks.block import BOM
from tokend.sinks.pgpass import PgpassSink, escape, parse, render_block, splice

from support.builders import GROUP, entry, target
from support.users import open_path_for_others

USER_CONTENT = (
    b"# my own servers\r\n"
    b"db.internal:5432:*:bob:hunter2\r\n"
    b"*:*:*:carol:pa\\:ss\\\\word\r\n"
    b"\r\n"
    b"weird host\\:name:6543:db:dave:x"  # no final newline
)


def sink(path: Path, owner: str = "owner1") -> PgpassSink:
    return PgpassSink({"path": str(path)}, owner)


def test_block_goes_first_and_user_bytes_stay(tmp_path: Path) -> None:
    p = tmp_path / "pgpass"
    p.write_bytes(USER_CONTENT)
    sink(p).sync([entry()])
    data = p.read_bytes()
    assert data.endswith(USER_CONTENT)
    lines = parse(data.decode())
    assert lines[0] == ("h.example", "5432", "*", "DBA Group", "tok-1")
    # the block follows the file's CRLF convention
    assert data.split(b"\n", 1)[0].endswith(b"\r")


def test_hundred_rewrites_keep_every_user_byte(tmp_path: Path) -> None:
    p = tmp_path / "pgpass"
    p.write_bytes(USER_CONTENT)
    s = sink(p)
    for i in range(100):
        s.sync([entry(value=f"token-{i}"), entry("other", f"o-{i}", host="o.example")])
        data = p.read_bytes()
        assert data.endswith(USER_CONTENT)
        assert parse(data.decode())[0][4] == f"token-{i}"
    s.sync([entry(value="last")])  # a target removed from the config leaves the file
    assert b"o.example" not in p.read_bytes()
    s.sync([])
    assert p.read_bytes() == USER_CONTENT


def test_escaping_round_trips_through_libpq_rules() -> None:
    assert escape("a:b\\c") == "a\\:b\\\\c"
    block = render_block([entry(host="::1", user="we:ird\\user")], "o").decode()
    assert parse(block) == [("::1", "5432", "*", "we:ird\\user", "tok-1")]


def test_mode_0600_no_bom_and_symlink_written_through(tmp_path: Path) -> None:
    real = tmp_path / "real" / "pgpass"
    real.parent.mkdir()
    real.write_bytes(b"x:1:*:u:p\n")
    real.chmod(0o644)
    link = tmp_path / ".pgpass"
    link.symlink_to(real)
    sink(link).sync([entry()])
    assert link.is_symlink()
    data = real.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf")
    assert data.endswith(b"x:1:*:u:p\n")
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert not list(real.parent.glob("*.tmp"))


def test_no_file_and_nothing_to_write_creates_nothing(tmp_path: Path) -> None:
    p = tmp_path / "pgpass"
    sink(p).sync([])
    assert not p.exists()
    assert splice(None, "o", []) is None


def test_two_owners_share_one_file(tmp_path: Path) -> None:
    p = tmp_path / "pgpass"
    p.write_bytes(b"user:1:*:u:p\n")
    a, b = sink(p, "aaaa"), sink(p, "bbbb")
    a.sync([entry(value="A1")])
    b.sync([entry("b", "B1", host="b.example")])
    a.sync([entry(value="A2")])
    text = p.read_text()
    assert "A2" in text and "B1" in text and "A1" not in text
    assert text.endswith("user:1:*:u:p\n")
    b.sync([])
    assert "B1" not in p.read_text() and "A2" in p.read_text()


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """Two writers (threads here; the lock is on the folder, shared by processes too) never lose each other's block."""
    p = tmp_path / "pgpass"
    p.write_bytes(USER_CONTENT)
    errors: list[BaseException] = []

    def write(owner: str) -> None:
        try:
            s = sink(p, owner)
            for i in range(50):
                s.sync([entry(owner, f"{owner}-{i}", host=f"{owner}.example")])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(o,)) for o in ("w1", "w2", "w3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    data = p.read_bytes()
    assert data.endswith(USER_CONTENT)
    passwords = {line[4] for line in parse(data.decode())}
    assert {"w1-49", "w2-49", "w3-49"} <= passwords


def test_leftover_temp_file_is_cleaned(tmp_path: Path) -> None:
    p = tmp_path / "pgpass"
    leftover = tmp_path / ".pgpass.abc123.tokend.tmp"
    leftover.write_bytes(b"half")
    sink(p).sync([entry()])
    assert not leftover.exists()


def test_unwritable_folder_is_one_clear_error(tmp_path: Path) -> None:
    """Root writes anywhere, so under root (CI) the write runs in a child that has become nobody."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    open_path_for_others(folder)
    if os.geteuid() != 0:
        with pytest.raises(SinkError, match="cannot write"):
            sink(folder / "pgpass").sync([entry()])
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            sink(folder / "pgpass").sync([entry()])
        except SinkError as e:
            os.write(write, str(e).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    assert os.waitpid(pid, 0)[1] == 0, "the write as nobody did not fail with a SinkError"
    message = os.read(read, 4096).decode()
    assert "cannot write (Permission denied)" in message and str(folder) in message
    assert not (folder / "pgpass").exists()


def test_missing_folder_fails_check(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="does not exist"):
        sink(tmp_path / "nope" / "pgpass").check()


def test_deleted_end_marker_keeps_the_rest(tmp_path: Path) -> None:
    p = tmp_path / "pgpass"
    s = sink(p)
    s.sync([entry()])
    text = p.read_bytes().replace(b"# <<< tokend owner1\n", b"") + b"mine:1:*:u:p\n"
    p.write_bytes(text)
    s.sync([entry(value="tok-2")])
    data = p.read_bytes()
    assert data.endswith(b"mine:1:*:u:p\n")
    assert parse(data.decode())[0][4] == "tok-2"


field = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(user_bytes=st.binary(max_size=400), host=field, user=field)
def test_fuzz_user_bytes_survive_and_block_parses(user_bytes: bytes, host: str, user: str) -> None:
    if b"# >>> tokend o" in user_bytes or host.startswith("#"):  # libpq reads a leading # as a comment
        return
    new = splice(user_bytes, "o", [entry(host=host, user=user)])
    bom = BOM if user_bytes.startswith(BOM) else b""  # a BOM the file starts with stays at the start
    assert new is not None and new.startswith(bom) and new.endswith(user_bytes[len(bom) :])
    first = parse(new.decode("utf-8", "replace"))[0]
    assert first[0] == host and first[3] == user and first[4] == "tok-1"
    assert splice(new, "o", []) == user_bytes


# (line as written, connection (host, port, database, user), libpq takes it): rules 1-3 of sinks/pgpass.py
LINE_RULES = [
    ("h:5432:db:u:pw", ("h", "5432", "db", "u"), True),
    ("h:5432:db:u:pw", ("H", "5432", "db", "u"), False),  # case-sensitive
    ("h:5432:db:u:pw", ("h", "5433", "db", "u"), False),
    ("*:*:*:*:pw", ("any.host", "1", "x", "y"), True),
    ("h:*:*:u:pw", ("h", "6543", "other", "u"), True),
    ("\\*:5432:db:u:pw", ("h", "5432", "db", "u"), False),  # an escaped star is a literal star
    ("\\*:5432:db:u:pw", ("*", "5432", "db", "u"), True),
    ("**:5432:db:u:pw", ("h", "5432", "db", "u"), False),  # only a whole field of one star is the wildcard
    ("a\\:b:5432:db:u:pw", ("a:b", "5432", "db", "u"), True),
    ("h:5432:db:we\\\\ird:pw", ("h", "5432", "db", "we\\ird"), True),
    ("h:5432:db:u", ("h", "5432", "db", "u"), False),  # no password field: never matches
    ("h:5432:db:u:", ("h", "5432", "db", "u"), True),  # an empty password still matches
    ("#h:5432:db:u:pw", ("#h", "5432", "db", "u"), False),  # a comment
    ("h:5432:db:u:pw\r\r", ("h", "5432", "db", "u"), True),  # trailing CRs are stripped
    ("h:5432:db:DBA Group:pw", ("h", "5432", "db", "DBA Group"), True),
    ("h:5432:db:u:pw", ("h", "5432", None, "u"), True),  # database not known: any database field
]


@pytest.mark.parametrize(("raw", "conn", "taken"), LINE_RULES)
def test_libpq_matches_a_line_by_its_rules(raw: str, conn: tuple[str, str, str | None, str], taken: bool) -> None:
    line = pgpass.parse_line(raw)
    assert (line is not None and line.matches(*conn)) is taken


@pytest.mark.parametrize("raw", ["h:5432:*:u:pw", "a\\:b:*:\\*:we\\\\ird:pw", "\\*:\\*:\\*:\\*:pw"])
def test_a_lines_fields_show_as_written(raw: str) -> None:
    line = pgpass.parse_line(raw)
    assert line is not None and line.fields() + ":pw" == raw


@pytest.mark.parametrize(
    ("raw", "password"),
    [
        ("h:p:d:u:pa\\:ss\\\\word", "pa:ss\\word"),
        ("h:p:d:u:first:second", "first"),  # the password ends at the next unescaped ':'
        ("h:p:d:u:trailing\\", "trailing\\"),  # a lone final backslash stays
    ],
)
def test_the_password_is_de_escaped_up_to_the_next_colon(raw: str, password: str) -> None:
    line = pgpass.parse_line(raw)
    assert line is not None and line.password == password


@pytest.mark.parametrize(
    ("host", "port", "seen"),
    [
        (None, None, ("localhost", "5432")),
        ("", "", ("localhost", "5432")),
        ("/tmp", 5432, ("localhost", "5432")),  # the default socket folder is localhost
        ("/var/run/postgresql", "6432", ("/var/run/postgresql", "6432")),  # any other folder is its path
        ("db.example", 5433, ("db.example", "5433")),
    ],
)
def test_libpq_compares_the_host_and_port_it_was_given_by_these_rules(
    host: str | None, port: str | int | None, seen: tuple[str, str]
) -> None:
    assert pgpass.connection(host, port) == seen


def test_a_connection_by_address_alone_is_matched_by_the_address(tmp_path: Path) -> None:
    assert pgpass.connection("", 5432, hostaddr="10.0.0.5") == ("10.0.0.5", "5432")
    assert pgpass.connection("h.example", 5432, hostaddr="10.0.0.5") == ("h.example", "5432")
    text = "localhost:5432:*:u:local\n127.0.0.1:5432:*:u:address\n"
    path = tmp_path / "pgpass"
    path.write_text(text)
    path.chmod(0o600)
    first = pgpass.first_match(pgpass.read(text), *pgpass.connection("", 5432, hostaddr="127.0.0.1"), "d", "u")
    assert first is not None and first.password == libpq_password(path, "", "5432", "d", "u") == "address"


def test_the_first_matching_line_wins_and_no_user_or_database_matches_nothing() -> None:
    lines = pgpass.read("# mine\n*:*:*:u:wild\nh:5432:*:u:exact\n\nh:5432:db:*:any-user\n")
    first = pgpass.first_match(lines, "h", "5432", "db", "u")
    assert first is not None and (first.number, first.password) == (2, "wild")
    other = pgpass.first_match(lines, "h", "5432", "db", "v")
    assert other is not None and other.number == 5
    assert pgpass.first_match(lines, "h", "5432", "", "u") is None
    assert pgpass.first_match(lines, "h", "5432", "db", "") is None
    index = pgpass.Index(lines)
    for conn in [("h", "5432", "db", "u"), ("h", "5432", "db", "v"), ("x", "1", "db", "w")]:
        assert index.first_match(*conn) == pgpass.first_match(lines, *conn)


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        (stat.S_IFREG | 0o600, None),
        (stat.S_IFREG | 0o400, None),
        (stat.S_IFREG | 0o640, "has group or world access"),
        (stat.S_IFREG | 0o604, "has group or world access"),
        (stat.S_IFDIR | 0o700, "is not a plain file"),
    ],
)
def test_libpq_ignores_a_file_others_can_read_or_that_is_not_plain(mode: int, why: str | None) -> None:
    assert pgpass.ignored_because(mode) == why


def config_of(*targets: Target) -> Config:
    return Config(Path("/c/config.toml"), {}, {t.name: t for t in targets}, {})


LOOKUPS = [
    # (host, port, user, database, the target found)
    ("h.example", 5432, GROUP, None, "all"),
    ("h.example", "5432", f'"{GROUP}"', None, "all"),  # pgAdmin's identifier-quoted %USERNAME%
    ("h.example", None, GROUP, "reports", "all"),  # no port: 5432
    ("h.example", "05432", GROUP, "x", "all"),  # the port as a number
    ("h.example", 6432, GROUP, None, "reports"),
    ("h.example", 6432, GROUP, "reports", "reports"),
    ("localhost", 5432, "me", None, "local"),
    ("/tmp", 5432, "me", None, "local"),  # the default socket folder is matched as localhost
]


@pytest.mark.parametrize(("host", "port", "user", "database", "name"), LOOKUPS)
def test_target_for_picks_the_target_libpq_would_match(
    host: str, port: str | int | None, user: str, database: str | None, name: str
) -> None:
    cfg = config_of(
        target("all", port=5432),
        target("reports", port=6432, database="reports"),
        target("local", host="localhost", user="me"),
    )
    assert pgpass.target_for(cfg, host, port, user, database).name == name


@pytest.mark.parametrize(
    ("host", "port", "user", "database", "says"),
    [
        (None, 5432, GROUP, None, "give at least --host and --user"),
        ("h.example", 5432, None, None, "give at least --host and --user"),
        ("h.example", "x", GROUP, None, "--port must be a number"),
        ("H.example", 5432, GROUP, None, "no target in /c/config.toml for DBA Group@H.example:5432"),
        ("h.example", 6432, GROUP, "other", "no target in /c/config.toml for DBA Group@h.example:6432/other"),
    ],
)
def test_target_for_says_why_none_is_found(
    host: str | None, port: str | int | None, user: str | None, database: str | None, says: str
) -> None:
    cfg = config_of(target("all"), target("reports", port=6432, database="reports"))
    with pytest.raises(UsageError, match=re.escape(says)):
        pgpass.target_for(cfg, host, port, user, database)


def test_target_for_refuses_targets_that_would_hand_out_different_tokens() -> None:
    a, b = target("a"), Target("b", "h.example", 5432, "*", GROUP, "other", ("pgpass",))
    with pytest.raises(UsageError, match=r"several targets match .* different identities"):
        pgpass.target_for(config_of(a, b), "h.example", 5432, GROUP)
    assert pgpass.target_for(config_of(a, target("c")), "h.example", 5432, GROUP).name == "a"


def findings(p: Path, *targets: Target, reported: dict | None = None) -> dict[str, tuple[str, str, str]]:
    return {f.name: (f.status, f.evidence, f.fix) for f in sink(p).diagnose(list(targets), reported)}


def test_diagnose_a_healthy_file(tmp_path: Path) -> None:
    p = tmp_path / "pgpass"
    p.write_bytes(USER_CONTENT)
    sink(p).sync([entry(), entry("b", host="b.example")])
    got = findings(p, target(), target("b", host="b.example"))
    assert got["pgpass mode"] == ("ok", f"{p} is 0600", "")
    assert got["pgpass shadowing"][:2] == ("ok", "tokend's line is the first match for 2 targets")
    assert set(got) == {"pgpass mode", "pgpass shadowing"}


def test_diagnose_names_the_line_that_shadows_and_the_mode_libpq_ignores(tmp_path: Path) -> None:
    p = tmp_path / "pgpass"
    sink(p).sync([entry(), entry("db2", host="o.example", database="appdb")])
    p.write_bytes(b"h.example:5432:postgres:DBA Group:old\n" + p.read_bytes() + b"*:*:*:nobody:x\n")
    p.chmod(0o644)
    got = findings(p, target(), target("db2", host="o.example", database="appdb"), target("new", host="n.example"))
    assert got["pgpass mode"][0] == "fail" and "0644" in got["pgpass mode"][1]
    assert got["pgpass order"][0] == "warn"
    status, evidence, fix = got["pgpass shadowing"]
    assert status == "fail" and "below tokend's block" in fix
    assert "target db: line 1 (h.example:5432:postgres:DBA Group) comes first" in evidence
    assert "target new: no line matches yet" in evidence and "db2" not in evidence


def test_diagnose_a_missing_file_with_what_the_daemon_says(tmp_path: Path) -> None:
    p = tmp_path / "pgpass"
    assert findings(p)["pgpass"][0] == "ok"
    assert findings(p, target())["pgpass"][:2] == ("fail", f"{p} does not exist")
    said = findings(p, target(), reported={"db": {"state": "failed", "last_error": "cannot write"}})["pgpass"]
    assert said[0] == "fail" and "the daemon says: target db: failed (cannot write)" in said[1]


def test_diagnose_a_bom_libpq_cannot_read(tmp_path: Path) -> None:
    p = tmp_path / "pgpass"
    p.write_bytes(BOM + b"h.example:5432:*:DBA Group:x\n")
    p.chmod(0o600)
    assert findings(p, target())["pgpass encoding"][0] == "fail"


@pytest.mark.parametrize(("major", "status"), [(9, "fail"), (12, "fail"), (13, "ok"), (17, "ok")])
def test_a_libpq_before_13_cannot_read_a_token_line(major: int, status: str) -> None:
    finding = pgpass.libpq_finding("psql's libpq", major, f"psql (PostgreSQL) {major}.1")
    assert finding.status == status and (status == "ok") == (finding.fix == "")


def test_the_lines_of_an_owners_block_are_known_by_their_markers() -> None:
    text = render_block([entry()], "o1").decode() + "mine:1:*:u:p\n" + render_block([entry()], "o2").decode()
    assert block.owned_lines(text, "o1") == {1, 2, 3}
    assert block.owned_lines(text, "o2") == {5, 6, 7}


# -- the rules against libpq itself: psycopg's libpq looks the password up when a connection starts (PQpass), before
# any network I/O; hostaddr keeps it from resolving the host name, which pgpass is still matched against.
def libpq_password(pgpassfile: Path, host: str, port: str, database: str, user: str, hostaddr: bool = True) -> str:
    pq = pytest.importorskip("psycopg").pq

    def value(v: str) -> str:
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"

    fields = {"host": host, "hostaddr": "127.0.0.1" if hostaddr else "", "port": port, "dbname": database, "user": user}
    conninfo = " ".join(f"{k}={value(v)}" for k, v in fields.items() if v) + f" passfile={value(str(pgpassfile))}"
    conn = pq.PGconn.connect_start(conninfo.encode())
    try:
        return (conn.password or b"").decode()
    finally:
        conn.finish()


def ours(text: str, host: str, port: str, database: str, user: str, socket_dir: str = pgpass.DEFAULT_SOCKET_DIR) -> str:
    first = pgpass.first_match(pgpass.read(text), *pgpass.connection(host, port, socket_dir), database, user)
    return first.password if first else ""


piece = st.text(alphabet="ab*:\\#", max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.lists(piece, min_size=3, max_size=6).map(":".join), max_size=5),
    crlf=st.booleans(),
    conn=st.tuples(
        st.sampled_from(["a", "b", "*", "a:b", "a\\b", "ab", "#a"]),
        st.sampled_from(["5432", "6432"]),
        st.sampled_from(["a", "*", "b:", "\\"]),
        st.sampled_from(["a", "b", "*", "a\\", "a:b"]),
    ),
)
def test_the_rules_pick_the_password_libpq_picks(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], crlf: bool, conn: tuple[str, str, str, str]
) -> None:
    text = ("\r\n" if crlf else "\n").join(lines) + "\n"
    path = tmp_path_factory.mktemp("pgpass") / "pgpass"
    path.write_text(text, newline="")
    path.chmod(0o600)
    assert ours(text, *conn) == libpq_password(path, *conn), (text, conn)


def test_libpq_ignores_a_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "pgpass"
    path.write_text("*:*:*:*:pw\n")
    path.chmod(0o644)
    assert pgpass.ignored_because(path.stat().st_mode) is not None
    assert libpq_password(path, "a", "5432", "d", "u") == ""
    path.chmod(0o600)
    assert libpq_password(path, "a", "5432", "d", "u") == "pw"


def test_no_host_and_the_default_socket_folder_are_localhost_as_in_libpq(tmp_path: Path) -> None:
    text = "localhost:5432:*:u:local\n/tmp:5432:*:u:tmp\n/var/run/postgresql:5432:*:u:run\n"
    path = tmp_path / "pgpass"
    path.write_text(text)
    path.chmod(0o600)
    # the folder this libpq was built with (upstream /tmp; Debian's and psycopg-binary's /var/run/postgresql)
    built = (
        "/tmp" if libpq_password(path, "/tmp", "5432", "d", "u", hostaddr=False) == "local" else "/var/run/postgresql"
    )
    for host in ("", "/tmp", "/var/run/postgresql", "localhost"):
        want = libpq_password(path, host, "5432", "d", "u", hostaddr=False)
        assert ours(text, host, "5432", "d", "u", socket_dir=built) == want, host


def test_a_pgpass_libpq_ignores_is_not_written_ok(tmp_path: Path) -> None:
    p = tmp_path / "pgpass"
    sink(p).sync([entry()])
    assert sink(p).unread() is None
    p.chmod(0o644)  # by hand: the bytes stay, so the next write changes nothing and would pass for ok
    sink(p).sync([entry()])
    why = sink(p).unread()  # status shows the sink "ignored" with this
    assert why is not None and re.search(r"libpq ignores a pgpass that others can read; chmod 600 ", why), why
    assert stat.S_IMODE(p.stat().st_mode) == 0o644  # the mode is the user's to fix; the reason says how


def test_no_line_matches_yet_with_no_daemon_says_start_the_daemon(tmp_path: Path) -> None:
    p = tmp_path / "pgpass"
    p.write_bytes(USER_CONTENT)
    p.chmod(0o600)
    status, evidence, fix = findings(p, target())["pgpass shadowing"]
    assert status == "fail" and "no line matches yet" in evidence
    assert "no daemon runs" in fix and "tokend run" in fix and "below tokend's block" not in fix
    _, _, with_daemon = findings(p, target(), reported={"db": {"state": "pending", "last_error": None}})[
        "pgpass shadowing"
    ]
    assert "no daemon" not in with_daemon
