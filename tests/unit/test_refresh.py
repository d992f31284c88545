"""The refresh policy (pure): when to ask, how to back off, never a tight loop."""

from __future__ import annotations

import pytest

from tokend.refresh import Policy
from tokend.token import Token

pytestmark = pytest.mark.portable  # runs on Linux, macOS and Windows (.github/workflows/ci.yml)

P = Policy(margin=240)


def tok(lifetime: float, at: float = 1000.0, refresh_on: float | None = None) -> Token:
    return Token("v", at + lifetime, at, refresh_on)


def test_refresh_on_wins_when_given() -> None:
    assert P.lead(tok(86400, refresh_on=1000 + 43200)) == 43200


def test_long_tokens_refresh_margin_before_expiry() -> None:
    assert P.lead(tok(3600)) == 240


def test_short_tokens_refresh_at_half_life() -> None:
    assert P.lead(tok(60)) == 30


def test_same_token_retries_soon_but_not_hot() -> None:
    t = tok(3600)
    for r in (lo, hi):
        assert P.floor <= P.same_token_delay(t, r) <= 20
    short = tok(60)
    assert P.same_token_delay(short, lo) >= P.floor


def hi(a: float, b: float) -> float:
    return b


def lo(a: float, b: float) -> float:
    return a


def test_backoff_grows_with_full_jitter_and_is_capped() -> None:
    top = [P.backoff(n, urgent=False, rand=hi) for n in range(1, 12)]
    assert top[:4] == [2, 4, 8, 16]
    assert max(top) == P.cap
    assert all(P.backoff(n, urgent=False, rand=lo) == P.floor for n in range(1, 12))


def test_backoff_lands_before_the_held_token_expires() -> None:
    assert P.backoff(10, remaining=40, rand=hi) == 10
    assert P.backoff(10, remaining=2, rand=hi) == P.floor
    assert P.backoff(10, remaining=None, rand=hi) == P.cap_empty
    assert P.backoff(10, remaining=None, urgent=False, rand=hi) == P.cap


def test_no_sleep_longer_than_max_sleep() -> None:
    assert P.sleep_for(10_000) == P.max_sleep
    assert P.sleep_for(-50) == 0


def test_same_answers_late_in_a_tokens_life_mean_asking_past_the_cache() -> None:
    p = Policy(margin=240)
    short = Token("x", 1060.0, 1000.0)  # 60 s: lead 30 s, so past the cache below 15 s left
    assert not p.ask_past_cache(short, 20) and p.ask_past_cache(short, 14)
    hour = Token("x", 4600.0, 1000.0)  # lead = margin 240 s: below 120 s left
    assert not p.ask_past_cache(hour, 200) and p.ask_past_cache(hour, 119)
    day = Token("x", 1000.0 + 86400, 1000.0, refresh_on=1000.0 + 43200)  # managed identity: lead 12 h, capped at 5 min
    assert not p.ask_past_cache(day, 3600) and p.ask_past_cache(day, 299)
