"""The refresher's decisions, one step at a time, with a scripted identity and a hand-moved clock.

The identity here is a stand-in for our own Identity interface (fetch() → Token or a sorted error); the real one
against azure-identity is exercised in test_identities.py and test_daemon.py.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest

from tokend.clock import Clock
from tokend.config import IdentityConfig
from tokend.errors import LoginRequired, TokenFailed
from tokend.refresh import Policy
from tokend.refresher import Refresher
from tokend.token import Token

pytestmark = pytest.mark.portable  # runs on Linux, macOS and Windows (.github/workflows/ci.yml)


class Hands:
    """A hand-moved wall clock and boot clock; ``step`` moves both, ``set_wall`` only the wall clock."""

    def __init__(self) -> None:
        self.wall = 1_000_000.0
        self.up = 500.0

    @property
    def now(self) -> float:
        return self.wall

    @now.setter
    def now(self, value: float) -> None:
        self.up += value - self.wall
        self.wall = value

    def move(self, seconds: float) -> None:
        """Both clocks forward by ``seconds``."""
        self.wall += seconds
        self.up += seconds

    def clock(self) -> Clock:
        return Clock(now=lambda: self.wall, boot=lambda: self.up)


class Scripted:
    """Answers fetch() from a list: a Token, or an exception to raise."""

    name = "scripted"
    config: IdentityConfig
    cache = None

    def __init__(self, answers: Iterator[Token | Exception]) -> None:
        self.answers = answers
        self.calls = 0

    def fetch(self, fresh: bool = False) -> Token:
        self.calls += 1
        answer = next(self.answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        pass


def make(answers: list[Token | Exception], hands: Hands) -> tuple[Refresher, list[int]]:
    changes: list[int] = []
    r = Refresher(Scripted(iter(answers)), Policy(margin=600), hands.clock(), lambda: changes.append(1))
    return r, changes


def tok(value: str, hands: Hands, lifetime: float) -> Token:
    return Token(value, hands.now + lifetime, hands.now, received=hands.up)


def test_new_token_is_published_and_scheduled() -> None:
    clock = Hands()
    t = tok("a", clock, 3600)
    r, changes = make([t], clock)
    r.step()
    assert r.state == "ok" and r.token == t and changes == [1]
    assert r.due_in() == 3600 - 600


def test_same_token_is_not_an_error_and_not_a_hot_loop() -> None:
    clock = Hands()
    t = tok("a", clock, 3600)
    r, changes = make([t, Token("a", t.expires_on, clock.now)], clock)
    r.step()
    clock.now += r.due_in()
    r.step()
    assert r.state == "ok" and changes == [1] and r.last_error is None
    assert 1 <= r.due_in() <= 20


def test_a_credential_whose_refresh_fails_quietly_is_asked_past_its_cache() -> None:
    """azure-identity hands back its cached token while it is valid, whatever its own refresh met (a workload
    identity's expired federated token file, reread only every 10 minutes). Same answers are fine while there is
    time; once half the lead has gone, tokend asks past the cache (fresh), well before the token leaves the sinks."""
    clock = Hands()
    t = tok("a", clock, 60)  # lead 30 s: asked at 30 s left, past the cache below 15 s left
    asked: list[bool] = []

    class Quiet(Scripted):
        def fetch(self, fresh: bool = False) -> Token:
            asked.append(fresh)
            return super().fetch(fresh)

    r = Refresher(
        Quiet(iter([t, t, t, Token("b", clock.now + 100, clock.now + 40)])),
        Policy(margin=600),
        clock.clock(),
        lambda: None,
    )
    r.step()
    clock.now += 31  # 29 s left: the same token is an ordinary answer
    r.step()
    assert asked == [False, False] and r.token == t
    clock.now += 16  # 13 s left, still the same: its refresh is failing; ask past the cache
    r.step()
    assert asked == [False, False, False, True] and r.token is not None and r.token.value == "b"


def test_failure_keeps_the_token_and_retries_before_expiry() -> None:
    clock = Hands()
    t = tok("a", clock, 3600)
    r, _ = make([t, TokenFailed("service down")], clock)
    r.step()
    clock.now = t.expires_on - 40
    r.step()
    assert r.state == "retrying" and r.valid_token() == t and r.last_error == "service down"
    assert r.due_in() <= 10  # a quarter of the 40 s left at most


def test_login_required_is_a_state() -> None:
    clock = Hands()
    r, changes = make([LoginRequired("run az login")], clock)
    r.step()
    assert r.state == "login-required" and r.valid_token() is None and changes == []
    assert r.first_done.is_set()


def test_expired_token_is_not_valid() -> None:
    clock = Hands()
    t = tok("a", clock, 60)
    r, _ = make([t, TokenFailed("down")], clock)
    r.step()
    clock.now += 61
    r.step()
    assert r.valid_token() is None and r.state == "failed"


def test_a_wall_clock_set_back_does_not_lengthen_a_tokens_life() -> None:
    """NTP, a restored VM, dual boot: the wall clock steps back two hours; the boot clock does not. The token's
    life is judged on the boot clock since it arrived, so it expires on time and is never handed out late."""
    clock = Hands()
    t = tok("a", clock, 60)
    r, changes = make([t, t, Token("b", clock.now + 3660, clock.now)], clock)
    r.step()
    clock.wall -= 7200  # stepped back
    clock.up += 30
    assert 29 <= t.remaining(clock.clock()) <= 30
    clock.up += 31  # 61 s after it arrived: gone, whatever the wall clock says
    assert r.valid_token() is None
    r.step()  # the credential's cache still believes in "a": tokend asks past it (fresh) and gets "b"
    assert r.token is not None and r.token.value == "b" and changes == [1, 1]


def test_a_wall_clock_set_forward_or_a_sleep_counts_too() -> None:
    clock = Hands()
    r, _ = make([tok("a", clock, 3600)], clock)
    r.step()
    clock.wall += 3600  # the wall clock alone jumps past the expiry (a resume the boot clock did not see)
    assert r.valid_token() is None and r.due_in() <= 0


def test_a_revoked_sign_in_backs_off_to_a_long_wait_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Hands()
    r, _ = make([LoginRequired("run tokend login") for _ in range(12)], clock)
    waits = []
    with caplog.at_level("INFO", logger="tokend.refresh"):
        for _ in range(12):
            r.step()
            waits.append(r.due_in())
            clock.now += r.due_in()
    assert waits[0] <= r.policy.cap  # the first retry comes soon: a glitch clears at once
    assert all(b >= a for a, b in itertools.pairwise(waits[1:]))  # then it only grows
    assert waits[-1] == pytest.approx(30 * 60) and max(waits) <= 30 * 60
    warnings = [rec for rec in caplog.records if rec.levelname == "WARNING"]
    assert len(warnings) == 1 and "login-required" in warnings[0].getMessage()
    r.refresh_now()  # `tokend login` / `az login` wake it at once, whatever the wait
    assert r.due_in() <= 0


def adopted(value: str, hands: Hands, lifetime: float) -> Token:
    """A token as a previous daemon left it: judged on the wall clock alone (no arrival on our boot clock)."""
    return Token(value, hands.now + lifetime, hands.now)


def test_an_adopted_token_is_held_through_failures_and_marked_inherited() -> None:
    clock = Hands()
    r, changes = make([TokenFailed("down"), TokenFailed("down")], clock)
    assert r.adopt(adopted("old", clock, 600)) and r.inherited
    r.step()
    assert r.valid_token() is not None and r.valid_token().value == "old"  # type: ignore[union-attr]
    assert r.inherited and r.state == "retrying" and changes == []
    assert r.due_in() < 600  # retried before the adopted token's end
    assert not r.adopt(adopted("other", clock, 900))  # only before the first answer


def test_the_first_answer_replaces_an_adopted_token_even_when_it_is_the_same_one() -> None:
    clock = Hands()
    r, changes = make([tok("old", clock, 600)], clock)
    r.adopt(adopted("old", clock, 600))
    r.step()
    assert not r.inherited and r.token is not None and r.token.received == clock.up and changes == [1]


def test_a_sign_out_removes_an_adopted_token() -> None:
    clock = Hands()
    r, changes = make([LoginRequired("run az login", signed_out=True)], clock)
    r.adopt(adopted("old", clock, 600))
    r.step()
    assert r.valid_token() is None and not r.inherited and changes == [1]


def test_an_adopted_token_leaves_at_its_end() -> None:
    clock = Hands()
    r, _ = make([TokenFailed("down")], clock)
    r.adopt(adopted("old", clock, 60))
    r.step()
    clock.now += 61
    assert r.valid_token() is None and r.state == "failed"


# -- `tokend token` never hands out a token about to be replaced while its successor is due (Refresher.fresh_token; the
# attempt that brings the successor runs on another thread) ------------------------------------------------------------
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
