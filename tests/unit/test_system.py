"""What differs by operating system: the boot clock, file locks, the peer of a Unix socket, stop signals."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokend import system

pytestmark = pytest.mark.portable  # runs on Linux, macOS and Windows (.github/workflows/ci.yml)


def test_the_boot_clock_never_steps_back_and_counts_at_least_what_monotonic_counts() -> None:
    start_boot, start_mono = system.boot_time(), time.monotonic()
    readings = [system.boot_time() for _ in range(1000)]
    assert readings == sorted(readings) and readings[0] >= start_boot
    if system.LINUX:
        # CLOCK_BOOTTIME: CLOCK_MONOTONIC plus time suspended, so over a test (no suspend) both advance alike
        assert abs((system.boot_time() - start_boot) - (time.monotonic() - start_mono)) < 1.0


def test_exactly_one_platform_flag_is_set_on_a_known_platform() -> None:
    assert [system.WINDOWS, system.MACOS, system.LINUX].count(True) == 1


@pytest.fixture
def lock_file(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """Two open file descriptions of one file: flock treats them as two holders, as it would two processes."""
    path = tmp_path / "x.lock"
    path.touch()
    a, b = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    yield a, b
    for fd in (a, b):
        with contextlib.suppress(OSError):  # the test closed it already
            os.close(fd)


def test_try_lock_is_exclusive_and_released_when_the_holder_closes(lock_file: tuple[int, int]) -> None:
    a, b = lock_file
    assert system.try_lock(a)
    assert not system.try_lock(b)
    os.close(a)
    assert system.try_lock(b)


def test_file_lock_makes_a_private_lock_file_and_times_out_when_it_is_held(tmp_path: Path) -> None:
    path = str(tmp_path / "w.lock")
    with system.file_lock(path, timeout=1.0):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 or system.WINDOWS  # no POSIX modes there
        began = time.monotonic()
        with pytest.raises(TimeoutError), system.file_lock(path, timeout=0.2, poll=0.01):
            pass
        assert 0.2 <= time.monotonic() - began < 5.0
    with system.file_lock(path, timeout=0.2):  # released on leaving: free again at once
        pass


def test_file_lock_waits_for_a_holder_that_lets_go_in_time(tmp_path: Path) -> None:
    path = str(tmp_path / "w.lock")
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with system.file_lock(path, timeout=1.0):
            held.set()
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(5)
    threading.Timer(0.1, release.set).start()
    with system.file_lock(path, timeout=5.0, poll=0.01):
        assert release.is_set()
    t.join(5)


def test_file_lock_refuses_a_symlink_in_place_of_the_lock_file(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / "w.lock").symlink_to(target)
    with pytest.raises(OSError), system.file_lock(str(tmp_path / "w.lock"), timeout=0.1):
        pass
    assert target.read_text() == "keep"


@pytest.mark.skipif(not system.LINUX, reason="renameat2 is Linux's; elsewhere exchange says it cannot")
def test_exchange_swaps_two_files_in_one_step_and_says_when_one_is_gone(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("A")
    b.write_text("B")
    inode_a = a.stat().st_ino
    assert system.exchange(str(a), str(b)) is True
    assert (a.read_text(), b.read_text(), b.stat().st_ino) == ("B", "A", inode_a)
    with pytest.raises(FileNotFoundError):
        system.exchange(str(a), str(tmp_path / "gone"))
    assert a.read_text() == "B"


@pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets and uids")
def test_peer_uid_of_a_unix_socket_is_this_processs_user() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert system.peer_uid(a) == os.getuid()
        assert system.peer_uid(b) == os.getuid()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals to oneself (os.kill ends a Windows process)")
def test_stop_signals_only_set_the_event() -> None:
    saved = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGTERM", "SIGINT")}
    try:
        stop = system.catch_stop_signals()
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)  # the handler ran and this process is still here
        stop.clear()
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(5)
    finally:
        for name, handler in saved.items():
            signal.signal(getattr(signal, name), handler)
