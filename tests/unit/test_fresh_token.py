"""`tokend token` never hands out a token about to be replaced while its successor is due: Refresher.fresh_token,
with a scripted identity and a hand-moved clock (the attempt that brings the successor runs on another thread)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tokend.clock import Clock
from tokend.config import IdentityConfig
from tokend.errors import TokenFailed
from tokend.refresh import Policy
from tokend.refresher import Refresher
from tokend.token import Token

pytestmark = pytest.mark.portable


class Hands:
    """A hand-moved clock: wall and boot time move together."""

    def __init__(self) -> None:
        self.wall, self.up = 1_000_000.0, 500.0

    def move(self, seconds: float) -> None:
        self.wall += seconds
        self.up += seconds

    def clock(self) -> Clock:
        return Clock(now=lambda: self.wall, boot=lambda: self.up)


class Scripted:
    name = "scripted"
    config: IdentityConfig
    cache = None

    def __init__(self, answers: Iterator[Token | Exception]) -> None:
        self.answers = answers

    def fetch(self, fresh: bool = False) -> Token:
        answer = next(self.answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        pass


def tok(value: str, hands: Hands, lifetime: float) -> Token:
    return Token(value, hands.wall + lifetime, hands.wall, received=hands.up)


def at_once(r: Refresher) -> Token | None:
    """fresh_token allowed an hour of waiting; it must answer without waiting (within 10 s) or the test fails."""
    got: list[Token | None] = []
    asker = threading.Thread(target=lambda: got.append(r.fresh_token(3600.0)), daemon=True)
    asker.start()
    asker.join(10.0)
    assert got, "fresh_token waited for an attempt it should not wait for"
    return got[0]


def test_a_token_outside_its_lead_is_answered_at_once() -> None:
    hands = Hands()
    r = Refresher(Scripted(iter([tok("a", hands, 600)])), Policy(margin=90), hands.clock(), lambda: None)
    r.step()
    assert at_once(r) is r.token  # 600 s left, lead 90 s: nothing is due


def test_inside_its_lead_the_answer_waits_for_the_due_attempt_and_is_the_successor() -> None:
    hands = Hands()
    first = tok("a", hands, 600)
    second = Token("b", hands.wall + 540 + 600, hands.wall + 540, received=hands.up + 540)
    r = Refresher(Scripted(iter([first, second])), Policy(margin=90), hands.clock(), lambda: None)
    r.step()
    hands.move(540)  # 60 s left: inside the 90 s lead, the next attempt is due now
    got: list[Token | None] = []
    asker = threading.Thread(target=lambda: got.append(r.fresh_token(5.0)))
    asker.start()
    # the asker is waiting: it answers only after the attempt (run here, as the refresher's loop would)
    asker.join(0.2)
    assert asker.is_alive()
    r.step()
    asker.join(5.0)
    assert got == [second]


def test_no_wait_while_the_refresh_is_failing() -> None:
    hands = Hands()
    first = tok("a", hands, 600)
    r = Refresher(Scripted(iter([first, TokenFailed("network down")])), Policy(margin=90), hands.clock(), lambda: None)
    r.step()
    hands.move(540)
    r.step()  # failed: the old token is all there is, and waiting would not bring another
    assert r.error_kind == "failed" and at_once(r) is first


def test_no_wait_after_a_same_token_answer() -> None:
    """margin 10 m: the credential hands back its cached token until 5 minutes are left, and the refresher asks
    again every few seconds; `tokend token` must not wait for those attempts."""
    hands = Hands()
    first = tok("a", hands, 3600)
    r = Refresher(Scripted(iter([first, first])), Policy(margin=600), hands.clock(), lambda: None)
    r.step()
    hands.move(3600 - 500)
    r.step()  # same token: next attempt in 5-20 s
    hands.move(r.due_in() - 1)  # that attempt 1 s away, well inside the wait
    assert at_once(r) is first
