"""SinkWorker: keeps one sink in step with the daemon's current tokens, on its own thread.

Every sync writes the newest entries, so a retry never writes a stale token; a failing sink backs off and retries
without holding up the others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from tokend.errors import TokendError
from tokend.refresh import Policy
from tokend.sinks import Entry, Sink

log = logging.getLogger("tokend.sink")


class SinkWorker:
    def __init__(self, sink: Sink, entries: Callable[[], Sequence[Entry]], policy: Policy,
                 clock: Callable[[], float]) -> None:
        self.sink = sink
        self.entries = entries
        self.policy = policy
        self.clock = clock
        self.last_error: str | None = None
        self.last_write: float | None = None
        self.written: dict[str, float] = {}  # target name → expires_on of the token written for it
        self._failures = 0
        self._dirty = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"sink-{sink.kind}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """The tokens changed: write them soon."""
        self._dirty.set()

    def stop(self) -> None:
        self._stopping = True
        self._dirty.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def sync(self) -> bool:
        """Write the current entries now. Returns False (and records why) when the sink failed."""
        entries = list(self.entries())
        try:
            self.sink.sync(entries)
        except TokendError as e:
            self._failures += 1
            self.last_error = str(e)
            log.warning("sink %s: %s", self.sink.kind, e)
            return False
        except OSError as e:
            self._failures += 1
            self.last_error = f"{self.sink.location()}: {e.strerror or e}"
            log.warning("sink %s: %s", self.sink.kind, self.last_error)
            return False
        except Exception as e:  # a bug or an odd backend: report and retry, never kill the worker
            self._failures += 1
            self.last_error = f"{type(e).__name__} while writing {self.sink.location()}"
            log.exception("sink %s failed", self.sink.kind)
            return False
        self._failures = 0
        self.last_error = None
        self.last_write = self.clock()
        self.written = {e.target.name: e.token.expires_on for e in entries}
        log.debug("sink %s: wrote %d entries to %s", self.sink.kind, len(entries), self.sink.location())
        return True

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
