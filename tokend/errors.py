"""The errors tokend reports: each is one line a person can act on (what, where, how to fix).

Exit codes are part of the contract: 0 ok, 1 runtime failure, 2 usage or config error.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class TokendError(Exception):
    """A failure that ends a command with one line on stderr and ``exit_code``."""

    exit_code = EXIT_FAILURE


class UsageError(TokendError):
    exit_code = EXIT_USAGE


class ConfigError(TokendError):
    """The config file is wrong. The message names the file, the key and the fix."""

    exit_code = EXIT_USAGE

    def __init__(self, path: object, key: str, problem: str) -> None:
        where = f"{path}: {key}" if key else f"{path}"
        super().__init__(f"{where}: {problem}")
        self.path, self.key, self.problem = path, key, problem


class IdentityUnavailable(TokendError):
    """The identity cannot be tried here: not signed in, tool missing. Retried; not a crash."""


class LoginRequired(TokendError):
    """A person must sign in again (expired refresh token, MFA, consent, signed out).

    ``signed_out``: the sign-in itself has ended (``az logout``, ``tokend logout``), so tokens from it must leave the
    sinks now, not at their expiry.
    """

    def __init__(self, message: str, signed_out: bool = False) -> None:
        super().__init__(message)
        self.signed_out = signed_out


class TokenFailed(TokendError):
    """The identity was tried and the token service said no or did not answer."""


class SinkError(TokendError):
    """A sink could not write. The message says why and how to fix it."""


class SinkUnavailable(SinkError):
    """The place is not usable right now (no keychain in this session, a locked keychain). Not fatal at start: the
    sink reports it and retries, the others carry on."""


class DaemonNotRunning(TokendError):
    """No daemon answers on the IPC endpoint for this config."""
