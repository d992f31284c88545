"""Redaction: anything shaped like a token or a secret leaves text bound for logs, before any handler sees it."""

from __future__ import annotations

import io
import logging

import pytest

from tokend.emulator.directory import Directory
from tokend.redact import RedactingFilter, redact

pytestmark = pytest.mark.portable  # runs on Linux, macOS and Windows (.github/workflows/ci.yml)


@pytest.fixture(scope="module")
def token() -> str:
    """A real RS256 access token, shaped like Entra's for ossrdbms (the emulator's directory mints it)."""
    d = Directory()
    value, _exp = d.mint("https://ossrdbms-aad.database.windows.net", user=d.add_user("alice@contoso.example"))
    return value


def test_a_real_access_token_is_redacted_wherever_it_sits(token: str) -> None:
    for text in (token, f"password={token}", f"'{token}'", f"a:b:c:d:{token}\n", f"Bearer {token}."):
        out = redact(text)
        assert token not in out and "[redacted]" in out
        assert "eyJ" not in out


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("eyJhbGciOiJSUzI1NiJ9.eyJvaWQiOiIxIn0.c2ln", True),  # a JWT, however short
        ("eyJhbGciOiJub25lIn0.eyJvaWQiOiIxIn0.", True),  # unsigned: an empty third part
        ("0.AAAA" + "x" * 80, True),  # a refresh token or secret: 80 base64url characters in a row
        ("A" * 79, False),  # one short of that
        ("connected to contoso.postgres.database.azure.com:5432 as DBA Group", False),
        ("550e8400-e29b-41d4-a716-446655440000", False),  # object ids stay readable
        ("/home/alice/.config/tokend/config.toml", False),
    ],
)
def test_token_shaped_runs_go_and_ordinary_text_stays(text: str, redacted: bool) -> None:
    assert (redact(text) != text) is redacted
    if not redacted:
        assert redact(text) == text


@pytest.fixture
def captured() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tokend.test_redact")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_the_filter_scrubs_a_token_passed_as_an_argument(
    captured: tuple[logging.Logger, io.StringIO], token: str
) -> None:
    logger, stream = captured
    logger.info("got %s for %s", token, "DBA Group")
    assert stream.getvalue() == "INFO got [redacted] for DBA Group\n"


def test_the_filter_scrubs_a_token_in_an_exceptions_text(
    captured: tuple[logging.Logger, io.StringIO], token: str
) -> None:
    logger, stream = captured
    try:
        raise ValueError(f"server refused {token}")
    except ValueError:
        logger.exception("write failed")
    out = stream.getvalue()
    assert token not in out
    assert "write failed" in out and "ValueError: server refused [redacted]" in out
    assert "Traceback" in out  # the traceback is kept, only the token goes
