"""The one safe writer (``sinks/atomic.py``): atomic rewrites that keep every byte the caller does not change, 0600
temporary files renamed into place under a lock, a re-read when someone else changed the file meanwhile, and a
refusal, with the reason and the fix, of every file that is not safely the user's.

Files of another user need a second uid: made with chown when the tests run as root, skipped otherwise (the e2e
security tests use a real second user for the same rules)."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tokend import system
from tokend.errors import SinkError
from tokend.sinks import atomic, lock_dir

OTHER_UID = 65534  # nobody
as_root = pytest.mark.skipif(os.getuid() != 0, reason="making a file of another user needs root here")


@pytest.fixture
def locks(tmp_path: Path) -> Path:
    folder = tmp_path / "locks"
    folder.mkdir(mode=0o700)
    return folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder of the user's that nobody else may write, as a home folder is."""
    f = tmp_path / "files"
    f.mkdir(mode=0o700)
    return f


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def const(data: bytes) -> Callable[[bytes | None], bytes]:
    return lambda _old: data


def test_a_new_file_is_0600_whatever_the_umask(folder: Path, locks: Path) -> None:
    old = os.umask(0)
    try:
        assert atomic.rewrite(folder / "pgpass", const(b"line\n"), locks) is True
    finally:
        os.umask(old)
    assert (folder / "pgpass").read_bytes() == b"line\n" and mode(folder / "pgpass") == 0o600


def test_a_rewrite_replaces_the_file_whole_and_leaves_no_temporary_file(folder: Path, locks: Path) -> None:
    path = folder / "pgpass"
    path.write_bytes(b"user line 1\nuser line 2\n")
    path.chmod(0o644)
    inode = path.stat().st_ino
    seen: list[bytes | None] = []

    def prepend(old: bytes | None) -> bytes:
        seen.append(old)
        return b"ours\n" + (old or b"")

    assert atomic.rewrite(path, prepend, locks) is True
    assert seen == [b"user line 1\nuser line 2\n"]
    assert path.read_bytes() == b"ours\nuser line 1\nuser line 2\n"
    assert path.stat().st_ino != inode  # a new file renamed over the old one, not the old one rewritten in place
    assert mode(path) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == ["pgpass"]


def test_no_change_writes_nothing(folder: Path, locks: Path) -> None:
    path = folder / "pgpass"
    path.write_bytes(b"same\n")
    before = os.stat(path)
    assert atomic.rewrite(path, lambda old: old, locks) is False  # the same bytes
    assert atomic.rewrite(path, lambda _old: None, locks) is False  # "leave it as it is"
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_missing_file_reaches_the_transform_as_none(folder: Path, locks: Path) -> None:
    seen: list[bytes | None] = []
    atomic.rewrite(folder / "new", lambda old: seen.append(old) or None, locks)
    assert seen == [None] and not (folder / "new").exists()


def test_someone_elses_edit_between_read_and_rename_is_kept(folder: Path, locks: Path) -> None:
    path = folder / "pgpass"
    path.write_bytes(b"a\n")
    seen: list[bytes | None] = []

    def transform(old: bytes | None) -> bytes:
        seen.append(old)
        if len(seen) == 1:  # a person saves the file in an editor while we compute ours
            path.write_bytes(b"a\nb edited meanwhile\n")
        return b"ours\n" + (old or b"")

    assert atomic.rewrite(path, transform, locks) is True
    assert seen == [b"a\n", b"a\nb edited meanwhile\n"]
    assert path.read_bytes() == b"ours\na\nb edited meanwhile\n"
    assert sorted(p.name for p in folder.iterdir()) == ["pgpass"]


@pytest.mark.skipif(not system.LINUX, reason="the swap is Linux's renameat2; elsewhere this instant remains")
def test_a_save_landing_between_our_last_look_and_the_swap_is_kept(
    folder: Path, locks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instant no re-read can see: an editor renames its save over the file just after our last look. The swap
    takes that save out, sees it is not the file we read, puts it back and merges it on the next attempt."""
    path = folder / "pgpass"
    path.write_bytes(b"a\n")
    look = atomic._stamp
    saved: list[Path] = []

    def look_then_an_editor_saves(p: Path) -> tuple[int, int, int] | None:
        stamp = look(p)
        if p.name == "pgpass" and not saved:  # our last look before putting our file in place
            editor = folder / ".pgpass.swp"
            editor.write_bytes(b"a\nb saved meanwhile\n")
            os.replace(editor, path)
            saved.append(path)
        return stamp

    monkeypatch.setattr(atomic, "_stamp", look_then_an_editor_saves)
    seen: list[bytes | None] = []

    def transform(old: bytes | None) -> bytes:
        seen.append(old)
        return b"ours\n" + (old or b"")

    assert atomic.rewrite(path, transform, locks) is True
    assert seen == [b"a\n", b"a\nb saved meanwhile\n"]
    assert path.read_bytes() == b"ours\na\nb saved meanwhile\n"
    assert sorted(p.name for p in folder.iterdir()) == ["pgpass"]


def test_a_file_that_never_stops_changing_is_an_error_not_a_loop(folder: Path, locks: Path) -> None:
    path = folder / "pgpass"
    path.write_bytes(b"0")
    calls = []

    def transform(old: bytes | None) -> bytes:
        calls.append(old)
        path.write_bytes(str(len(calls)).encode() * len(calls))  # another size every time: the stamp differs
        return b"ours"

    with pytest.raises(SinkError, match="kept changing while tokend tried to write it; will retry"):
        atomic.rewrite(path, transform, locks, attempts=3)
    assert len(calls) == 3 and sorted(p.name for p in folder.iterdir()) == ["pgpass"]


def test_another_writer_holding_the_lock_is_waited_for_then_reported(
    folder: Path, locks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(atomic, "LOCK_TIMEOUT", 0.2)
    path = folder / "pgpass"
    path.write_bytes(b"keep\n")
    held = system.file_lock(str(locks / _lock_name(path)), timeout=1.0)  # as another tokend writing it would
    with held, pytest.raises(SinkError, match=r"another tokend has held the write lock for over 0 s; will retry"):
        atomic.rewrite(path, const(b"ours\n"), locks)
    assert path.read_bytes() == b"keep\n"
    assert atomic.rewrite(path, const(b"ours\n"), locks) is True  # released: the next attempt goes through


def _lock_name(path: Path) -> str:
    """The lock file's name for ``path``: one per real file, so two names of one file share it."""
    return f"{hashlib.sha256(str(atomic.resolve(path)).encode()).hexdigest()[:16]}.lock"


def test_temporary_files_a_killed_writer_left_are_removed_and_nothing_else(folder: Path, locks: Path) -> None:
    path = folder / "pgpass"
    path.write_bytes(b"x\n")
    (folder / ".pgpass.k3j2l1.tokend.tmp").write_bytes(b"half a write")
    (folder / ".pgpass.dir.tokend.tmp").mkdir()  # not a regular file: not ours to remove
    (folder / ".other.abc.tokend.tmp").write_bytes(b"another file's")
    atomic.rewrite(path, const(b"y\n"), locks)
    assert sorted(p.name for p in folder.iterdir()) == [".other.abc.tokend.tmp", ".pgpass.dir.tokend.tmp", "pgpass"]


def test_a_symlink_of_the_users_is_written_through_to_its_target(folder: Path, locks: Path) -> None:
    (folder / "real").mkdir(mode=0o700)
    target = folder / "real" / "pgpass"
    target.write_bytes(b"user\n")
    (folder / "hop").symlink_to("real/pgpass")  # relative links resolve from their own folder
    link = folder / "pgpass"
    link.symlink_to(folder / "hop")
    assert atomic.place(link) == str(target)
    assert atomic.rewrite(link, lambda old: b"ours\n" + (old or b""), locks) is True
    assert link.is_symlink() and (folder / "hop").is_symlink()
    assert target.read_bytes() == b"ours\nuser\n"


def test_a_dangling_symlink_creates_its_target(folder: Path, locks: Path) -> None:
    (folder / "pgpass").symlink_to("pgpass.real")
    atomic.rewrite(folder / "pgpass", const(b"ours\n"), locks)
    assert (folder / "pgpass").is_symlink() and (folder / "pgpass.real").read_bytes() == b"ours\n"


def test_a_symlink_loop_is_refused(folder: Path, locks: Path) -> None:
    (folder / "a").symlink_to("b")
    (folder / "b").symlink_to("a")
    with pytest.raises(SinkError, match="too many symlinks; set the path to the file itself"):
        atomic.rewrite(folder / "a", const(b"x"), locks)


@as_root
def test_a_symlink_of_another_users_is_not_followed(folder: Path, locks: Path) -> None:
    victim = folder / "victim"
    victim.write_bytes(b"keep\n")
    link = folder / "pgpass"
    link.symlink_to(victim)
    os.lchown(link, OTHER_UID, OTHER_UID)
    with pytest.raises(SinkError, match=r"is a symlink owned by another user \(uid 65534\); tokend follows only"):
        atomic.rewrite(link, const(b"x"), locks)
    assert victim.read_bytes() == b"keep\n" and atomic.place(link) == str(link)


@as_root
def test_another_users_file_is_neither_written_nor_read(folder: Path, locks: Path) -> None:
    path = folder / "pgpass"
    path.write_bytes(b"theirs\n")
    os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.raises(SinkError, match=r"belongs to another user \(uid 65534\)"):
        atomic.rewrite(path, const(b"x"), locks)
    with pytest.raises(SinkError, match="belongs to another user"):
        atomic.read(path)
    assert path.read_bytes() == b"theirs\n"


def make_fifo(p: Path) -> None:
    os.mkfifo(p)


def make_socket(p: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    s.close()


def make_folder(p: Path) -> None:
    p.mkdir()


def make_device_link(p: Path) -> None:
    p.symlink_to("/dev/null")  # the user's own link, to a device


@pytest.mark.parametrize(
    ("make", "kind"),
    [(make_fifo, "a FIFO"), (make_socket, "a socket"), (make_folder, "a folder"), (make_device_link, "a device")],
)
def test_what_is_not_a_regular_file_is_never_replaced_nor_read(
    folder: Path, locks: Path, make: Callable[[Path], None], kind: str
) -> None:
    path = folder / "pgpass"
    make(path)
    with pytest.raises(SinkError, match=f"is {kind}; tokend only writes and reads back regular files"):
        atomic.rewrite(path, const(b"x"), locks)
    with pytest.raises(SinkError, match=f"is {kind}"):
        atomic.read(path)  # a FIFO would block a plain open(): this returns at once
    assert (os.path.lexists(path) and not path.is_file()) or kind == "a device"


def test_a_file_with_several_hard_links_is_refused(folder: Path, locks: Path) -> None:
    path = folder / "pgpass"
    path.write_bytes(b"shared\n")
    os.link(path, folder / "other-name")
    with pytest.raises(SinkError, match="has 2 hard links; tokend replaces the file on every write"):
        atomic.rewrite(path, const(b"x"), locks)
    assert (folder / "other-name").read_bytes() == b"shared\n"


@pytest.mark.parametrize(("sticky", "exists", "ok"), [(False, True, False), (True, True, True), (True, False, False)])
def test_a_folder_others_may_write_is_used_only_when_sticky_and_the_file_is_ours(
    tmp_path: Path, locks: Path, sticky: bool, exists: bool, ok: bool
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777 if sticky else 0o777)
    path = shared / "pgpass"
    if exists:
        path.write_bytes(b"mine\n")
    if ok:
        assert atomic.rewrite(path, const(b"ours\n"), locks) and path.read_bytes() == b"ours\n"
        return
    with pytest.raises(SinkError, match=f"is writable by other users{'' if sticky else ' and not sticky'}, so"):
        atomic.rewrite(path, const(b"ours\n"), locks)
    assert path.read_bytes() == b"mine\n" if exists else not path.exists()


def test_a_missing_folder_is_named_with_the_fix(tmp_path: Path, locks: Path) -> None:
    with pytest.raises(SinkError, match=r"folder .*/nowhere does not exist; create it or set another path"):
        atomic.rewrite(tmp_path / "nowhere" / "pgpass", const(b"x"), locks)


def test_read_gives_the_bytes_up_to_a_limit_or_none_when_nothing_is_there(folder: Path) -> None:
    path = folder / "pidfile"
    path.write_bytes(b"12345\n")
    assert atomic.read(path) == b"12345\n"
    assert atomic.read(path, limit=3) == b"123"
    assert atomic.read(folder / "missing") is None
    assert atomic.read(folder / "no-folder" / "missing") is None


def test_check_writable_accepts_a_safe_place_and_names_the_setting_otherwise(folder: Path) -> None:
    atomic.check_writable(folder / "pgpass", "[sinks.pgpass] path")
    os.mkfifo(folder / "pgpass")
    with pytest.raises(SinkError, match=r"is a FIFO; .* \(\[sinks.pgpass\] path\)$"):
        atomic.check_writable(folder / "pgpass", "[sinks.pgpass] path")


def test_write_makes_missing_folders_private_and_locks_in_the_runtime_folder(tmp_path: Path) -> None:
    path = tmp_path / "state" / "tokend" / "abc" / "index.json"
    assert atomic.write(path, b"{}") is True
    assert path.read_bytes() == b"{}" and mode(path) == 0o600
    assert [mode(p) for p in (path.parent, path.parent.parent, path.parent.parent.parent)] == [0o700] * 3
    runtime_locks = Path(os.environ["XDG_RUNTIME_DIR"]) / "tokend" / "locks"
    assert mode(runtime_locks) == 0o700 and any(runtime_locks.glob("*.lock"))
    assert atomic.write(path, b"{}") is False


def test_write_private_encodes_text(tmp_path: Path) -> None:
    path = tmp_path / "task.xml"
    atomic.write_private(path, "<Task/>", encoding="utf-16")
    assert path.read_bytes() == "<Task/>".encode("utf-16") and mode(path) == 0o600


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
