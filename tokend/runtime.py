"""The daemon's lifetimes: every service is started next to the close it registers on one ``ExitStack`` (Vault
Agent's ``run.Group``, in Python), so a stop, a signal or a start that fails half-way closes exactly what was
started, in the reverse order, and nothing else.

Start-up order (``run``): lift the descriptor limit; the loop; the IPC server (answers status from the start, and
refuses a bad endpoint before any write); the health endpoint (a probe sees "not ready", never "refused": it starts
before the first token attempts); the still-valid tokens the previous daemon left, adopted (``Daemon.adopt``); the
refreshers, then a wait for every identity's first answer (so a restart does not briefly drop still-valid entries);
the proxy's listeners; the sink workers (each following its own files); the watchers of the config file and of the
Azure CLI's profile; then "ready" for a service manager (sd_notify). A stop
asked at any point before that (a signal during start-up) ends it there, writing nothing.

Every reason to stop — a signal, ``tokend stop``, a start that failed — goes down one path: the stack unwinds, and
``exit_code`` maps the reason to the exit code (a failed start raises its ``TokendError``, which carries its own).
The builders (``make_loop``, ``make_server``, ``make_watcher``, ``make_proxy``, ``make_observer``) are passed in,
so tests/unit/test_runtime.py runs the whole sequence in-process with fakes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tokend import envfile, ipc, observe, paths, system
from tokend.config import Config, Listen
from tokend.daemon import Daemon
from tokend.errors import EXIT_OK, TokendError
from tokend.ioloop import IOLoop
from tokend.limits import raise_file_limit
from tokend.proxy import Proxy
from tokend.reload import Plan
from tokend.snapshot import Snapshot
from tokend.watch import Watcher

log = logging.getLogger("tokend.daemon")
FIRST_ATTEMPT_WAIT = 60.0  # seconds to wait for every identity's first answer before the first write


class AlreadyRunning(TokendError):
    pass


class Loop(Protocol):
    """The daemon's event loop (``ioloop.IOLoop``)."""

    executor: Any

    def run(self, coro: Any, timeout: float | None = 30.0) -> Any: ...

    def stop(self) -> None: ...


class Service(Protocol):
    """A server on the loop: the IPC server, the health endpoint."""

    async def start(self) -> None: ...

    def close(self) -> None: ...


class Listeners(Protocol):
    """The proxy: follows each config; tells the snapshot its state."""

    def apply(self, config: Config) -> None: ...

    def status(self, target: str) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


class FileWatcher(Protocol):
    def watch(self, files: Iterable[Path], callback: Callable[[], None]) -> Any: ...

    def unwatch(self, w: Any) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Closable(Protocol):
    def close(self) -> None: ...


MakeLoop = Callable[[], Loop]
MakeServer = Callable[[Daemon, Loop], Service]
MakeWatcher = Callable[[Loop], FileWatcher]
MakeProxy = Callable[[Daemon, Loop], Listeners]
MakeObserver = Callable[[Callable[[], Snapshot], Loop, Listen], Closable]  # raises OSError when it cannot serve


def _loop() -> Loop:
    return IOLoop().start()


def _server(daemon: Daemon, io: Loop) -> Service:
    return ipc.Server(ipc.endpoint(daemon.config.path), daemon.handle, io.executor)


def _watcher(io: Loop) -> FileWatcher:
    assert isinstance(io, IOLoop)  # watch.Watcher debounces on the real loop
    return Watcher(io)


def _proxy(daemon: Daemon, io: Loop) -> Listeners:
    assert isinstance(io, IOLoop)
    # Windows' default loop (proactor) cannot wait on socket readiness, which the proxy's sessions do
    proxy_io = IOLoop(selector=True).start() if system.WINDOWS else io
    return Proxy(proxy_io, daemon.config.path, lambda name: daemon.token_for(name).token)


def _observer(snapshots: Callable[[], Snapshot], io: Loop, where: Listen) -> Closable:
    assert isinstance(io, IOLoop)
    return observe.start(snapshots, io, where)


def run(
    daemon: Daemon,
    *,
    make_loop: MakeLoop = _loop,
    make_server: MakeServer = _server,
    make_watcher: MakeWatcher = _watcher,
    make_proxy: MakeProxy = _proxy,
    make_observer: MakeObserver = _observer,
    notify: Callable[[bytes], None] | None = None,
    first_wait: float = FIRST_ATTEMPT_WAIT,
) -> int:
    """Run ``daemon`` until a signal or an IPC stop; returns the exit code. ``notify``: sd_notify's stand-in."""
    tell = notify or notify_service_manager
    raise_file_limit()  # before any descriptor is handed out: the proxy's budget is what is left of it
    with ExitStack() as stack:
        stack.enter_context(signals(daemon))
        io = make_loop()
        stack.callback(io.stop)
        server = make_server(daemon, io)
        io.run(server.start())
        stack.callback(server.close)
        health = _Health(daemon, io, make_observer)
        health.move(daemon.config.observe)
        stack.callback(health.close)
        stack.callback(daemon.follow(health.follow))
        daemon.adopt(azure_cli_dir() / "azureProfile.json")
        daemon.start_refreshers()
        stack.callback(daemon.stop_refreshers)
        try:
            daemon.wait_first_answers(first_wait)
            if not daemon.stopping():
                _serve(daemon, stack, io, make_proxy, make_watcher)
                tell(b"READY=1")
            daemon.wait()  # signal handlers and IPC set it; no periodic wake-up while idle
        finally:
            tell(b"STOPPING=1")
            log.info("tokend stopping (%s)", daemon.stop_reason)
    return exit_code(daemon.stop_reason)


def _serve(daemon: Daemon, stack: ExitStack, io: Loop, make_proxy: MakeProxy, make_watcher: MakeWatcher) -> None:
    """The second half of the start: the first answers are in (or their wait ran out)."""
    proxy = make_proxy(daemon, io)
    stack.callback(proxy.close)
    daemon.proxy = proxy
    proxy.apply(daemon.config)
    stack.callback(daemon.follow(lambda _plan, config: proxy.apply(config)))
    watcher = make_watcher(io)
    daemon.start_workers(watcher)
    stack.callback(daemon.stop_workers)
    watcher.watch(  # the environment file too: a changed secret or proxy is read at once
        [daemon.config.path, envfile.path_for(daemon.config.path)],
        lambda: daemon.reload_quietly("config or environment file changed"),
    )
    if any(i.source == "azure-cli" for i in daemon.config.identities.values()):
        # az login / logout / account set rewrite the CLI's profile
        watcher.watch([azure_cli_dir() / "azureProfile.json"], lambda: daemon.sign_in_changed(source="azure-cli"))
    watcher.start()
    stack.callback(watcher.stop)  # first to stop: no reload starts while the rest closes
    daemon.catch_up("changed while tokend started")  # a save before the watch began has no event
    log.info(
        "tokend running: %d identities, %d targets, config %s",
        len(daemon.refreshers),
        len(daemon.config.targets),
        daemon.config.path,
    )


def exit_code(reason: str) -> int:
    """The one map from a requested stop's reason (a signal's name, "tokend stop") to the exit code: every stop
    that was asked for is a clean one. A start that failed does not get here: its error carries its code."""
    return EXIT_OK


@dataclass
class _Health:
    """The health and metrics endpoint, moved where each config says (or stopped)."""

    daemon: Daemon
    io: Loop
    make: MakeObserver
    current: Closable | None = None

    def move(self, where: Listen | None) -> None:
        self.close()
        if where is None:
            return
        try:
            self.current = self.make(self.daemon.snapshot, self.io, where)
            self.daemon.observing = where
        except OSError as e:
            log.error("cannot serve health and metrics on %s: %s", where, e.strerror or e)

    def follow(self, plan: Plan, _config: Config) -> None:
        if plan.move_observer:
            self.move(plan.observe)

    def close(self) -> None:
        current, self.current = self.current, None
        self.daemon.observing = None
        if current is not None:
            current.close()


def start(config: Config, stop: threading.Event | None = None, env: envfile.Applied | None = None) -> int:
    """``tokend run``: one daemon for this config, until ``stop`` (set by the signal handlers the command installed
    before its imports, so a signal during start-up ends it cleanly too). ``env``: what `tokend run` read from the
    environment file, so a reload can take it back."""
    with instance_lock(config.path):
        if stop is not None and stop.is_set():
            return EXIT_OK
        daemon = Daemon(config, stop=stop)
        daemon.env = env
        return run(daemon)


def once(config: Config, stop: threading.Event | None = None) -> list[str]:
    """``tokend run --once``: every token fetched and every sink written once, under the same instance lock as the
    daemon; what failed, one line each."""
    with instance_lock(config.path):
        if stop is not None and stop.is_set():
            return []
        return Daemon(config, stop=stop).run_once()


def azure_cli_dir() -> Path:
    """The Azure CLI's config folder: AZURE_CONFIG_DIR, else ~/.azure."""
    return Path(os.environ.get("AZURE_CONFIG_DIR") or Path.home() / ".azure").expanduser()


@contextmanager
def instance_lock(config_path: Path) -> Iterator[None]:
    """Hold the one-daemon-per-config lock; the lock file is removed on a clean exit. The OS releases the lock when
    a daemon dies, even by kill -9 (a later daemon then reuses the file)."""
    path = paths.lock_path(config_path)
    paths.private_dir(path.parent)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        if not system.try_lock(fd):
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() if hasattr(os, "pread") else ""
            os.close(fd)
            raise AlreadyRunning(
                f"another tokend (pid {other or '?'}) is already running for {config_path}; "
                "stop it with `tokend stop` or use another --config"
            )
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the daemon before us removed the file between our open and our lock: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with suppress(FileNotFoundError):
            os.unlink(path)  # still locked while we unlink: nobody can have taken it
        os.close(fd)


@contextmanager
def signals(daemon: Daemon) -> Iterator[None]:
    """SIGTERM, SIGINT (and Windows' Ctrl-Break) stop the daemon; SIGHUP reloads its config. The handlers that
    were there before come back on the way out. Only from the main thread (a test driving ``run`` from another
    thread gets none)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers: dict[int, Callable[[int, Any], None]] = {
        signal.SIGTERM: lambda signum, _f: daemon.stop(signal.Signals(signum).name),
        signal.SIGINT: lambda signum, _f: daemon.stop(signal.Signals(signum).name),
    }
    if hasattr(signal, "SIGBREAK"):  # Windows: Ctrl-Break, and what a console close sends
        handlers[signal.SIGBREAK] = lambda signum, _f: daemon.stop("SIGBREAK")
    if hasattr(signal, "SIGHUP"):
        handlers[signal.SIGHUP] = lambda _s, _f: threading.Thread(
            target=daemon.reload_quietly, args=("SIGHUP",), daemon=True
        ).start()
    previous = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def notify_service_manager(message: bytes) -> None:
    """sd_notify: tell systemd (Type=notify) that we are ready or stopping. A no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not hasattr(socket, "AF_UNIX"):
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(message, address)
    except OSError as e:
        log.warning("could not notify the service manager: %s", e)
