"""Watch a few files for changes (watchdog), and call back once per burst of changes.

Editors save by writing a new file and renaming it over the old one, so the folder is watched, not the file, and
creations, moves onto the name and deletions all count. Bursts are debounced: the callback runs once the files
have been quiet for ``debounce`` seconds.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

log = logging.getLogger("tokend.watch")
_WRITES = {"created", "modified", "moved", "deleted", "closed"}
# Only changes are subscribed to: a folder someone merely reads (opens, closes unwritten) never wakes us, and cannot
# flood the kernel's event queue (libfaketime, `az` and shells read files in these folders constantly).
_FILTER: list[type[FileSystemEvent]] = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileDeletedEvent,
                                        FileClosedEvent]


class FileWatcher(FileSystemEventHandler):
    def __init__(self, files: Iterable[Path], callback: Callable[[], None], debounce: float = 0.25) -> None:
        self.files = {os.path.abspath(f) for f in files}
        self.callback = callback
        self.debounce = debounce
        self._changed = threading.Event()
        self._stopping = False
        self._observer = Observer()
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)

    def start(self) -> None:
        for folder in sorted({os.path.dirname(f) for f in self.files}):
            if os.path.isdir(folder):
                self._observer.schedule(self, folder, recursive=False, event_filter=_FILTER)
            else:
                log.warning("not watching %s: the folder does not exist", folder)
        self._observer.start()
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._changed.set()
        self._observer.stop()
        self._observer.join(5)

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = {os.path.abspath(os.fsdecode(p)) for p in (event.src_path, getattr(event, "dest_path", "")) if p}
        if paths & self.files and event.event_type in _WRITES:
            self._changed.set()

    def _run(self) -> None:
        while not self._stopping:
            self._changed.wait()
            if self._stopping:
                return
            self._changed.clear()
            while self._changed.wait(self.debounce) and not self._stopping:  # quiet period not reached yet
                self._changed.clear()
            try:
                self.callback()
            except Exception:
                log.exception("change handler failed")
