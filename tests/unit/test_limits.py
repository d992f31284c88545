"""The shared bounds (pure): how the descriptor limit is shared out, the proxy's budget, and the pending set that
evicts the oldest connection that has not proven anything yet."""

from __future__ import annotations

import pytest

from tokend import limits

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


def test_release_is_idempotent_and_frees_the_place() -> None:
    p = limits.Pending(1)
    t = p.admit(lambda: None)
    assert t is not None
    t.busy()
    t.release()
    t.release()
    assert len(p) == 0 and p.admit(lambda: None) is not None


def test_the_file_limit_is_raised_to_at_least_what_it_was() -> None:
    before = limits.file_limit()
    assert limits.raise_file_limit() >= before
