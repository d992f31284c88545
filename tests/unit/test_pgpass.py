"""The pgpass sink: user bytes kept, block first, escaping, atomic and locked writes, symlinks, modes."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokend.errors import SinkError
from tokend.sinks.block import BOM
from tokend.sinks.pgpass import PgpassSink, escape, parse, render_block, splice

from support.builders import entry
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
