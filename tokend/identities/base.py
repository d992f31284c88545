"""The one small interface every identity source has: ``fetch() -> Token``, failures sorted into three kinds.

- IdentityUnavailable: cannot be tried here (tool missing, no endpoint). Retried with backoff.
- LoginRequired: a person must sign in again. A state, not a crash.
- TokenFailed: tried and refused, or the service did not answer. Retried with backoff.
Error texts are one line, bounded, and scrubbed of anything shaped like a token.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import ClientAuthenticationError
from azure.identity import AuthenticationRequiredError, CredentialUnavailableError

from tokend.clock import SYSTEM, Clock
from tokend.clouds import scope_for
from tokend.config import IdentityConfig
from tokend.errors import IdentityUnavailable, LoginRequired, TokendError, TokenFailed
from tokend.redact import redact
from tokend.token import Token

CredentialFactory = Callable[[IdentityConfig], Any]
LoginHint = Callable[[IdentityConfig], str]

# Phrases in azure-identity / az / Entra errors that mean a person has to sign in (again).
_LOGIN_HINTS = re.compile(
    r"az login|invalid_grant|interaction_required|AADSTS(50076|50078|50079|50173|700082|70043)", re.IGNORECASE
)


class Identity:
    """One sign-in: builds its credential once and turns its answers into Tokens or sorted errors."""

    def __init__(
        self,
        config: IdentityConfig,
        factory: CredentialFactory,
        clock: Clock = SYSTEM,
        login_hint: LoginHint | None = None,
        persistent_cache: bool = False,
    ):
        self.config = config
        self._factory = factory
        self._login_hint = login_hint
        self._clock = clock
        self._persistent = persistent_cache
        self._credential: Any = None
        self._lock = threading.Lock()
        self.cache: str | None = None  # "encrypted" | "unencrypted" for sign-in caches tokend keeps

    @property
    def name(self) -> str:
        return self.config.name

    def fetch(self, fresh: bool = False) -> Token:
        """Ask the credential for a token for the identity's resource. Blocks for at most the credential's timeouts.

        ``fresh``: not the token the credential has cached. In-memory caches go with a rebuilt credential; a
        persistent sign-in cache is passed a claims challenge, which makes MSAL redeem its refresh token instead.
        """
        with self._lock:
            try:
                if fresh and self._credential is not None and hasattr(self._credential, "close"):
                    self._credential.close()
                if fresh or self._credential is None:
                    self._credential = self._factory(self.config)
                scope = scope_for(self.config.resource)
                if fresh and self._persistent:
                    info = self._credential.get_token_info(scope, options={"claims": _fresh_claims(self._clock)})
                else:
                    info = self._credential.get_token_info(scope)
            except TokendError:
                raise
            except AuthenticationRequiredError as e:
                raise self._login_required(one_line(e)) from None
            except CredentialUnavailableError as e:
                text = one_line(e)
                if _LOGIN_HINTS.search(text):  # e.g. az: "Please run 'az login'": the sign-in is gone
                    raise self._login_required(text, signed_out=True) from None
                raise IdentityUnavailable(text) from None
            except ClientAuthenticationError as e:
                text = one_line(e)
                if _LOGIN_HINTS.search(text):
                    raise self._login_required(text) from None
                raise TokenFailed(text) from None
            except (ValueError, OSError) as e:
                raise TokenFailed(one_line(e)) from None
            except Exception as e:  # azure-core transport errors and the like: report, retry, never crash
                raise TokenFailed(f"{type(e).__name__}: {one_line(e)}") from None
        return Token.from_jwt(info.token, info.expires_on, self._clock.now(), info.refresh_on, self._clock.boot())

    def _login_required(self, text: str, signed_out: bool = False) -> LoginRequired:
        hint = self._login_hint(self.config) if self._login_hint else ""
        return LoginRequired(f"{text} — fix: {hint}" if hint and hint not in text else text, signed_out)

    def close(self) -> None:
        with self._lock:
            if self._credential is not None and hasattr(self._credential, "close"):
                self._credential.close()
            self._credential = None


def _fresh_claims(clock: Clock) -> str:
    """A continuous-access-evaluation style claims challenge: a token issued no earlier than now."""
    return json.dumps({"access_token": {"nbf": {"essential": True, "value": str(int(clock.now()))}}})


def one_line(e: BaseException, limit: int = 300) -> str:
    """A bounded one-line reason: the first meaningful line of the error, with any token-like text removed."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = redact(" ".join(lines[:3]) if lines else type(e).__name__)
    return text if len(text) <= limit else text[: limit - 1] + "…"
