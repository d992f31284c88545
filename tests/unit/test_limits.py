"""Limits: how the descriptor limit is shared out, budgets with a ceiling, and the pending-connection caps that
evict the oldest idler rather than refuse the newcomer."""

from __future__ import annotations

import resource

import pytest

from tokend import limits
from tokend.limits import Budget, Pending, Shares


@pytest.mark.parametrize(
    ("soft", "want"),
    [
        (1 << 20, Shares(256, 128, 256, (1 << 20) - 640)),  # a big limit: fixed caps, the rest for the proxy
        (65536, Shares(256, 128, 256, 65536 - 640)),
        (1024, Shares(128, 128, 256, 512)),  # the usual soft limit: IPC shrinks to an eighth
        (256, Shares(32, 32, 64, 128)),  # small: every part in proportion, the proxy keeps half
        (8, Shares(1, 1, 2, 4)),
        (0, Shares(0, 0, 0, 0)),
    ],
)
def test_shares_of_a_descriptor_limit(soft: int, want: Shares) -> None:
    got = limits.shares(soft)
    assert got == want
    assert got.reserve == got.ipc + got.health + got.own
    assert got.reserve + got.proxy == soft


@pytest.mark.parametrize("soft", [1, 7, 100, 1000, 5000, 100_000])
def test_the_reserve_never_swallows_the_proxy_nor_exceeds_the_limit(soft: int) -> None:
    s = limits.shares(soft)
    assert s.proxy >= soft // 2 and s.reserve + s.proxy == soft and min(s.ipc, s.health, s.own, s.proxy) >= 0


def test_a_budget_takes_up_to_its_ceiling_and_gives_back() -> None:
    b = Budget(5)
    assert b.take(2) and b.take(2)
    assert not b.take(2)  # would be 6
    assert b.used == 4 and b.take(1) and b.used == 5
    b.give(2)
    assert b.take(2) and not b.take(1)
    b.give(100)  # never below zero
    assert b.used == 0
    assert Budget(-3).total == 0 and not Budget(-3).take(1)


def test_raise_file_limit_lifts_the_soft_limit_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        assert limits.file_limit() == lowered
        now = limits.raise_file_limit()
        assert now == limits.file_limit()
        # an unlimited hard limit (macOS) gets the largest soft one the OS takes
        assert now == hard if hard != resource.RLIM_INFINITY else now > lowered
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Conn:
    """A connection the caps may close: records that it was."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def close(self) -> None:
        self.log.append(self.name)


def test_a_full_set_evicts_its_oldest_pending_connection() -> None:
    closed: list[str] = []
    p = Pending(limit=3)
    tickets = [p.admit(Conn(n, closed).close) for n in "abc"]
    assert all(tickets) and len(p) == 3
    assert p.admit(Conn("d", closed).close) is not None
    assert closed == ["a"] and len(p) == 3 and p.evicted == 1
    assert tickets[0] is not None and tickets[0].state == "released"


def test_busy_connections_are_counted_but_never_evicted() -> None:
    closed: list[str] = []
    p = Pending(limit=2)
    a = p.admit(Conn("a", closed).close)
    b = p.admit(Conn("b", closed).close)
    assert a is not None and b is not None
    a.busy()
    assert p.admit(Conn("c", closed).close) is not None  # b, the only pending one, makes room
    assert closed == ["b"]
    t = p.admit(Conn("d", closed).close)  # evicts c
    assert t is not None and closed == ["b", "c"]
    t.busy()
    assert p.admit(Conn("e", closed).close) is None  # only busy ones: the newcomer is the one refused
    assert closed == ["b", "c"] and len(p) == 2


def test_one_peer_filling_its_share_evicts_its_own_oldest_not_anyone_elses() -> None:
    closed: list[str] = []
    p = Pending(limit=10, per_key=2)
    p.admit(Conn("mallory-1", closed).close, key=1001)
    p.admit(Conn("alice-1", closed).close, key=1000)
    p.admit(Conn("mallory-2", closed).close, key=1001)
    p.admit(Conn("mallory-3", closed).close, key=1001)
    assert closed == ["mallory-1"]
    p.admit(Conn("mallory-4", closed).close, key=1001)
    assert closed == ["mallory-1", "mallory-2"] and len(p) == 3 and p.evicted == 2


def test_release_is_idempotent_and_frees_the_place() -> None:
    p = Pending(limit=1, per_key=1)
    t = p.admit(lambda: None, key="k")
    assert t is not None
    t.busy()
    t.busy()  # a second call changes nothing
    assert len(p) == 1 and p.busy == 1
    t.release()
    t.release()
    assert len(p) == 0 and p.busy == 0
    assert p.admit(lambda: None, key="k") is not None


def test_a_close_that_raises_still_frees_the_place() -> None:
    def broken() -> None:
        raise OSError("already gone")

    p = Pending(limit=1)
    p.admit(broken)
    assert p.admit(lambda: None) is not None and len(p) == 1 and p.evicted == 1


pytestmark = pytest.mark.portable


def test_a_usual_limit_gives_ipc_and_health_their_caps_and_the_proxy_the_rest() -> None:
    s = limits.shares(65536)
    assert (s.ipc, s.health, s.own) == (limits.IPC_CONNECTIONS, limits.HEALTH_CONNECTIONS, limits.OWN_WORK)
    assert s.proxy == 65536 - s.reserve


def test_a_small_limit_shrinks_every_part_and_the_reserve_never_swallows_the_proxy() -> None:
    s = limits.shares(256)
    assert s.ipc == s.health == 32 and s.proxy > 0 and s.reserve + s.proxy <= 256


def test_the_budget_refuses_past_its_total_and_never_goes_below_zero() -> None:
    b = limits.Budget(4)
    assert b.take(2) and b.take(2) and not b.take(1)
    b.give(2)
    assert b.take(1)
    b.give(100)
    assert b.used == 0


def test_a_full_pending_set_evicts_its_oldest_connection() -> None:
    closed: list[str] = []
    p = limits.Pending(2)
    a = p.admit(lambda: closed.append("a"))
    assert a is not None and p.admit(lambda: closed.append("b")) is not None
    assert p.admit(lambda: closed.append("c")) is not None
    assert closed == ["a"] and len(p) == 2 and p.evicted == 1


def test_busy_connections_are_never_evicted_and_a_newcomer_is_turned_away_when_they_fill_it() -> None:
    closed: list[str] = []
    p = limits.Pending(2)
    for name in ("a", "b"):
        t = p.admit(lambda n=name: closed.append(n))
        assert t is not None
        t.busy()
    assert p.admit(lambda: closed.append("c")) is None and closed == []


def test_the_cap_per_key_evicts_that_keys_oldest_only() -> None:
    closed: list[str] = []
    p = limits.Pending(10, per_key=1)
    p.admit(lambda: closed.append("uid1-first"), key=1)
    p.admit(lambda: closed.append("uid2"), key=2)
    p.admit(lambda: closed.append("uid1-second"), key=1)
    assert closed == ["uid1-first"] and len(p) == 2


def test_the_file_limit_is_raised_to_at_least_what_it_was() -> None:
    before = limits.file_limit()
    assert limits.raise_file_limit() >= before
