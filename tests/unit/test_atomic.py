"""The one safe writer, in-process: whole-file rewrites at 0600 through the user's own links, and refusals (with
the reason) of what a rename would break or another user could have planted."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tokend.errors import SinkError
from tokend.sinks import atomic, lock_dir


def test_a_rewrite_is_whole_0600_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    p = folder / "f"
    p.write_bytes(b"old")
    p.chmod(0o644)
    assert atomic.rewrite(p, lambda old: (old or b"") + b"+new", lock_dir())
    assert p.read_bytes() == b"old+new" and stat.S_IMODE(p.stat().st_mode) == 0o600
    assert sorted(x.name for x in folder.iterdir()) == ["f"]
    assert not atomic.rewrite(p, lambda old: old, lock_dir())  # the same bytes: nothing written


def test_nothing_to_write_creates_nothing(tmp_path: Path) -> None:
    assert not atomic.rewrite(tmp_path / "f", lambda _old: None, lock_dir())
    assert not (tmp_path / "f").exists()


def test_a_symlink_of_ones_own_is_written_through(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_bytes(b"x")
    link = tmp_path / "link"
    link.symlink_to(real)
    atomic.write(link, b"y")
    assert link.is_symlink() and real.read_bytes() == b"y"


def make_fifo(p: Path) -> None:
    os.mkfifo(p)


def make_folder(p: Path) -> None:
    p.mkdir()


def make_hard_link(p: Path) -> None:
    other = p.with_name("other")
    other.write_bytes(b"x")
    os.link(other, p)


@pytest.mark.parametrize(
    ("make", "says"),
    [(make_fifo, "is a FIFO"), (make_folder, "is a folder"), (make_hard_link, "has 2 hard links")],
)
def test_what_a_rename_would_break_is_refused_with_the_reason(tmp_path: Path, make, says: str) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "f"
    make(p)
    with pytest.raises(SinkError, match=says):
        atomic.write(p, b"token")
    with pytest.raises(SinkError, match=says):
        atomic.read(p)


def test_read_gives_none_for_nothing_and_the_bytes_otherwise(tmp_path: Path) -> None:
    assert atomic.read(tmp_path / "missing") is None
    assert atomic.read(tmp_path / "no-folder" / "missing") is None
    (tmp_path / "f").write_bytes(b"abcdef")
    assert atomic.read(tmp_path / "f", 3) == b"abc"
