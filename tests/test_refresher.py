"""The refresher's decisions, one step at a time, with a scripted identity and a hand-moved clock.

The identity here is a stand-in for our own Identity interface (fetch() → Token or a sorted error); the real one
against azure-identity is exercised in test_identities.py and test_daemon.py.
"""

from __future__ import annotations

from collections.abc import Iterator

from tokend.errors import LoginRequired, TokenFailed
from tokend.refresh import Policy
from tokend.refresher import Refresher
from tokend.token import Token


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """Answers fetch() from a list: a Token, or an exception to raise."""

    name = "scripted"

    def __init__(self, answers: Iterator[Token | Exception]) -> None:
        self.answers = answers
        self.calls = 0

    def fetch(self) -> Token:
        self.calls += 1
        answer = next(self.answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        pass


def make(answers: list[Token | Exception], clock: Clock) -> tuple[Refresher, list[int]]:
    changes: list[int] = []
    r = Refresher(Scripted(iter(answers)), Policy(margin=600), clock,  # type: ignore[arg-type]
                  lambda: changes.append(1))
    return r, changes


def test_new_token_is_published_and_scheduled() -> None:
    clock = Clock()
    t = Token("a", clock.now + 3600, clock.now)
    r, changes = make([t], clock)
    r.step()
    assert r.state == "ok" and r.token == t and changes == [1]
    assert r.next_at == t.expires_on - 600


def test_same_token_is_not_an_error_and_not_a_hot_loop() -> None:
    clock = Clock()
    t = Token("a", clock.now + 3600, clock.now)
    r, changes = make([t, Token("a", t.expires_on, clock.now)], clock)
    r.step()
    clock.now = r.next_at
    r.step()
    assert r.state == "ok" and changes == [1] and r.last_error is None
    assert clock.now + 1 <= r.next_at <= clock.now + 20


def test_failure_keeps_the_token_and_retries_before_expiry() -> None:
    clock = Clock()
    t = Token("a", clock.now + 3600, clock.now)
    r, _ = make([t, TokenFailed("service down")], clock)
    r.step()
    clock.now = t.expires_on - 40
    r.step()
    assert r.state == "retrying" and r.valid_token() == t and r.last_error == "service down"
    assert r.next_at <= clock.now + 10  # a quarter of the 40 s left at most


def test_login_required_is_a_state() -> None:
    clock = Clock()
    r, changes = make([LoginRequired("run az login")], clock)
    r.step()
    assert r.state == "login-required" and r.valid_token() is None and changes == []
    assert r.first_done.is_set()


def test_expired_token_is_not_valid() -> None:
    clock = Clock()
    t = Token("a", clock.now + 60, clock.now)
    r, _ = make([t, TokenFailed("down")], clock)
    r.step()
    clock.now += 61
    r.step()
    assert r.valid_token() is None and r.state == "failed"
