"""Logging. Every record is scrubbed of token-shaped text before any handler sees it.

- stderr, unless TOKEND_LOG_STDERR=0 (the launchd and Task Scheduler definitions set it: their stderr is a file
  that nothing would rotate);
- for the daemon, also a rotating file (1 MB × 5) in the platformdirs log folder, one per config
  (``paths.log_file``), unless systemd's journal already collects stderr (JOURNAL_STREAM is set). Every file of it
  is 0600, the ones opened after a rollover too (``PrivateRotatingFileHandler``).

The proxy's audit log (``AuditLog``) is a second rotating file beside it, one JSON line per proxy session
(``tokend.proxy.audit``), 0600 like the log, and written whether or not a journal collects stderr: it is the
member's own record of their sessions.

Log lines are a resource another local user can spend: a line per refused connection let a flood rotate the whole
history away in seconds. What a client can repeat at will (refused peers, connections closed for a limit, accept
errors) goes through ``Aggregated``: the first line at once, then at most one line per key and interval with the
count of what was held back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import logging.handlers
import os
import sys
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokend import paths
from tokend.redact import RedactingFilter

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
FORMAT_ENV = "TOKEND_LOG_FORMAT"  # text (default) or json: one JSON object per line, for cluster log collectors


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message (already scrubbed of tokens)."""

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds")
        out = {"time": when, "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        if record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


def setup(debug: bool, quiet: bool = False, log_file: Path | None = None, fmt: str = "text") -> None:
    """``quiet``: only errors (one-shot commands report their own summary line). ``log_file``: the daemon's
    rotating log file (``paths.log_file``), unless the journal collects stderr. ``fmt``: text or json."""
    handlers: list[logging.Handler] = []
    if os.environ.get("TOKEND_LOG_STDERR") != "0" and sys.stderr is not None:  # pythonw has no stderr
        handlers.append(logging.StreamHandler(sys.stderr))
    if log_file is not None and not os.environ.get("JOURNAL_STREAM"):
        paths.private_dir(log_file.parent)
        handlers.append(PrivateRotatingFileHandler(log_file, maxBytes=1_000_000, backupCount=5, encoding="utf-8"))
    for h in handlers:
        h.addFilter(RedactingFilter())
        h.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(logging.ERROR if quiet and not debug else logging.WARNING)
    logging.getLogger("tokend").setLevel(logging.DEBUG if debug else logging.ERROR if quiet else logging.INFO)
    if debug:
        logging.getLogger("azure").setLevel(logging.DEBUG)
        logging.getLogger("msal").setLevel(logging.INFO)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose every file is 0600. The stock handler opens the file again after each rollover with the
    process's umask (0644 under the usual 022), and the renames then carry that mode down the backups."""

    def _open(self) -> Any:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.baseFilename, flags, 0o600)
        if hasattr(os, "fchmod"):  # a file left by an older tokend with a looser mode
            os.fchmod(fd, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


AUDIT_MAX_BYTES = 5_000_000  # per audit file: some 12 000 sessions (a line is about 400 bytes)
AUDIT_BACKUPS = 5  # rotated audit files kept besides the current one


def audit_file(config_path: Path) -> Path:
    """The proxy's audit log: beside the daemon's log, ``tokend.audit.jsonl`` (``tokend-<id>.audit.jsonl``)."""
    log_file = paths.log_file(config_path)
    return log_file.with_name(log_file.stem + ".audit.jsonl")


class AuditLog:
    """One JSON line per call to ``write``, appended to a size-rotated set of 0600 files, each line scrubbed of
    token-shaped text first (as every log line is). Thread-safe (the handler's lock)."""

    def __init__(self, path: Path, max_bytes: int = AUDIT_MAX_BYTES, backups: int = AUDIT_BACKUPS) -> None:
        paths.private_dir(path.parent)
        self.path = path
        self.handler = PrivateRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self.handler.addFilter(RedactingFilter())
        self.handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, line: str) -> None:
        self.handler.handle(logging.LogRecord("tokend.audit", logging.INFO, "", 0, line, None, None))

    def close(self) -> None:
        self.handler.close()


@dataclass
class _Window:
    level: int
    msg: str
    args: tuple[object, ...]
    held: int = 0  # lines like it held back in this window


class Aggregated:
    """Log lines that a client can repeat at will, at most one per key per ``interval`` seconds.

    The first line of a key is logged at once. Later ones within the interval are counted; when the interval ends, one
    line (the latest text) says how many there were, and a new interval starts; a quiet interval ends the key. At most
    ``max_keys`` keys are tracked (keys are peer uids and fixed words; past that they share one).
    Thread-safe. The end of an interval is scheduled on the running event loop when there is one (every user today
    logs from the daemon's loop), else on a timer thread."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0, max_keys: int = 1024) -> None:
        self.logger, self.interval, self.max_keys = logger, interval, max_keys
        self._windows: dict[Hashable, _Window] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: Hashable, msg: str, *args: object) -> None:
        with self._lock:
            if key not in self._windows and len(self._windows) >= self.max_keys:
                key = "(other)"
            window = self._windows.get(key)
            if window is not None:
                window.level, window.msg, window.args = level, msg, args
                window.held += 1
                return
            self._windows[key] = _Window(level, msg, args)
        self.logger.log(level, msg, *args)
        self._later(lambda: self._close(key))

    def warning(self, key: Hashable, msg: str, *args: object) -> None:
        self.log(logging.WARNING, key, msg, *args)

    def info(self, key: Hashable, msg: str, *args: object) -> None:
        self.log(logging.INFO, key, msg, *args)

    def _close(self, key: Hashable) -> None:
        with self._lock:
            window = self._windows.get(key)
            if window is None:
                return
            if not window.held:
                del self._windows[key]
                return
            self._windows[key] = _Window(window.level, window.msg, window.args)
        self.logger.log(
            window.level,
            window.msg + "; %d more like it in the last %.0f s",
            *window.args,
            window.held,
            self.interval,
        )
        self._later(lambda: self._close(key))

    def _later(self, fn: Callable[[], None]) -> None:
        try:
            asyncio.get_running_loop().call_later(self.interval, fn)
        except RuntimeError:  # not on a loop
            timer = threading.Timer(self.interval, fn)
            timer.daemon = True
            timer.start()
