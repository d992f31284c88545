"""The refresh policy (pure): when to ask, how to back off, never a tight loop."""

from __future__ import annotations

from tokend.refresh import Policy
from tokend.token import Token

P = Policy(margin=240)


def tok(lifetime: float, at: float = 1000.0, refresh_on: float | None = None) -> Token:
    return Token("v", at + lifetime, at, refresh_on)


def test_refresh_on_wins_when_given() -> None:
    assert P.refresh_at(tok(86400, refresh_on=1000 + 43200)) == 1000 + 43200


def test_long_tokens_refresh_margin_before_expiry() -> None:
    assert P.refresh_at(tok(3600)) == 1000 + 3600 - 240


def test_short_tokens_refresh_at_half_life() -> None:
    assert P.refresh_at(tok(60)) == 1030


def test_same_token_retries_soon_but_not_hot() -> None:
    t = tok(3600)
    for r in (lambda a, b: a, lambda a, b: b):
        at = P.same_token_at(2000, t, r)
        assert 2000 + P.floor <= at <= 2000 + 20
    short = tok(60)
    assert P.same_token_at(2000, short, lambda a, b: a) >= 2000 + P.floor


def test_backoff_grows_with_full_jitter_and_is_capped() -> None:
    top = [P.backoff(n, lambda a, b: b) for n in range(1, 12)]
    assert top[:4] == [2, 4, 8, 16]
    assert max(top) == P.cap
    assert all(P.backoff(n, lambda a, b: a) == P.floor for n in range(1, 12))


def test_no_sleep_longer_than_max_sleep() -> None:
    assert P.sleep_for(0, 10_000) == P.max_sleep
    assert P.sleep_for(100, 50) == 0
