"""Removes anything shaped like a token from text bound for logs and error messages (defence in depth)."""

from __future__ import annotations

import logging
import re

# A JWT (three base64url parts), or any long run of base64url characters (refresh tokens, secrets).
_SECRETISH = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*|[A-Za-z0-9_-]{80,}")


def redact(text: str) -> str:
    return _SECRETISH.sub("[redacted]", text)


class RedactingFilter(logging.Filter):
    """Formats the record's message once and scrubs it, so no handler ever sees a token."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
