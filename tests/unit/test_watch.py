"""The file watcher in-process, with the real watchdog on a temp folder: a burst of changes calls back once, an
editor's rename onto the name counts, reads and other files do not, and an unwatched set is forgotten."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokend.ioloop import IOLoop
from tokend.watch import Watcher

from support.waits import wait_for

pytestmark = pytest.mark.portable

QUIET = 0.1  # seconds of quiet before the callback (the test's debounce)


class Counted:
    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.n += 1


@pytest.fixture
def watcher() -> Iterator[Watcher]:
    io = IOLoop().start()
    w = Watcher(io)
    try:
        yield w
    finally:
        w.stop()
        io.stop()


def test_a_burst_of_writes_calls_back_once(watcher: Watcher, tmp_path: Path) -> None:
    f = tmp_path / "config.toml"
    f.write_text("a")
    calls = Counted()
    watcher.watch([f], calls, debounce=QUIET)
    watcher.start()
    for i in range(5):
        f.write_text(f"v{i}")
    wait_for(lambda: calls.n == 1, what="one callback")
    f.write_text("later")
    wait_for(lambda: calls.n == 2, what="a second callback for a later change")


def test_a_rename_onto_the_name_counts_and_other_files_and_reads_do_not(watcher: Watcher, tmp_path: Path) -> None:
    f, other = tmp_path / "pgpass", tmp_path / "other"
    f.write_text("a")
    calls = Counted()
    watcher.watch([f], calls, debounce=QUIET)
    watcher.start()
    other.write_text("x")
    f.read_text()
    new = tmp_path / ".pgpass.new"
    new.write_text("b")
    os.replace(new, f)  # how editors and dotfile managers save
    wait_for(lambda: calls.n >= 1, what="the rename's callback")
    settled = calls.n
    other.write_text("y")
    f.read_text()
    assert not wait_for_change(calls, settled)


def test_an_unwatched_set_is_not_called(watcher: Watcher, tmp_path: Path) -> None:
    f = tmp_path / "pgpass"
    f.write_text("a")
    calls = Counted()
    w = watcher.watch([f], calls, debounce=QUIET)
    watcher.start()
    watcher.unwatch(w)
    f.write_text("b")
    assert not wait_for_change(calls, 0)


def wait_for_change(calls: Counted, was: int, seconds: float = 1.0) -> bool:
    """Whether the count moves from ``was`` within ``seconds`` (a bounded wait for something that must not come)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if calls.n != was:
            return True
        threading.Event().wait(0.05)
    return calls.n != was
