"""Rewrite a file atomically under a lock, keeping every byte the caller does not change.

The new content goes to a temporary file in the same folder (mode 0600), is fsynced, and renamed over the old
file; a symlink is written through to its target. Writers of the same folder are serialised with a lock on the
folder itself (no lock file litter). If someone else changed the file between our read and our rename (a person
in an editor), we start over from their version, so their edit is kept.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tokend.errors import SinkError

Transform = Callable[[bytes | None], bytes | None]
_TMP_SUFFIX = ".tokend.tmp"


def rewrite(path: Path, transform: Transform, attempts: int = 5) -> bool:
    """Apply ``transform`` to the file's bytes (None when it does not exist) and store the result.

    ``transform`` returns the new bytes, or None to leave the file as it is. Returns True when the file changed.
    Raises SinkError with the reason and the path when the folder cannot be written.
    """
    real = Path(os.path.realpath(path))
    folder = real.parent
    try:
        with _folder_lock(folder):
            _remove_leftovers(folder, real.name)
            for _ in range(attempts):
                before, old = _read(real)
                new = transform(old)
                if new is None or new == old:
                    return False
                tmp = _write_temp(folder, real.name, new)
                try:
                    if _stamp(real) != before:
                        continue  # changed under us: redo from the new content
                    os.replace(tmp, real)
                    tmp = None
                finally:
                    if tmp is not None:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(tmp)
                _fsync_folder(folder)
                return True
            raise SinkError(f"{real}: kept changing while tokend tried to write it; will retry")
    except PermissionError as e:
        raise SinkError(f"{real}: cannot write ({e.strerror}); fix the permissions of {folder}") from None
    except FileNotFoundError:
        raise SinkError(f"{real}: folder {folder} does not exist; create it or set another path") from None
    except OSError as e:
        raise SinkError(f"{real}: cannot write ({e.strerror or e}); check the disk and the folder") from None


def write_private(path: Path, text: str) -> None:
    """Replace a file tokend owns outright (records, indexes, its config) with ``text``: mode 0600 in a 0700 folder,
    through a temporary file and a rename, so a reader never sees half of it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def check_writable(path: Path, setting: str) -> None:
    """Raise SinkError (with the fix) unless ``path`` can be rewritten: its folder exists and is writable, and the
    file, if there, is readable. ``setting`` names the config key that moves it."""
    folder = Path(os.path.realpath(path)).parent
    if folder.exists() and not folder.is_dir():
        raise SinkError(f"{path}: {folder} is not a folder; set {setting} to a file in a folder")
    if not folder.is_dir():
        raise SinkError(f"{path}: folder {folder} does not exist; create it or set {setting}")
    if not os.access(folder, os.W_OK):
        raise SinkError(f"{path}: folder {folder} is not writable; fix its permissions or set {setting}")
    if path.exists() and not os.access(path, os.R_OK):
        raise SinkError(f"{path}: cannot read it; fix its permissions (it should be yours, mode 0600)")


def _read(path: Path) -> tuple[tuple[int, int, int] | None, bytes | None]:
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            return (st.st_ino, st.st_mtime_ns, st.st_size), f.read()
    except FileNotFoundError:
        return None, None


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _write_temp(folder: Path, name: str, data: bytes) -> str:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=_TMP_SUFFIX)  # mkstemp creates it 0600
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
    """Temp files a killed writer left behind. Safe: we hold the folder lock, so none is being written."""
    for leftover in folder.glob(f".{name}.*{_TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def _fsync_folder(folder: Path) -> None:
    if sys.platform == "win32":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    if sys.platform == "win32":  # pragma: no cover - Windows: a lock file, locked with msvcrt
        import msvcrt

        with open(folder / ".tokend.lock", "a+b") as f:
            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
