"""The sink worker in-process: what status says of each target, failures recorded once and retried with the
newest entries, and the worker following its own files (it watches them while it runs, and lets go when it
stops)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tokend.clock import Clock
from tokend.config import Target
from tokend.errors import SinkError
from tokend.refresh import Policy
from tokend.sinks import Entry, Sink
from tokend.sinks.pgpass import PgpassSink
from tokend.sinkworker import SinkWorker
from tokend.token import Token

from support.waits import wait_for

pytestmark = pytest.mark.portable

NOW = 1_800_000_000.0
CLOCK = Clock(now=lambda: NOW, boot=lambda: 100.0)
T = Target("prod", "h.example", 5432, "*", "DBA Group", "me", ("pgpass",))


class Place(Sink):
    kind = "place"

    def __init__(self, options: Mapping[str, Any] | None = None, files: list[Path] | None = None) -> None:
        super().__init__(options or {}, "owner")
        self.held: list[str] = []
        self.fail: str | None = None
        self.files = files or []

    def location(self) -> str:
        return "/place"

    def check(self) -> None:
        pass

    def watched(self) -> list[Path]:
        return self.files

    def sync(self, entries: Sequence[Entry]) -> None:
        if self.fail:
            raise SinkError(self.fail)
        self.held = [e.token.value for e in entries]


def token(value: str, expires_on: float = NOW + 3600) -> Token:
    return Token(value, expires_on, NOW, received=100.0)


def worker(sink: Place, entries: list[Entry]) -> SinkWorker:
    return SinkWorker(sink, lambda: list(entries), Policy(), CLOCK)


def test_status_tells_empty_pending_ok_and_failed() -> None:
    sink, entries = Place(), list[Entry]()
    w = worker(sink, entries)
    assert w.status_of("prod", None)["state"] == "empty"
    t = token("tok-1")
    assert w.status_of("prod", t)["state"] == "pending"
    entries.append(Entry(T, t))
    assert w.sync() and sink.held == ["tok-1"]
    assert w.status_of("prod", t) == {"state": "ok", "location": "/place", "last_write": int(NOW), "last_error": None}
    newer = token("tok-2", NOW + 7200)
    assert w.status_of("prod", newer)["state"] == "pending"  # holds an older token than the current one
    sink.fail = "/place: permission denied"
    assert not w.sync()
    assert w.status_of("prod", t) == {**w.status_of("prod", t), "state": "failed", "last_error": sink.fail}
    assert w.writes == {"ok": 1, "failed": 1}


def test_a_failure_that_passes_writes_the_newest_entries() -> None:
    sink, entries = Place(), [Entry(T, token("tok-1"))]
    w = worker(sink, entries)
    sink.fail = "busy"
    assert not w.sync() and w.last_error == "busy"
    entries[0] = Entry(T, token("tok-2"))
    sink.fail = None
    assert w.sync() and sink.held == ["tok-2"] and w.last_error is None


def test_an_odd_error_is_reported_without_killing_the_worker() -> None:
    class Odd(Place):
        def sync(self, entries: Sequence[Entry]) -> None:
            raise KeyError("secret-token-value")

    w = worker(Odd(), [])
    assert not w.sync() and w.last_error == "KeyError while writing /place"  # no exception text: it may hold a token


class Watches:
    def __init__(self) -> None:
        self.watching: dict[int, tuple[list[Path], Callable[[], None]]] = {}

    def watch(self, files: Iterable[Path], callback: Callable[[], None]) -> int:
        handle = len(self.watching) + 1
        self.watching[handle] = (list(files), callback)
        return handle

    def unwatch(self, w: Any) -> None:
        del self.watching[w]


def test_a_running_worker_watches_its_files_writes_again_when_they_change_and_lets_go_when_it_stops() -> None:
    files = [Path("/home/alice/.pgpass")]
    sink, entries = Place(files=files), [Entry(T, token("tok-1"))]
    w = worker(sink, entries)
    watches = Watches()
    w.start(watches)
    try:
        wait_for(lambda: sink.held == ["tok-1"], what="the first write")
        [(watched, callback)] = watches.watching.values()
        assert watched == files
        sink.held = []  # someone replaced the file
        callback()
        wait_for(lambda: sink.held == ["tok-1"], what="the write after the change")
    finally:
        w.stop()
        w.join(5)
    assert watches.watching == {}


def test_a_sink_with_no_files_is_not_watched() -> None:
    w = worker(Place(), [])
    watches = Watches()
    w.start(watches)
    w.stop()
    w.join(5)
    assert watches.watching == {}


def test_a_place_clients_will_not_read_is_ignored_not_ok() -> None:
    sink, entries = Place(), [Entry(T, token("tok-1"))]
    w = worker(sink, entries)
    assert w.sync()
    why = "/place is 0644: libpq ignores a pgpass that others can read; chmod 600 /place"
    assert w.status_of("prod", token("tok-1"), why) == {
        "state": "ignored",
        "location": "/place",
        "last_write": int(NOW),
        "last_error": why,
    }
    sink.fail = "/place: permission denied"
    assert not w.sync()
    assert w.status_of("prod", token("tok-1"), why)["state"] == "failed"  # a failed write says more


@pytest.mark.skipif(sys.platform == "win32", reason="libpq checks no mode on Windows")
def test_a_pgpass_others_can_read_says_libpq_will_ignore_it(tmp_path: Path) -> None:
    path = tmp_path / "pgpass"
    sink = PgpassSink({"path": str(path)}, "owner")
    assert sink.unread() is None  # no file yet: nothing known against it
    sink.sync([Entry(T, token("tok-1"))])
    assert sink.unread() is None  # written 0600
    path.chmod(0o644)
    assert sink.unread() == f"{path} is 0644: libpq ignores a pgpass that others can read; chmod 600 {path}"
