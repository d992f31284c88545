"""What differs by OS, on this one: the boot clock, file locks, the peer of a Unix socket, the stop-signal catch."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from tokend import system

pytestmark = pytest.mark.portable


def test_the_boot_clock_never_goes_back() -> None:
    a = system.boot_time()
    b = system.boot_time()
    assert 0 <= a <= b


def test_a_lock_is_held_once(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    first = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    second = os.open(path, os.O_RDWR)
    try:
        assert system.try_lock(first)
        assert not system.try_lock(second)  # another open file description: as another process would
    finally:
        os.close(first)
        os.close(second)


def test_file_lock_waits_then_gives_up(tmp_path: Path) -> None:
    path = str(tmp_path / "lock")
    with system.file_lock(path, timeout=1.0), pytest.raises(TimeoutError), system.file_lock(path, timeout=0.1):
        pass
    with system.file_lock(path, timeout=0.1):
        pass  # released on the way out
    assert Path(path).stat().st_mode & 0o777 == 0o600 or sys.platform == "win32"


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX") or sys.platform == "win32", reason="Unix sockets")
def test_the_peer_of_a_unix_socket_is_this_user() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert system.peer_uid(a) == os.getuid()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals to oneself")
def test_a_stop_signal_only_sets_the_event() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop = system.catch_stop_signals()
        assert not stop.is_set()
        signal.raise_signal(signal.SIGTERM)
        assert stop.wait(5)
    finally:
        for s, h in before.items():
            signal.signal(s, h)
