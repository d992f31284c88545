"""The refresh policy, pure: when to ask for the next token and how long to back off. Touches nothing.

Every answer is a duration in seconds; the refresher measures them on the boot clock (``Clock.boot``), which never
steps and counts suspend, and judges a token's remaining life on both clocks (``Token.remaining``), so neither a
wall clock stepped back nor a laptop that slept makes tokend late.
The rules, in order:
1. The credential said when (``refresh_on``, given for long-lived tokens such as managed identity): ask then.
2. Short tokens (lifetime under twice the margin): ask at half the lifetime.
3. Otherwise ask ``margin`` before expiry. MSAL, azure-identity and az hand back their cached token until it has under
   5 minutes left, so a margin above 5 minutes only means a few "same token" answers first.
4. An answer with the token we already hold is not an error: ask again shortly, jittered, never in a tight loop.
   But once half the lead has passed with the same answer, the credential's own refresh is failing quietly
   (azure-identity hands back its cached token while that is still valid, whatever its refresh met: an expired
   federated token file it rereads only every 10 minutes, a network error): ask past its cache, which rebuilds it.
5. Failures back off exponentially with full jitter, from ``base`` up to ``cap``, and never below ``floor``.
   While a token is still held, no wait is longer than a quarter of its remaining life, so retries land before it
   expires; with no valid token (clients are failing now) no wait is longer than ``cap_empty``.
6. No single sleep is longer than ``max_sleep``, so a clock jump or a resume is noticed quickly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from tokend.token import Token


@dataclass(frozen=True)
class Policy:
    margin: float = 240.0  # seconds before expiry to ask for the next token (rule 3)
    same_token_retry: tuple[float, float] = (5.0, 20.0)  # jitter window for rule 4, seconds
    base: float = 2.0  # first backoff ceiling, seconds (rule 5)
    cap: float = 90.0  # largest backoff ceiling, seconds
    cap_empty: float = 15.0  # largest backoff ceiling while no valid token is held, seconds
    floor: float = 1.0  # no retry sooner than this, seconds
    max_sleep: float = 10.0  # longest single sleep, seconds (rule 6): a resumed laptop acts within this

    def lead(self, token: Token) -> float:
        """How long before ``token`` expires to ask for the one that replaces it (rules 1–3), seconds."""
        lifetime = token.lifetime
        if token.refresh_on is not None and token.obtained_at < token.refresh_on < token.expires_on:
            return token.expires_on - token.refresh_on
        if lifetime < 2 * self.margin:
            return lifetime / 2
        return self.margin

    def same_token_delay(self, token: Token, rand: Callable[[float, float], float] = random.uniform) -> float:
        """How long to wait after getting back the token we hold (rule 4): soon, jittered, seconds."""
        lo, hi = self.same_token_retry
        lifetime = max(token.lifetime, 0.0)
        # Short tokens get proportionally short retries, but never shorter than the floor.
        scale = min(1.0, lifetime / (8 * hi)) if lifetime else 1.0
        return max(self.floor, rand(lo, hi) * scale)

    def ask_past_cache(self, token: Token, remaining: float) -> bool:
        """Whether the same ``token`` handed back with ``remaining`` seconds of life means the credential's refresh
        is failing inside it (rule 4): half the lead gone, and no more than 5 minutes left."""
        return remaining < min(self.lead(token) / 2, 300.0)

    def backoff(
        self,
        attempt: int,
        remaining: float | None = None,
        urgent: bool = True,
        rand: Callable[[float, float], float] = random.uniform,
    ) -> float:
        """Seconds to wait after the ``attempt``-th failure in a row (1-based), full jitter (rule 5).

        ``remaining``: seconds of life left in the token held, None when none is held. ``urgent`` is False when
        retrying cannot help soon (a person must sign in), which keeps the plain exponential ceiling.
        """
        ceiling = min(self.cap, self.base * 2 ** max(attempt - 1, 0))
        if urgent:
            ceiling = min(ceiling, self.cap_empty if remaining is None or remaining <= 0 else remaining / 4)
        return max(self.floor, rand(0.0, ceiling))

    def sleep_for(self, wait: float) -> float:
        """How long to sleep now when the next thing is due in ``wait`` seconds (rule 6)."""
        return min(max(wait, 0.0), self.max_sleep)
