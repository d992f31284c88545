"""The error kinds: every one is a TokendError carrying the exit code of the contract (0 ok, 1 runtime, 2 usage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokend import errors
from tokend.errors import (
    ConfigError,
    DaemonNotRunning,
    IdentityUnavailable,
    LoginRequired,
    SinkError,
    SinkUnavailable,
    TokendError,
    TokenFailed,
    UsageError,
)

pytestmark = pytest.mark.portable  # runs on Linux, macOS and Windows (.github/workflows/ci.yml)


def test_the_exit_codes_are_the_contracts() -> None:
    assert (errors.EXIT_OK, errors.EXIT_FAILURE, errors.EXIT_USAGE) == (0, 1, 2)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (TokendError("x"), 1),
        (UsageError("x"), 2),
        (ConfigError("c.toml", "k", "x"), 2),
        (IdentityUnavailable("x"), 1),
        (LoginRequired("x"), 1),
        (TokenFailed("x"), 1),
        (SinkError("x"), 1),
        (SinkUnavailable("x"), 1),
        (DaemonNotRunning("x"), 1),
    ],
)
def test_every_error_is_a_tokend_error_with_its_exit_code(error: TokendError, code: int) -> None:
    assert isinstance(error, TokendError)
    assert error.exit_code == code


def test_an_unavailable_sink_is_a_sink_error() -> None:
    # callers that catch SinkError to report and retry a sink catch this one too
    assert issubclass(SinkUnavailable, SinkError)


@pytest.mark.parametrize(
    ("path", "key", "problem", "text"),
    [
        (Path("/c/config.toml"), "targets.a.port", "is 0", "/c/config.toml: targets.a.port: is 0"),
        ("/c/config.toml", "", "not valid TOML (line 3)", "/c/config.toml: not valid TOML (line 3)"),
    ],
)
def test_a_config_error_reads_file_key_problem_on_one_line(path: object, key: str, problem: str, text: str) -> None:
    e = ConfigError(path, key, problem)
    assert str(e) == text and "\n" not in str(e)
    assert (e.path, e.key, e.problem) == (path, key, problem)


def test_login_required_says_whether_the_sign_in_itself_ended() -> None:
    assert LoginRequired("sign in again").signed_out is False
    ended = LoginRequired("signed out with az logout", signed_out=True)
    assert ended.signed_out is True and str(ended) == "signed out with az logout"
