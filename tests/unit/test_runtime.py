"""The runtime in-process with stand-in services (no sockets, no files watched): the start order, every close on
a stop and on a start that fails half-way, and a reload that moves the proxy's listeners and the health endpoint."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tokend import runtime
from tokend.clock import Clock
from tokend.config import Config, IdentityConfig, Listen, parse
from tokend.daemon import Daemon
from tokend.errors import TokendError
from tokend.snapshot import Snapshot

from support.fakes import ME, FakeIdentity, World, target
from support.waits import wait_for

pytestmark = pytest.mark.portable

OBSERVE = '[observe]\nlisten = "127.0.0.1:9464"\n'


class Services:
    """Every stand-in service, recording what happens to it, in order, in ``events``."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.events: list[str] = []
        self.applied: list[list[str]] = []  # the listen addresses of each config the proxy was given
        self.fail: str | None = None  # the name of the builder that raises

    def _maybe_fail(self, name: str) -> None:
        if self.fail == name:
            raise TokendError(f"{name} cannot start")

    # the builders runtime.run takes
    def loop(self) -> Any:
        services = self

        class Loop:
            executor = None

            def run(self, coro: Any, timeout: float | None = 30.0) -> Any:
                return asyncio.run(coro)

            def stop(self) -> None:
                services.events.append("loop stop")

        self.events.append("loop")
        return Loop()

    def server(self, _daemon: Daemon, _io: Any) -> Any:
        services = self

        class Server:
            async def start(self) -> None:
                services._maybe_fail("server")
                services.events.append("ipc start")

            def close(self) -> None:
                services.events.append("ipc close")

        return Server()

    def observer(self, snapshots: Callable[[], Snapshot], _io: Any, where: Listen) -> Any:
        services = self
        self._maybe_fail("observer")
        assert isinstance(snapshots(), Snapshot)
        self.events.append(f"health {where}")

        class Observer:
            def close(self) -> None:
                services.events.append(f"health close {where}")

        return Observer()

    def proxy(self, _daemon: Daemon, _io: Any) -> Any:
        services = self
        self._maybe_fail("proxy")

        class Proxy:
            def apply(self, config: Config) -> None:
                services.applied.append([f"{t.name} {a}" for t in config.targets.values() for a in t.listen])
                services.events.append("proxy apply")

            def status(self, _target: str) -> dict[str, Any] | None:
                return None

            def close(self) -> None:
                services.events.append("proxy close")

        return Proxy()

    def watcher(self, _io: Any) -> Any:
        services = self

        class Watcher:
            def watch(self, files: Iterable[Path], _callback: Callable[[], None]) -> str:
                services.events.append("watch " + ",".join(Path(f).name for f in files))
                return "w"

            def unwatch(self, _w: Any) -> None:
                services.events.append("unwatch")

            def start(self) -> None:
                services._maybe_fail("watcher")
                services.events.append("watcher start")

            def stop(self) -> None:
                services.events.append("watcher stop")

        return Watcher()

    def notify(self, message: bytes) -> None:
        self.events.append(message.decode())

    def identity(self, config: IdentityConfig, clock: Clock) -> FakeIdentity:
        services = self

        class Recorded(FakeIdentity):
            def fetch(self, fresh: bool = False) -> Any:
                if self.fetches == 0:
                    services.events.append(f"first fetch {self.name}")
                return super().fetch(fresh)

        i = Recorded(config, clock)
        self.world.identities.append(i)
        return i

    def run(self, d: Daemon) -> int:
        return runtime.run(
            d,
            make_loop=self.loop,
            make_server=self.server,
            make_watcher=self.watcher,
            make_proxy=self.proxy,
            make_observer=self.observer,
            notify=self.notify,
            first_wait=10,
        )


@pytest.fixture
def services(tmp_path: Path) -> Services:
    return Services(World(tmp_path))


def daemon(services: Services, text: str) -> Daemon:
    services.world.path.write_text(text)
    return Daemon(parse(text, services.world.path), build_identity=services.identity, build_sink=services.world.sink)


@pytest.fixture
def running(services: Services) -> Iterator[Callable[[Daemon], threading.Thread]]:
    """Starts ``runtime.run`` on a thread; stops and joins it at the end whatever happened."""
    started: list[tuple[Daemon, threading.Thread, list[int]]] = []

    def start(d: Daemon) -> threading.Thread:
        code: list[int] = []
        t = threading.Thread(target=lambda: code.append(services.run(d)), daemon=True)
        t.start()
        started.append((d, t, code))
        return t

    yield start
    for d, t, _ in started:
        d.stop("test over")
        t.join(10)


def test_services_start_in_order_and_close_in_reverse(services: Services, running: Any) -> None:
    d = daemon(services, ME + target("a", "me") + OBSERVE)
    t = running(d)
    wait_for(lambda: "READY=1" in services.events, what="ready")
    ready = services.events.index("READY=1")
    assert services.events[:ready] == [
        "loop",
        "ipc start",
        "health 127.0.0.1:9464",  # before the first token attempt: a probe sees "not ready", never "refused"
        "first fetch me",
        "proxy apply",
        "watch config.toml,tokend.env",  # the environment file beside it: a changed secret is read at once
        "watch azureProfile.json",  # an azure-cli identity: az login/logout are followed
        "watcher start",
    ]
    d.stop("SIGTERM")
    t.join(10)
    assert services.events[ready + 1 :] == [
        "STOPPING=1",
        "watcher stop",
        "proxy close",
        "health close 127.0.0.1:9464",
        "ipc close",
        "loop stop",
    ]
    assert d.stop_reason == "SIGTERM" and all(not w._thread.is_alive() for w in d.workers.values())


def test_a_stop_is_exit_code_zero(services: Services) -> None:
    d = daemon(services, ME + target("a", "me"))
    d.stop("tokend stop")  # asked before it even started: it ends right after the refreshers' wait
    assert services.run(d) == 0
    assert "READY=1" not in services.events and "proxy apply" not in services.events
    assert services.events[-3:] == ["STOPPING=1", "ipc close", "loop stop"]


@pytest.mark.parametrize("failing", ["server", "observer", "proxy", "watcher"])
def test_a_start_that_fails_closes_everything_started_before_it(services: Services, failing: str) -> None:
    d = daemon(services, ME + target("a", "me") + OBSERVE)
    services.fail = failing
    with pytest.raises(TokendError, match=f"{failing} cannot start"):
        services.run(d)
    opened = [e for e in services.events if e in ("ipc start", "health 127.0.0.1:9464", "proxy apply")]
    closes = {"ipc start": "ipc close", "health 127.0.0.1:9464": "health close 127.0.0.1:9464"}
    closes["proxy apply"] = "proxy close"
    for e in opened:
        assert closes[e] in services.events, (failing, services.events)
    assert services.events[-1] == "loop stop" and "READY=1" not in services.events
    assert not d.refreshing and all(not r._thread.is_alive() for r in d.refreshers.values())


def test_a_health_endpoint_that_cannot_listen_does_not_stop_the_daemon(services: Services, running: Any) -> None:
    d = daemon(services, ME + target("a", "me") + OBSERVE)

    def refused(*_args: Any) -> Any:
        raise OSError(98, "Address already in use")

    services.observer = refused  # type: ignore[method-assign]
    running(d)
    wait_for(lambda: "READY=1" in services.events, what="ready")
    assert d.snapshot().identities[0].name == "me" and d.observing is None


def test_a_reload_moves_the_listeners_and_the_health_endpoint(services: Services, running: Any) -> None:
    d = daemon(services, ME + target("a", "me", "[]") + 'listen = ["127.0.0.1:6432"]\n' + OBSERVE)
    running(d)
    wait_for(lambda: "READY=1" in services.events, what="ready")
    assert services.applied == [["a 127.0.0.1:6432"]]
    services.world.path.write_text(
        ME
        + target("a", "me", "[]")
        + 'listen = ["127.0.0.1:6433", "unix:6432"]\n'
        + '[observe]\nlisten = "127.0.0.1:9465"\n'
    )
    d.reload("test")
    assert services.applied[-1] == ["a 127.0.0.1:6433", "a unix:6432"]
    assert services.events[-3:] == ["health close 127.0.0.1:9464", "health 127.0.0.1:9465", "proxy apply"]
    assert d.observing == Listen(False, "127.0.0.1", 9465)
    services.world.path.write_text(ME + target("a", "me", "[]") + 'listen = ["127.0.0.1:6433", "unix:6432"]\n')
    d.reload("test")  # no [observe] any more: the endpoint closes
    assert services.events[-2:] == ["health close 127.0.0.1:9465", "proxy apply"] and d.observing is None


def test_a_sink_worker_watches_its_own_files_and_stops_when_it_retires(services: Services, running: Any) -> None:
    watched: list[str] = []
    real = services.world.sink

    def sink(kind: str, options: Any, owner: str) -> Any:
        s = real(kind, options, owner)
        files = [Path(options.get("path", "/default"))] if kind == "pgpass" else []
        s.watched = lambda: files  # type: ignore[method-assign]
        return s

    services.world.sink = sink  # type: ignore[method-assign]
    d = daemon(services, ME + target("a", "me") + '[sinks.pgpass]\npath = "/one/pgpass"\n')
    running(d)
    wait_for(lambda: "READY=1" in services.events, what="ready")
    watched += [e for e in services.events if e.startswith("watch ")]
    assert "watch pgpass" in watched  # the worker, not the runtime, asked for it
    services.world.path.write_text(ME + target("a", "me") + '[sinks.pgpass]\npath = "/two/pgpass"\n')
    d.reload("test")
    after = services.events[services.events.index("READY=1") :]
    assert after.count("watch pgpass") == 1 and "unwatch" in after  # the new worker watches; the old one let go
