"""SinkWorker: keeps one sink in step with the daemon's current tokens, on its own thread.

Every sync writes the newest entries, so a retry never writes a stale token; a failing sink backs off and retries
without holding up the others, and logs its reason once per change of reason. What it last wrote is kept per
target, so status tells each target's truth (a target added by a reload is "pending", not "failed 19 s ago").

A worker follows its own place: started with a ``Watches`` (the daemon's file watcher), it watches the files its sink
names (``Sink.watched``: a pgpass a dotfile manager replaces) and writes again when someone else changed them; it
stops watching when it stops. So a sink moved by a reload is watched at its new place without anyone above wiring it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tokend.clock import Clock
from tokend.errors import TokendError
from tokend.refresh import Policy
from tokend.sinks import Entry, Sink
from tokend.token import Token

log = logging.getLogger("tokend.sink")


@dataclass(frozen=True)
class Written:
    expires_on: float  # of the token written for the target
    at: float  # wall clock


class Watches(Protocol):
    """Calls back when files change (``watch.Watcher``)."""

    def watch(self, files: Iterable[Path], callback: Callable[[], None]) -> Any: ...

    def unwatch(self, w: Any) -> None: ...


class SinkWorker:
    def __init__(self, sink: Sink, entries: Callable[[], Sequence[Entry]], policy: Policy, clock: Clock) -> None:
        self.sink = sink
        self.entries = entries
        self.policy = policy
        self.clock = clock
        self.last_error: str | None = None
        self.written: dict[str, Written] = {}  # target name → what was last written for it
        self.writes: Counter[str] = Counter()  # sync attempts by result: ok, failed
        self._failures = 0
        self._dirty = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"sink-{sink.kind}", daemon=True)
        self._watches: Watches | None = None
        self._watch: Any = None

    def start(self, watches: Watches | None = None) -> None:
        """Start writing; with ``watches``, also write again whenever someone else changes the sink's files."""
        self._thread.start()
        files = self.sink.watched()
        if watches is not None and files:
            self._watches, self._watch = watches, watches.watch(files, self.poke)

    def poke(self) -> None:
        """The tokens changed, or the place was changed by someone else: write soon."""
        self._dirty.set()

    def stop(self) -> None:
        if self._watches is not None:
            self._watches.unwatch(self._watch)
            self._watches = None
        self._stopping = True
        self._dirty.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def sync(self) -> bool:
        """Write the current entries now. Returns False (and records why) when the sink failed."""
        entries = list(self.entries())
        try:
            self.sink.sync(entries)
        except TokendError as e:
            return self._failed(str(e))
        except OSError as e:
            return self._failed(f"{self.sink.location()}: {e.strerror or e}")
        except Exception as e:  # a bug or an odd backend: report and retry, never kill the worker
            log.debug("sink %s failed", self.sink.kind, exc_info=True)
            return self._failed(f"{type(e).__name__} while writing {self.sink.location()}")
        self.writes["ok"] += 1
        if self.last_error is not None:
            log.info("sink %s: writing again (%s)", self.sink.kind, self.sink.location())
        self._failures = 0
        self.last_error = None
        now, written = self.clock.now(), {}
        for entry in entries:
            w = self.written.get(entry.target.name)
            same = w is not None and w.expires_on == entry.token.expires_on
            written[entry.target.name] = w if same and w is not None else Written(entry.token.expires_on, now)
        self.written = written
        log.debug("sink %s: %d entries in %s", self.sink.kind, len(entries), self.sink.location())
        return True

    def _failed(self, reason: str) -> bool:
        self._failures += 1
        self.writes["failed"] += 1
        if reason != self.last_error:  # once per change of reason; the retries stay quiet
            log.warning("sink %s: %s", self.sink.kind, reason)
        self.last_error = reason
        return False

    def status_of(self, target: str, token: Token | None, unread: str | None = None) -> dict[str, Any]:
        """This sink's truth about one target: ok (holds the current token), pending (will), empty (no token to
        hold), failed (the last write failed), ignored (written, but clients will not read it: ``unread``, the
        reason and fix from ``Sink.unread``)."""
        w = self.written.get(target)
        error = self.last_error
        if self.last_error:
            state = "failed"
        elif unread is not None:
            state, error = "ignored", unread
        elif token is None:
            state = "empty" if w is None else "pending"
        else:
            state = "ok" if w is not None and w.expires_on == token.expires_on else "pending"
        return {
            "state": state,
            "location": self.sink.location(),
            "last_write": int(w.at) if w else None,
            "last_error": error,
        }

    def _run(self) -> None:
        self._dirty.set()  # first sync at start: removes entries of targets no longer configured
        while not self._stopping:
            self._dirty.wait()  # pokes wake it; nothing to do in between
            if self._stopping:
                return
            self._dirty.clear()
            if not self.sync() and not self._stopping:
                delay = self.policy.backoff(self._failures, urgent=False)
                if not self._dirty.wait(delay):
                    self._dirty.set()  # retry with the entries current then
