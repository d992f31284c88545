"""The daemon's loop in-process: work handed to it from other threads, run_on from anywhere, and what asyncio
reports through the exception handler logged as one line per kind, never a flood."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator

import pytest

from tokend.ioloop import IOLoop, run_on

from support.waits import wait_for

pytestmark = pytest.mark.portable


@pytest.fixture
def io() -> Iterator[IOLoop]:
    loop = IOLoop().start()
    try:
        yield loop
    finally:
        loop.stop()


def test_run_waits_for_a_coroutine_on_the_loop_thread(io: IOLoop) -> None:
    async def where() -> str:
        return threading.current_thread().name

    assert io.run(where()) == "io"


def test_call_soon_runs_on_the_loop(io: IOLoop) -> None:
    seen: list[str] = []
    io.call_soon(lambda: seen.append(threading.current_thread().name))
    wait_for(lambda: seen == ["io"], what="the call")


def test_run_on_runs_on_the_loop_from_another_thread_and_inline_on_it(io: IOLoop) -> None:
    seen: list[str] = []
    run_on(io.loop, lambda: seen.append(threading.current_thread().name))
    assert seen == ["io"]  # returned only once it ran

    async def inside() -> None:
        run_on(io.loop, lambda: seen.append("inline"))

    io.run(inside())
    assert seen == ["io", "inline"]
    run_on(None, lambda: seen.append("no loop"))
    assert seen[-1] == "no loop"


def test_errors_the_loop_reports_are_one_line_per_kind(io: IOLoop, caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> None:
        raise ValueError("bad callback")

    with caplog.at_level(logging.WARNING, logger="tokend.loop"):
        for _ in range(20):
            io.call_soon(boom)
        wait_for(lambda: any("bad callback" in r.getMessage() for r in caplog.records), what="the report")
        io.run(asyncio.sleep(0.05))
    lines = [r.getMessage() for r in caplog.records if r.name == "tokend.loop"]
    assert len(lines) == 1 and "bad callback" in lines[0]


def test_stop_cancels_what_is_left_and_ends_the_thread() -> None:
    io = IOLoop().start()
    started = threading.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    asyncio.run_coroutine_threadsafe(forever(), io.loop)
    assert started.wait(5)
    io.stop()
    assert not io.loop.is_running()
