"""Everything that differs by operating system, in one place: which OS this is, a clock that counts suspend, file
locks, swapping two files in one step, and who is on the other end of a local socket.

The rest of tokend asks this module (``system.WINDOWS``, ``system.boot_time()``…), so each platform's behaviour can
be read, and reviewed, here. The one exception: code that uses a name only some platforms' stdlib has (AF_UNIX,
os.getuid, resource) guards it with a literal ``sys.platform`` check in place, the form mypy narrows on, so
``mypy --platform win32`` and ``--platform darwin`` type each branch as that OS would (tests/run.sh).
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # not typing's: importing typing would cost `tokend token`'s hand-off more than its answer
if TYPE_CHECKING:  # the rest is imported where used
    import socket
    import threading
    from collections.abc import Iterator
    from contextlib import AbstractContextManager

WINDOWS = sys.platform == "win32"
MACOS = sys.platform == "darwin"
LINUX = sys.platform.startswith("linux")


def boot_time() -> float:
    """Seconds on a clock that never steps and keeps counting while the machine sleeps.

    Linux: CLOCK_BOOTTIME (``time.monotonic`` stops during suspend there). macOS: CLOCK_MONOTONIC, which counts
    sleep (``time.monotonic`` uses mach_absolute_time, which does not). Windows: ``time.monotonic`` (the
    performance counter, which counts sleep on current Windows).
    """
    if sys.platform == "linux":
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    if sys.platform == "darwin":
        return time.clock_gettime(time.CLOCK_MONOTONIC)
    return time.monotonic()


_RENAME_EXCHANGE = 2  # renameat2's flag (linux/fs.h)
_AT_FDCWD = -100


def exchange(a: str, b: str) -> bool:
    """Swap the files named ``a`` and ``b`` in one step (Linux: renameat2 with RENAME_EXCHANGE); both must exist.
    False, with nothing done, where the OS, its C library or the filesystem cannot; OSError for the rest (ENOENT
    when one has gone)."""
    if sys.platform != "linux":  # macOS' renamex_np(RENAME_SWAP) would do it there; not written: untestable here
        return False
    import ctypes  # only sink writes need it: not `tokend token`'s hand-off, which imports this module

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc 2.28+, musl 1.2.4+
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    import errno  # see ctypes above

    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a filesystem (or kernel) without the exchange
        return False
    raise OSError(code, os.strerror(code), a, None, b)


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on the open file ``fd`` without waiting; False when another process holds it.
    The OS drops the lock when the process dies, even by kill -9."""
    if sys.platform == "win32":  # pragma: no cover - exercised by the Windows CI job
        import msvcrt  # Windows' own module: exists there alone

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl  # start-up time: the hand-off (``tokend token``) imports this module and never locks

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def file_lock(path: str, timeout: float, poll: float = 0.02) -> AbstractContextManager[None]:
    """Hold an exclusive lock on the lock file ``path`` (created 0600); TimeoutError after ``timeout`` seconds.

    The lock file must sit in a folder only this user can write (tokend's runtime folder), so no other user can
    hold it and stall the writer.
    """
    from contextlib import contextmanager  # start-up time, as above

    return contextmanager(_file_lock)(path, timeout, poll)


def _file_lock(path: str, timeout: float, poll: float) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        deadline = time.monotonic() + timeout
        while not try_lock(fd):
            if time.monotonic() > deadline:
                raise TimeoutError(path)
            time.sleep(poll)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def peer_uid(sock: socket.socket) -> int | None:
    """The user id of the process at the other end of a Unix socket, or None where the OS cannot tell.

    Linux: SO_PEERCRED. macOS: LOCAL_PEERCRED (struct xucred: version, uid, …).
    """
    import socket  # start-up time: the hand-off imports this module; only the daemon asks who is connected
    import struct

    if hasattr(socket, "SO_PEERCRED"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", creds)[1])
    local_peercred = getattr(socket, "LOCAL_PEERCRED", None)
    if MACOS and local_peercred is not None:  # pragma: no cover - macOS
        creds = sock.getsockopt(0, local_peercred, struct.calcsize("2I"))  # SOL_LOCAL = 0
        return int(struct.unpack("2I", creds[:8])[1])
    return None


def catch_stop_signals() -> threading.Event:
    """From this moment SIGTERM and SIGINT (and Windows' Ctrl-Break) only set the returned event: a daemon asked
    to stop while it still imports or waits for its first tokens ends cleanly (exit 0) instead of dying mid-way."""
    import signal  # start-up time: the hand-off imports this module; only `tokend run` catches signals
    import threading

    stop = threading.Event()
    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda *_: stop.set())
    return stop
