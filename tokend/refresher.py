"""Refresher: keeps one identity's token current, on its own thread, following the refresh policy.

One per identity: a thousand targets under one identity cost one token request per refresh. The state shown in
``tokend status`` is derived from what it holds (the token, the last error), never stored on the side.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tokend.errors import IdentityUnavailable, LoginRequired, TokendError
from tokend.identities import Identity
from tokend.refresh import Policy
from tokend.token import Token

log = logging.getLogger("tokend.refresh")


class Refresher:
    def __init__(self, identity: Identity, policy: Policy, clock: Callable[[], float],
                 on_change: Callable[[], None], on_login_required: Callable[[str, str], None] | None = None) -> None:
        self.identity = identity
        self.policy = policy
        self.clock = clock
        self.on_change = on_change
        self.on_login_required = on_login_required
        self.token: Token | None = None
        self.last_error: str | None = None
        self.error_kind: str | None = None  # "login-required" | "unavailable" | "failed"
        self.next_at: float = 0.0
        self.first_done = threading.Event()
        self._failures = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"refresh-{identity.name}", daemon=True)

    # -- control -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def refresh_now(self) -> None:
        """Ask at once (a new sign-in was noticed, or a person asked)."""
        self.next_at = 0.0
        self._wake.set()

    def sign_in_changed(self) -> None:
        """The sign-in behind this identity changed (tokend login, az login / logout / account set): rebuild the
        credential and ask at once. A sign-out found then removes the held token from the sinks."""
        self.identity.close()
        self.refresh_now()

    # -- what status shows -----------------------------------------------------------------------------------------
    def valid_token(self) -> Token | None:
        token = self.token
        return token if token is not None and token.valid_at(self.clock()) else None

    @property
    def state(self) -> str:
        if self.error_kind == "login-required":
            return "login-required"
        if self.valid_token() is not None:
            return "retrying" if self.error_kind else "ok"
        return self.error_kind or "starting"

    # -- the loop ----------------------------------------------------------------------------------------------
    def step(self) -> None:
        """One attempt: fetch, then decide when the next one is due. Public so --once and tests drive it directly."""
        now = self.clock()
        try:
            token = self.identity.fetch()
        except TokendError as e:
            self._failures += 1
            was = self.error_kind
            self.error_kind = ("login-required" if isinstance(e, LoginRequired)
                               else "unavailable" if isinstance(e, IdentityUnavailable) else "failed")
            self.last_error = str(e)
            if isinstance(e, LoginRequired) and e.signed_out and self.token is not None:
                log.warning("identity %s: signed out; removing its token from the sinks", self.identity.name)
                self.token = None  # a token never outlives the sign-in it came from
                self.on_change()
            if self.error_kind == "login-required" and was != "login-required" and self.on_login_required:
                self.on_login_required(self.identity.name, self.last_error)
            held = self.valid_token()
            remaining = held.expires_on - now if held is not None else None
            self.next_at = now + self.policy.backoff(self._failures, remaining,
                                                     urgent=not isinstance(e, LoginRequired))
            log.warning("identity %s: %s (%s; next try in %.0f s)", self.identity.name, self.last_error,
                        self.error_kind, self.next_at - now)
            return
        finally:
            self.first_done.set()
        self._failures = 0
        self.error_kind = self.last_error = None
        if self.token is not None and token.value == self.token.value:
            # The credential handed back its cached token: a new one is not available yet. Not an error.
            self.next_at = self.policy.same_token_at(now, self.token)
            log.debug("identity %s: same token still cached; asking again in %.0f s", self.identity.name,
                      self.next_at - now)
            return
        self.token = token
        self.next_at = self.policy.refresh_at(token)
        log.info("identity %s: new token for %s, expires in %.0f s, next refresh in %.0f s", self.identity.name,
                 token.principal or "?", token.expires_on - now, self.next_at - now)
        self.on_change()

    def _run(self) -> None:
        while not self._stopping:
            now = self.clock()
            expired = self.token is not None and not self.token.valid_at(now)
            if expired or now >= self.next_at:
                # An expired token (a laptop waking, a clock step) is replaced before it is removed, so the sinks
                # go straight from the old token to the new one when the credential answers.
                self.step()
                if self.token is not None and not self.token.valid_at(self.clock()):
                    log.warning("identity %s: token expired before a new one came; removing it from the sinks",
                                self.identity.name)
                    self.token = None
                    self.on_change()
                continue
            deadline = self.next_at if self.token is None else min(self.next_at, self.token.expires_on)
            self._wake.wait(self.policy.sleep_for(now, deadline))
            self._wake.clear()
        self.identity.close()
