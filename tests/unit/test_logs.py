"""Logging in-process: JSON lines, every log file 0600, and the aggregated lines a client can repeat at will."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest

from tokend import logs

from support.waits import wait_for

pytestmark = pytest.mark.portable


class Caught(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def logger(name: str) -> tuple[logging.Logger, Caught]:
    log = logging.getLogger(f"tokend.test.{name}")
    log.setLevel(logging.INFO)
    log.propagate = False
    caught = Caught()
    log.handlers[:] = [caught]
    return log, caught


def test_a_json_line_has_time_level_logger_and_message() -> None:
    record = logging.LogRecord("tokend.x", logging.WARNING, __file__, 1, "sink %s failed", ("pgpass",), None)
    record.created = 1_800_000_000.5
    line = json.loads(logs.JsonFormatter().format(record))
    assert line == {
        "time": "2027-01-15T08:00:00.500+00:00",
        "level": "warning",
        "logger": "tokend.x",
        "message": "sink pgpass failed",
    }


def test_the_first_line_of_a_key_is_logged_and_repeats_are_counted_into_one() -> None:
    log, caught = logger("aggregated")
    quiet = logs.Aggregated(log, interval=0.2)
    for _ in range(50):
        quiet.warning(("refused", 1001), "refused uid %d", 1001)
    quiet.warning(("refused", 1002), "refused uid %d", 1002)
    assert caught.lines == ["refused uid 1001", "refused uid 1002"]
    wait_for(lambda: "refused uid 1001; 49 more like it in the last 0 s" in caught.lines, what="the summary line")
    assert len(caught.lines) == 3  # the key with no repeats said nothing more


def test_keys_past_the_cap_share_one_window() -> None:
    log, caught = logger("capped")
    quiet = logs.Aggregated(log, interval=30, max_keys=2)
    for uid in range(10):
        quiet.warning(uid, "uid %d", uid)
    assert caught.lines == ["uid 0", "uid 1", "uid 2"]  # uid 2 opened the shared "(other)" window; 3-9 counted


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_every_log_file_is_private_after_a_rollover_too(tmp_path: Path) -> None:
    path = tmp_path / "tokend.log"
    old = os.umask(0o022)
    try:
        h = logs.PrivateRotatingFileHandler(path, maxBytes=100, backupCount=2, encoding="utf-8")
        h.setFormatter(logging.Formatter("%(message)s"))
        for i in range(20):
            h.emit(logging.LogRecord("t", logging.INFO, __file__, 1, "line %d " + "x" * 40, (i,), None))
        h.close()
    finally:
        os.umask(old)
    files = sorted(tmp_path.glob("tokend.log*"))
    assert len(files) == 3 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
