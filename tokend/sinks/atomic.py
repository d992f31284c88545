"""The one safe writer: rewrite a file atomically under a lock, keeping every byte the caller does not change — and
only a file that is safely the user's. Every file tokend writes goes through ``rewrite`` (``write`` for a whole
file); what it reads back and acts on (a backup, a pidfile) through ``read``, under the same rules.

Which file (``resolve``): a symlink is followed only when it, and every link after it, belongs to the user (or
root), and only to a regular file of the user's (or to nothing yet); a file in a folder others may write is used
only when the folder is sticky and the file is the user's; a device, FIFO or socket is never replaced, nor a file
with several hard links or a single-file bind mount (a rename would split them). Each refusal says why and how to
fix it.

How: the new content goes to a temporary file with an unpredictable name in the same folder (O_EXCL|O_NOFOLLOW,
mode 0600), is fsynced, and renamed over the old file. Writers are serialised with a lock file in tokend's private
runtime folder (one per file), taken with a timeout, so another user can never stall the writer. If someone else
changed the file between our read and our rename (a person in an editor), we start over from their version. Where
the OS swaps two names in one step (Linux), the new file is swapped in rather than renamed over, and what the swap
took out is compared with what we read: an edit that landed in the instant between our last look and the swap is
swapped back in and merged on the next attempt, not lost. Elsewhere that instant remains.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from tokend import paths, system
from tokend.errors import SinkError
from tokend.sinks import lock_dir

Transform = Callable[[bytes | None], bytes | None]
Stamp = tuple[int, int, int]  # inode, mtime in ns, size: a file replaced, or changed in place, has another
_TMP_SUFFIX = ".tokend.tmp"
LOCK_TIMEOUT = 10.0  # seconds to wait for another tokend writing the same file
_MAX_LINKS = 40


def _trusted(uid: int) -> bool:
    return system.WINDOWS or uid in (os.getuid(), 0)


def resolve(path: Path) -> Path:
    """The regular file (or not-yet-existing name) that writing ``path`` may replace; SinkError when it is unsafe."""
    p = Path(os.path.abspath(path))
    for _ in range(_MAX_LINKS):
        try:
            st = os.lstat(p)
        except (FileNotFoundError, NotADirectoryError):
            break  # nothing there yet (the folder check below says what is wrong with its folder, if anything)
        except OSError as e:
            raise SinkError(f"{path}: cannot look at {p} ({e.strerror})") from None
        if not stat.S_ISLNK(st.st_mode):
            break
        if not _trusted(st.st_uid):
            raise SinkError(
                f"{path}: {p} is a symlink owned by another user (uid {st.st_uid}); tokend follows only "
                "your own links: remove it, or set the path to a file of yours"
            )
        p = Path(os.path.abspath(p.parent / os.readlink(p)))
    else:
        raise SinkError(f"{path}: too many symlinks; set the path to the file itself")
    _check_folder(path, p)
    try:
        st = os.lstat(p)
    except (FileNotFoundError, NotADirectoryError):
        return p
    _check_file(path, p, st)
    return p


def place(path: Path) -> str:
    """The file that writing ``path`` really replaces (symlinks followed), to tell whether two sinks write the same
    one; ``path`` itself when that cannot be told (the write will say why)."""
    try:
        return str(resolve(path))
    except Exception:
        return str(path)


def _check_folder(path: Path, p: Path) -> None:
    folder = p.parent
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        raise SinkError(f"{path}: folder {folder} does not exist; create it or set another path") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SinkError(f"{path}: {folder} is not a folder; set the path to a file in a folder")
    if system.WINDOWS or not st.st_mode & 0o022:
        return
    sticky = bool(st.st_mode & stat.S_ISVTX)
    try:
        ours = os.lstat(p).st_uid == os.getuid()
    except (FileNotFoundError, NotADirectoryError):
        ours = False
    if not (sticky and ours):
        raise SinkError(
            f"{path}: folder {folder} is writable by other users{'' if sticky else ' and not sticky'}, "
            "so another user could swap the file; keep it in a folder only you can write (your home)"
        )


def _check_file(path: Path, p: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "a folder"
            if stat.S_ISDIR(st.st_mode)
            else "not a regular file"
        )
        raise SinkError(f"{path}: {p} is {kind}; tokend only writes and reads back regular files: set the path to one")
    if not system.WINDOWS and st.st_uid != os.getuid():
        raise SinkError(
            f"{path}: {p} belongs to another user (uid {st.st_uid}); tokend only writes and trusts your own files"
        )
    if st.st_nlink > 1:
        raise SinkError(
            f"{path}: {p} has {st.st_nlink} hard links; tokend replaces the file on every write, which "
            "would split them: keep one name (or set the path to a file of its own)"
        )


def rewrite(path: Path, transform: Transform, lock_dir: Path, attempts: int = 5) -> bool:
    """Apply ``transform`` to the file's bytes (None when it does not exist) and store the result.

    ``transform`` returns the new bytes, or None to leave the file as it is. Returns True when the file changed.
    ``lock_dir``: a private folder of tokend's for the lock file. Raises SinkError with the reason and the fix.
    """
    real = resolve(path)
    folder = real.parent
    lock = lock_dir / f"{hashlib.sha256(str(real).encode()).hexdigest()[:16]}.lock"
    try:
        with system.file_lock(str(lock), LOCK_TIMEOUT):
            _remove_leftovers(folder, real.name)
            for _ in range(attempts):
                before, old = _read(path, real)
                new = transform(old)
                if new is None or new == old:
                    return False
                tmp = _write_temp(folder, real.name, new)
                try:
                    placed = _put(path, tmp, real, before)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)  # ours when not placed; after a swap, the file it replaced
                if not placed:
                    continue  # changed under us: redo from the new content
                _fsync_folder(folder)
                return True
            raise SinkError(f"{real}: kept changing while tokend tried to write it; will retry")
    except TimeoutError:
        raise SinkError(
            f"{real}: another tokend has held the write lock for over {LOCK_TIMEOUT:.0f} s; "
            "will retry (see `tokend status` of your other configs)"
        ) from None
    except PermissionError as e:
        raise SinkError(f"{real}: cannot write ({e.strerror}); fix the permissions of {folder}") from None
    except FileNotFoundError:
        raise SinkError(f"{real}: folder {folder} does not exist; create it or set another path") from None
    except OSError as e:
        raise SinkError(f"{real}: cannot write ({e.strerror or e}); check the disk and the folder") from None


def write(path: Path, data: bytes) -> bool:
    """Replace ``path`` with ``data``: the one way tokend writes a file of its own — records, indexes, certificates,
    the config ``init`` writes, service units, client files and their backups. It is ``rewrite`` with a constant
    transform, so the same rules apply (``resolve``: no link of another user's followed, no file of another user's
    or in a folder others can swap it in taken over; a 0600 temporary file with an unpredictable name, fsynced and
    renamed). Missing folders are made 0700. True when the file changed."""
    if not os.path.isdir(path.parent):
        paths.private_dir(path.parent)
    return rewrite(path, lambda _old: data, lock_dir())


def write_private(path: Path, text: str, encoding: str = "utf-8") -> None:
    """``write`` for text: the file gets ``text`` in ``encoding``, mode 0600. The caller makes the folder private
    when the file holds a secret (``paths.private_dir``)."""
    write(path, text.encode(encoding))


def read(path: Path, limit: int | None = None) -> bytes | None:
    """The bytes of ``path`` (at most ``limit``) when it is safely the user's by ``resolve``'s rules — a regular file
    of the user's with one name, reached through the user's own links only, that nobody else could have put in its
    folder — or None when nothing is there. For what tokend reads back and acts on: a backup it restores, the pid it
    signals. SinkError with the reason and the fix otherwise."""
    if not os.path.lexists(path) and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        return None  # not even its folder
    real = resolve(path)
    try:
        return _read(path, real, limit)[1]
    except PermissionError as e:
        raise SinkError(f"{path}: cannot read it ({e.strerror}); it should be yours, mode 0600") from None
    except OSError as e:
        raise SinkError(f"{path}: cannot read it ({e.strerror or e})") from None


def read_back_text(path: Path | None) -> str:
    """The text of ``path`` for a sink's ``read_back``, through ``read``: "" when there is nothing there or ``read``
    refuses it, so a FIFO never hangs a starting daemon and a file someone else planted is never adopted."""
    try:
        data = read(path) if path else None
    except SinkError:
        return ""
    return (data or b"").decode("utf-8", "replace")


def check_writable(path: Path, setting: str) -> None:
    """Raise SinkError (with the fix) unless ``path`` can be rewritten safely: ``resolve`` accepts it, its folder
    is writable, and the file, if there, is readable. ``setting`` names the config key that moves it."""
    try:
        real = resolve(path)
    except SinkError as e:
        raise SinkError(f"{e} ({setting})") from None
    if not os.access(real.parent, os.W_OK):
        raise SinkError(f"{path}: folder {real.parent} is not writable; fix its permissions or set {setting}")
    if real.exists() and not os.access(real, os.R_OK):
        raise SinkError(f"{path}: cannot read it; fix its permissions (it should be yours, mode 0600)")


def _read(path: Path, real: Path, limit: int | None = None) -> tuple[Stamp | None, bytes | None]:
    """The stamp and bytes (at most ``limit``) of ``real``, opened without following a link or blocking on a FIFO
    swapped in since ``resolve`` looked, and checked again once open."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SinkError(f"{path}: {real} became a symlink; tokend will look again") from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        _check_file(path, real, st)
        return (st.st_ino, st.st_mtime_ns, st.st_size), f.read() if limit is None else f.read(limit)


def _put(path: Path, tmp: str, real: Path, before: Stamp | None) -> bool:
    """``tmp`` in ``real``'s place, unless ``real`` is no longer the file we read (``before``): False then, with
    ``real`` as it was (theirs) and ``tmp`` still ours."""
    if _stamp(real) != before:
        return False
    try:
        swapped = before is not None and system.exchange(tmp, str(real))
    except FileNotFoundError:
        return False  # removed meanwhile
    except OSError as e:
        if e.errno not in (errno.EBUSY, errno.EXDEV):
            raise
        swapped = False  # a mount point: _replace says so
    if not swapped:
        _replace(path, tmp, real)
        return True
    if _stamp(Path(tmp)) == before:
        return True
    system.exchange(tmp, str(real))  # someone's save landed between our look and the swap: theirs back in place
    return False


def _stamp(path: Path) -> Stamp | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _replace(path: Path, tmp: str, real: Path) -> None:
    try:
        os.replace(tmp, real)
    except OSError as e:
        if e.errno in (errno.EBUSY, errno.EXDEV):
            raise SinkError(
                f"{path}: {real} is a mount point (a single-file bind mount?); tokend replaces the file "
                "on every write: mount its folder instead, or set the sink's path to a file in a "
                "mounted folder"
            ) from None
        raise


def _write_temp(folder: Path, name: str, data: bytes) -> str:
    # mkstemp: a random name, O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _remove_leftovers(folder: Path, name: str) -> None:
    """Temp files a killed writer of ours left behind. Safe: we hold the file's lock, so none is being written;
    only our own regular files are touched."""
    for leftover in folder.glob(f".{name}.*{_TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            st = os.lstat(leftover)
            if stat.S_ISREG(st.st_mode) and _trusted(st.st_uid) and (system.WINDOWS or st.st_uid == os.getuid()):
                leftover.unlink()


def _fsync_folder(folder: Path) -> None:
    if system.WINDOWS:
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
