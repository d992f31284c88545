"""The clock tokend passes in: the wall clock and the boot clock, each replaceable by a test's own."""

from __future__ import annotations

import dataclasses
import time

import pytest

from tokend import system
from tokend.clock import SYSTEM, Clock

pytestmark = pytest.mark.portable  # runs on Linux, macOS and Windows (.github/workflows/ci.yml)


def test_the_system_clock_reads_the_wall_clock_in_epoch_seconds() -> None:
    before = time.time()
    now = SYSTEM.now()
    assert before <= now <= time.time()
    assert now > 1.6e9  # epoch seconds, not milliseconds nor a monotonic count


def test_the_system_boot_clock_is_systems_and_never_goes_back() -> None:
    assert SYSTEM.boot is system.boot_time
    readings = [SYSTEM.boot() for _ in range(1000)]
    assert readings == sorted(readings)


def test_a_clock_is_a_frozen_value_a_test_builds_from_its_own_functions() -> None:
    t = [100.0]
    clock = Clock(now=lambda: t[0], boot=lambda: t[0] - 90.0)
    t[0] = 250.0
    assert (clock.now(), clock.boot()) == (250.0, 160.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        clock.now = time.time  # type: ignore[misc]
