"""Refresher: keeps one identity's token current, on its own thread, following the refresh policy.

One per identity: a thousand targets under one identity cost one token request per refresh. The state shown in
``tokend status`` is derived from what it holds (the token, the last error), never stored on the side.
Deadlines are measured on the boot clock and a token's life on both clocks (``Token.remaining``); no sleep is
longer than the policy's ``max_sleep``, so a resumed laptop or a stepped clock is noticed within seconds.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from tokend.clock import Clock
from tokend.config import IdentityConfig
from tokend.errors import IdentityUnavailable, LoginRequired, TokendError, TokenFailed
from tokend.refresh import Policy
from tokend.token import Token

log = logging.getLogger("tokend.refresh")

# A sign-in that needs a person (revoked, expired, MFA) is not helped by asking every minute: after the first retry
# the wait doubles from the policy's cap up to this, and only the episode's first failure is a WARNING. `tokend
# login`, `az login` and the like wake the refresher at once (sign_in_changed), so nobody waits this long.
LOGIN_RETRY_MAX = 30 * 60.0  # seconds


class TokenSource(Protocol):
    """What a refresher needs from an identity; ``identities.Identity`` is the real one."""

    config: IdentityConfig
    cache: str | None  # "encrypted" | "unencrypted" for sign-in caches tokend keeps, else None

    @property
    def name(self) -> str: ...

    def fetch(self, fresh: bool = False) -> Token:
        """A token for the identity's resource; ``fresh``: not the one the credential has cached."""

    def close(self) -> None: ...


class Refresher:
    def __init__(
        self,
        identity: TokenSource,
        policy: Policy,
        clock: Clock,
        on_change: Callable[[], None],
        on_login_required: Callable[[str, str], None] | None = None,
    ) -> None:
        self.identity = identity
        self.policy = policy
        self.clock = clock
        self.on_change = on_change
        self.on_login_required = on_login_required
        self.token: Token | None = None
        self.last_error: str | None = None
        self.error_kind: str | None = None  # "login-required" | "unavailable" | "failed"
        self.first_done = threading.Event()
        self._by_life = False  # the next attempt is due `lead` before the token's end, not at _retry_at
        self._retry_at = 0.0  # boot clock: when to try again after a same-token answer or a failure
        self._failures = 0
        self._login_failures = 0  # login-required answers in a row: the episode's length
        self._spent: str | None = None  # the last token judged expired: never taken back from a stale cache
        self._adopted: str | None = None  # the value of a token taken over from a previous daemon (``adopt``)
        self.requests: Counter[str] = Counter()  # answers by kind: new, same, failed, unavailable, login-required
        self._wake = threading.Event()
        self._attempted = threading.Condition()  # notified after every attempt, whatever its outcome
        self._attempts = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"refresh-{identity.name}", daemon=True)

    # -- control -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if not self._thread.is_alive():
            self.identity.close()  # a running loop closes it on its way out

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def refresh_now(self) -> None:
        """Ask at once (a new sign-in was noticed, or a person asked)."""
        self._by_life, self._retry_at = False, 0.0
        self._wake.set()

    def sign_in_changed(self) -> None:
        """The sign-in behind this identity changed (tokend login, az login / logout / account set): rebuild the
        credential and ask at once. A sign-out found then removes the held token from the sinks."""
        self.identity.close()
        self.refresh_now()

    def adopt(self, token: Token) -> bool:
        """Hold ``token``, which a previous daemon left in the sinks (``tokend.adopt`` chose it), as if it were our
        own until our own arrives: the first answer replaces it, a sign-out removes it, and it leaves the sinks at
        its end. Only before the first answer (a held token of our own is never replaced); True when taken."""
        if self.token is not None or self.first_done.is_set():
            return False
        self.token, self._adopted = token, token.value
        return True

    @property
    def inherited(self) -> bool:
        """The token held is one a previous daemon left (none of our own has arrived yet)."""
        token = self.token
        return token is not None and token.value == self._adopted

    # -- what status shows -----------------------------------------------------------------------------------------
    def valid_token(self) -> Token | None:
        token = self.token
        return token if token is not None and token.valid(self.clock) else None

    def fresh_token(self, wait: float) -> Token | None:
        """The valid token, but not one about to be replaced: when the held token is inside its refresh lead (so the
        attempt for its successor is due or running), wait up to ``wait`` seconds for that attempt and answer with
        what is held then. A client that keeps the answer for a while (pgAdmin's PasswordExecExpiration) then gets the
        successor instead of the last seconds of its predecessor. Waits only for the attempt the token's own life
        schedules: not while in error (retries back off) nor after a "same token" answer (the credential cannot
        give a new one yet: with a margin over 5 minutes that lasts minutes). Blocks: never call it on the
        daemon's event loop."""
        token = self.valid_token()
        if token is None or self.error_kind or not self._by_life:
            return token
        if token.remaining(self.clock) >= self.policy.lead(token):
            return token
        with self._attempted:
            seen = self._attempts
            self._attempted.wait_for(lambda: self._attempts != seen, timeout=wait)
        return self.valid_token()

    @property
    def state(self) -> str:
        if self.error_kind == "login-required":
            return "login-required"
        if self.valid_token() is not None:
            return "retrying" if self.error_kind else "ok"
        return self.error_kind or "starting"

    def due_in(self) -> float:
        """Seconds until the next attempt (≤ 0: now)."""
        token = self.token
        if self._by_life and token is not None:
            return token.remaining(self.clock) - self.policy.lead(token)
        return self._retry_at - self.clock.boot()

    # -- the loop ----------------------------------------------------------------------------------------------
    def step(self) -> None:
        """One attempt: fetch, then decide when the next one is due. Public so --once and tests drive it directly."""
        try:
            self._attempt()
        finally:
            with self._attempted:
                self._attempts += 1
                self._attempted.notify_all()

    def _attempt(self) -> None:
        try:
            token = self.identity.fetch()
            held = self.token
            if held is not None and token.value == held.value and not held.valid(self.clock):
                # The credential's cache still believes in a token our boot clock says has run out: the wall
                # clock was set back. Ask past the cache.
                log.warning(
                    "identity %s: the credential handed back a token that has expired (was the clock set "
                    "back?); asking for a new one",
                    self.identity.name,
                )
                token = self.identity.fetch(fresh=True)
            elif (
                held is not None
                and token.value == held.value
                and self.policy.ask_past_cache(held, held.remaining(self.clock))
            ):
                log.warning(
                    "identity %s: the credential keeps handing back its cached token, %.0f s before it "
                    "expires (its own refresh is failing); asking past its cache",
                    self.identity.name,
                    held.remaining(self.clock),
                )
                token = self.identity.fetch(fresh=True)
            if token.value == self._spent:
                raise TokenFailed(
                    "the credential keeps handing back a token that has expired (was the clock set "
                    "back?); tokend asks again shortly"
                )
        except TokendError as e:
            self._failed(e)
            return
        finally:
            self.first_done.set()
        self._failures = self._login_failures = 0
        self.error_kind = self.last_error = None
        if self.inherited:
            # Our first answer: the adopted token goes, even when the credential hands back the very same one
            # (it is ours now, with its arrival on the boot clock).
            self.token = None
        self._adopted = None
        self.requests["same" if self.token is not None and token.value == self.token.value else "new"] += 1
        if self.token is not None and token.value == self.token.value:
            # The credential handed back its cached token: a new one is not available yet. Not an error.
            delay = self.policy.same_token_delay(self.token)
            self._by_life, self._retry_at = False, self.clock.boot() + delay
            log.debug("identity %s: same token still cached; asking again in %.0f s", self.identity.name, delay)
            return
        self.token = token
        self._by_life = True
        log.info(
            "identity %s: new token for %s, expires in %.0f s, next refresh in %.0f s",
            self.identity.name,
            token.principal or "?",
            token.remaining(self.clock),
            self.due_in(),
        )
        self.on_change()

    def _failed(self, e: TokendError) -> None:
        self._failures += 1
        was = self.error_kind
        self.error_kind = (
            "login-required"
            if isinstance(e, LoginRequired)
            else "unavailable"
            if isinstance(e, IdentityUnavailable)
            else "failed"
        )
        self.last_error = str(e)
        self.requests[self.error_kind] += 1
        if isinstance(e, LoginRequired) and e.signed_out and self.token is not None:
            log.warning("identity %s: signed out; removing its token from the sinks", self.identity.name)
            self.token = None  # a token never outlives the sign-in it came from
            self.on_change()
        if self.error_kind == "login-required" and was != "login-required" and self.on_login_required:
            self.on_login_required(self.identity.name, self.last_error)
        held = self.valid_token()
        remaining = held.remaining(self.clock) if held is not None else None
        delay = self.policy.backoff(self._failures, remaining, urgent=not isinstance(e, LoginRequired))
        self._login_failures = self._login_failures + 1 if self.error_kind == "login-required" else 0
        if self._login_failures >= 2:
            delay = max(delay, min(LOGIN_RETRY_MAX, self.policy.cap * 2 ** (self._login_failures - 2)))
        self._by_life, self._retry_at = False, self.clock.boot() + delay
        level = logging.INFO if self._login_failures >= 2 and was == "login-required" else logging.WARNING
        log.log(
            level,
            "identity %s: %s (%s; next try in %.0f s)",
            self.identity.name,
            self.last_error,
            self.error_kind,
            delay,
        )

    def _run(self) -> None:
        while not self._stopping:
            token = self.token
            expired = token is not None and not token.valid(self.clock)
            if expired or self.due_in() <= 0:
                # An expired token (a laptop waking, a clock step) is replaced before it is removed, so the sinks
                # go straight from the old token to the new one when the credential answers.
                self.step()
                if self.token is not None and not self.token.valid(self.clock):
                    log.warning(
                        "identity %s: token expired before a new one came; removing it from the sinks",
                        self.identity.name,
                    )
                    self._spent = self.token.value
                    self.token = None
                    self.on_change()
                continue
            wait = self.due_in()
            if self.token is not None:
                wait = min(wait, self.token.remaining(self.clock))
            self._wake.wait(self.policy.sleep_for(wait))
            self._wake.clear()
        self.identity.close()
