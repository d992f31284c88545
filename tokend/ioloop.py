"""The daemon's one asyncio thread: the IPC endpoint, the local proxy's listeners and the health endpoint all run on
it, and file-change bursts are debounced on it, so no connection ever costs a thread.

Blocking work (answering a status for ten thousand targets, reloading the config) goes to a small thread pool
(``executor``), never onto the loop.

What asyncio reports through the loop's exception handler (an accept that failed for lack of descriptors, a
callback that raised) is logged as one line per kind of event through ``logs.Aggregated``, never a traceback (with
``--debug``, the traceback too): a client that can cause it at will cannot flood the log with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tokend.logs import Aggregated

T = TypeVar("T")
WORKERS = 4  # threads for blocking work handed off the loop
log = logging.getLogger("tokend.loop")


class IOLoop:
    def __init__(self, selector: bool = False) -> None:
        """``selector``: a selector loop even where asyncio's default is another kind (Windows' proactor), for
        code that waits on socket readiness (the proxy)."""
        self.loop = asyncio.SelectorEventLoop() if selector else asyncio.new_event_loop()
        self.executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="io-work")
        self.loop.set_default_executor(self.executor)
        self._reports = Aggregated(log)
        self.loop.set_exception_handler(self._report)
        self._thread = threading.Thread(target=self._run, name="io", daemon=True)

    def start(self) -> IOLoop:
        self._thread.start()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _report(self, _loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's exception handler: one line per kind of event and interval, with its count."""
        message = str(context.get("message") or "unhandled error")
        error = context.get("exception")
        reason = f": {error}" if error is not None else ""
        self._reports.warning((message, type(error).__name__), "event loop: %s%s", message, reason)
        if error is not None and log.isEnabledFor(logging.DEBUG):
            log.debug("event loop: %s", message, exc_info=error)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run ``coro`` on the loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn`` on the loop, from any thread."""
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        async def _drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            with contextlib.suppress(Exception):  # shutting down: whatever is left is dropped
                self.run(_drain(), timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        self.executor.shutdown(wait=False, cancel_futures=True)


def run_on(loop: asyncio.AbstractEventLoop | None, fn: Callable[[], Any]) -> None:
    """Run ``fn`` on ``loop`` and wait for it, whichever thread calls (asyncio objects are not thread-safe)."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is None or running is loop or loop.is_closed() or not loop.is_running():
        fn()
        return
    done: concurrent.futures.Future[None] = concurrent.futures.Future()

    def call() -> None:
        try:
            fn()
        finally:
            done.set_result(None)

    loop.call_soon_threadsafe(call)
    with contextlib.suppress(concurrent.futures.TimeoutError):
        done.result(5)
