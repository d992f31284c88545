"""Logging. Every record is scrubbed of token-shaped text before any handler sees it.

- stderr, unless TOKEND_LOG_STDERR=0 (the launchd and Task Scheduler definitions set it: their stderr is a file
  that nothing would rotate);
- for the daemon, also a rotating file (1 MB × 5, mode 0600) in the platformdirs log folder, one per config
  (``paths.log_file``), unless systemd's journal already collects stderr (JOURNAL_STREAM is set).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

from tokend import paths
from tokend.redact import RedactingFilter

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
FORMAT_ENV = "TOKEND_LOG_FORMAT"  # text (default) or json: one JSON object per line, for cluster log collectors


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message (already scrubbed of tokens)."""

    def format(self, record: logging.LogRecord) -> str:
        import datetime as dt
        import json

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
        old = os.umask(0o077)
        try:
            handlers.append(
                logging.handlers.RotatingFileHandler(log_file, maxBytes=1_000_000, backupCount=5, encoding="utf-8")
            )
        finally:
            os.umask(old)
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
