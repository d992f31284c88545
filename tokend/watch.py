"""Watch files for changes made by others (watchdog), and call back once per burst of changes.

Editors save by writing a new file and renaming it over the old one, so the folder is watched, not the file, and
creations, moves onto the name, deletions, writes and mode changes all count — reads do not (a folder someone merely
reads, as libfaketime, `az` and shells do all the time, never wakes the daemon or floods the kernel's event queue).
One watchdog observer serves every watch; bursts are debounced on the daemon's loop: a callback runs (on the loop's
thread pool) once its files have been quiet for ``debounce`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from tokend.ioloop import IOLoop

log = logging.getLogger("tokend.watch")
_CHANGES: list[type[FileSystemEvent]] = [
    FileAttribEvent,  # a chmod: a pgpass made 0644 is ignored by libpq, and its sink must say so
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    FileClosedEvent,
]


class Watch:
    """One set of files and the callback for their changes."""

    def __init__(self, files: Iterable[Path], callback: Callable[[], None], debounce: float) -> None:
        self.files = {os.path.abspath(f) for f in files}
        self.callback = callback
        self.debounce = debounce
        self._timer: asyncio.TimerHandle | None = None


class Watcher(FileSystemEventHandler):
    def __init__(self, io: IOLoop) -> None:
        self.io = io
        self._watches: list[Watch] = []
        self._folders: set[str] = set()
        self._observer = Observer()
        self._started = False

    def start(self) -> None:
        self._observer.start()
        self._started = True

    def stop(self) -> None:
        if self._started:
            self._observer.stop()
            self._observer.join(5)

    def watch(self, files: Iterable[Path], callback: Callable[[], None], debounce: float = 0.25) -> Watch:
        w = Watch(files, callback, debounce)
        for folder in sorted({os.path.dirname(f) for f in w.files} - self._folders):
            if os.path.isdir(folder):
                self._observer.schedule(self, folder, recursive=False, event_filter=_CHANGES)
                self._folders.add(folder)
            else:
                log.warning("not watching %s: the folder does not exist", folder)
        self._watches = [*self._watches, w]
        return w

    def unwatch(self, w: Watch) -> None:
        self._watches = [x for x in self._watches if x is not w]

    def on_any_event(self, event: FileSystemEvent) -> None:
        changed = {os.path.abspath(os.fsdecode(p)) for p in (event.src_path, getattr(event, "dest_path", "")) if p}
        for w in self._watches:
            if changed & w.files:
                self.io.call_soon(self._bounce, w)

    def _bounce(self, w: Watch) -> None:
        """On the loop: (re)start the quiet-period timer of ``w``."""
        if w._timer is not None:
            w._timer.cancel()
        w._timer = self.io.loop.call_later(w.debounce, self._fire, w)

    def _fire(self, w: Watch) -> None:
        w._timer = None
        if w in self._watches:
            self.io.loop.run_in_executor(None, self._call, w)

    @staticmethod
    def _call(w: Watch) -> None:
        try:
            w.callback()
        except Exception:
            log.exception("change handler failed")
