"""Logging: where lines go (stderr, a private rotating file, not both under a journal), text or JSON, every line
scrubbed of tokens, and lines a client can repeat at will aggregated to one per key and interval."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokend import logs
from tokend.redact import RedactingFilter

from support.waits import wait_for

TOKEN = "eyJ0eXAiOiJKV1QifQ.eyJvaWQiOiIxIn0.c2lnbmF0dXJl"


@pytest.fixture
def root_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """The root logger as ``setup`` leaves it, put back as it was (pytest's own handlers included) afterwards."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("TOKEND_LOG_STDERR", raising=False)
    root = logging.getLogger()
    names = ("tokend", "azure", "msal")
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level for n in names}
    yield root
    for h in root.handlers:
        if h not in saved[0]:
            h.close()
    root.handlers[:], root.level = saved[0], saved[1]
    for n, level in saved[2].items():
        logging.getLogger(n).setLevel(level)


def test_by_default_one_scrubbing_handler_writes_text_to_stderr(root_logging: logging.Logger) -> None:
    logs.setup(debug=False)
    (h,) = root_logging.handlers
    assert isinstance(h, logging.StreamHandler) and h.stream is sys.stderr
    assert any(isinstance(f, RedactingFilter) for f in h.filters)
    assert not isinstance(h.formatter, logs.JsonFormatter)


@pytest.mark.parametrize(
    ("debug", "quiet", "root", "tokend", "azure"),
    [
        (False, False, logging.WARNING, logging.INFO, logging.NOTSET),
        (False, True, logging.ERROR, logging.ERROR, logging.NOTSET),  # one-shot commands: errors only
        (True, False, logging.WARNING, logging.DEBUG, logging.DEBUG),
        (True, True, logging.WARNING, logging.DEBUG, logging.DEBUG),  # --debug wins over quiet
    ],
)
def test_levels(root_logging: logging.Logger, debug: bool, quiet: bool, root: int, tokend: int, azure: int) -> None:
    logging.getLogger("azure").setLevel(logging.NOTSET)
    logs.setup(debug=debug, quiet=quiet)
    assert root_logging.level == root
    assert logging.getLogger("tokend").level == tokend
    assert logging.getLogger("azure").level == azure


def test_tokend_log_stderr_0_turns_stderr_off(root_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEND_LOG_STDERR", "0")
    logs.setup(debug=False)
    assert root_logging.handlers == []


def test_the_daemons_log_file_and_its_folder_are_private(root_logging: logging.Logger, tmp_path: Path) -> None:
    path = tmp_path / "log" / "tokend.log"
    logs.setup(debug=False, log_file=path)
    files = [h for h in root_logging.handlers if isinstance(h, logs.PrivateRotatingFileHandler)]
    assert len(files) == 1 and len(root_logging.handlers) == 2
    logging.getLogger("tokend.test").info("hello %s", TOKEN)
    files[0].flush()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "INFO tokend.test: hello [redacted]" in text and TOKEN not in text


def test_under_the_journal_there_is_no_log_file(
    root_logging: logging.Logger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    logs.setup(debug=False, log_file=tmp_path / "log" / "tokend.log")
    assert [type(h) for h in root_logging.handlers] == [logging.StreamHandler]
    assert not (tmp_path / "log").exists()


def test_json_lines_carry_utc_time_level_logger_and_a_scrubbed_message(
    root_logging: logging.Logger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEND_LOG_STDERR", "0")
    path = tmp_path / "log" / "tokend.log"
    logs.setup(debug=False, log_file=path, fmt="json")
    log = logging.getLogger("tokend.test")
    log.warning("refresh failed for %s", "DBA Group")
    try:
        raise RuntimeError(f"bad answer {TOKEN}")
    except RuntimeError:
        log.exception("sink failed")
    for h in root_logging.handlers:
        h.flush()
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first.keys() == {"time", "level", "logger", "message"}
    assert (first["level"], first["logger"], first["message"]) == (
        "warning",
        "tokend.test",
        "refresh failed for DBA Group",
    )
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert second["level"] == "error" and second["message"] == "sink failed"
    assert "RuntimeError: bad answer [redacted]" in second["exception"] and TOKEN not in path.read_text()


def test_every_file_of_a_rotating_log_is_0600_under_a_loose_umask(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    path = folder / "tokend.log"
    old = os.umask(0o022)
    try:
        h = logs.PrivateRotatingFileHandler(path, maxBytes=200, backupCount=3, encoding="utf-8")
        log = logging.Logger("rotating")
        log.addHandler(h)
        for n in range(40):
            log.warning("line %02d %s", n, "x" * 40)
        h.close()
    finally:
        os.umask(old)
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["tokend.log", "tokend.log.1", "tokend.log.2", "tokend.log.3"]
    assert {f: stat.S_IMODE((folder / f).stat().st_mode) for f in files} == dict.fromkeys(files, 0o600)


def test_a_log_file_left_with_a_loose_mode_is_made_0600(tmp_path: Path) -> None:
    path = tmp_path / "tokend.log"
    path.write_text("old line\n")
    path.chmod(0o644)
    logs.PrivateRotatingFileHandler(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "old line\n"


def test_a_symlink_in_place_of_the_log_file_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / "tokend.log").symlink_to(victim)
    with pytest.raises(OSError):
        logs.PrivateRotatingFileHandler(tmp_path / "tokend.log")
    assert victim.read_text() == "keep\n"


class Lines(logging.Handler):
    """The lines a logger emitted, formatted."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def lines() -> tuple[logging.Logger, Lines]:
    logger = logging.Logger("aggregated")
    handler = Lines()
    logger.addHandler(handler)
    return logger, handler


def test_the_first_line_goes_at_once_and_the_rest_as_one_count(
    lines: tuple[logging.Logger, Lines],
) -> None:
    logger, out = lines
    agg = logs.Aggregated(logger, interval=0.2)
    agg.warning(1001, "refused a peer of uid %d", 1001)
    assert out.lines == ["refused a peer of uid 1001"]
    for _ in range(4):
        agg.warning(1001, "refused a peer of uid %d (again)", 1001)
    agg.info("other-key", "closed for a limit")
    assert out.lines == ["refused a peer of uid 1001", "closed for a limit"]
    wait_for(lambda: len(out.lines) == 3, timeout=5, what="the interval's summary")
    assert out.lines[2] == "refused a peer of uid 1001 (again); 4 more like it in the last 0 s"
    # a quiet interval ends the key: the next line goes out at once again
    wait_for(lambda: 1001 not in agg._windows, timeout=5, what="the key to end")
    agg.warning(1001, "refused a peer of uid %d", 1001)
    assert out.lines[-1] == "refused a peer of uid 1001" and len(out.lines) == 4


def test_past_max_keys_new_keys_share_one(lines: tuple[logging.Logger, Lines]) -> None:
    logger, out = lines
    agg = logs.Aggregated(logger, interval=60.0, max_keys=2)
    for uid in range(1000, 1010):
        agg.warning(uid, "refused uid %d", uid)
    assert out.lines == ["refused uid 1000", "refused uid 1001", "refused uid 1002"]  # the third key is "(other)"


def test_on_an_event_loop_the_interval_ends_on_the_loop(lines: tuple[logging.Logger, Lines]) -> None:
    logger, out = lines
    agg = logs.Aggregated(logger, interval=0.05)

    async def flood() -> None:
        agg.warning("accept", "accept failed: %s", "EMFILE")
        agg.warning("accept", "accept failed: %s", "EMFILE")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while len(out.lines) < 2 and loop.time() < deadline:
            await asyncio.sleep(0.01)

    asyncio.run(flood())
    assert out.lines == ["accept failed: EMFILE", "accept failed: EMFILE; 1 more like it in the last 0 s"]


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
