"""The daemon: owns the refreshers, the sink workers, the watchers, the IPC endpoint, signals and the one shutdown
path.

``Daemon`` is built from a config and the builders it uses for identities and sinks (``build_identity``,
``build_sink``: tests pass fakes and drive ``apply``, ``status`` and ``handle`` in-process). ``run`` wires it to
the world.

Start-up: take the per-config instance lock, build sinks (each test-writes, so a bad path fails now), start one
refresher per identity in use, wait for each first answer (so a restart does not briefly drop still-valid
entries), then start the sink workers, answer on IPC, and tell a service manager we are ready. A stop requested at
any point before that (a signal during start-up) ends it there, writing nothing.
A changed config (file watcher, SIGHUP or ``tokend reload``) is parsed and checked on the side, then swapped in,
one reload at a time; identities whose settings did not change keep their refresher and token. Every reason to
stop (signal, IPC stop) ends in ``run``'s return value.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokend import config as config_mod
from tokend import identities, ipc, paths, principal, sinks, system
from tokend.clock import SYSTEM, Clock
from tokend.config import Config, IdentityConfig
from tokend.errors import EXIT_FAILURE, EXIT_OK, ConfigError, SinkUnavailable, TokendError, UsageError
from tokend.kinds import SINKS
from tokend.refresh import Policy
from tokend.refresher import Refresher, TokenSource
from tokend.sinks import Entry, Sink
from tokend.sinkworker import SinkWorker

if TYPE_CHECKING:
    from tokend.ioloop import IOLoop
    from tokend.observe import Observer
    from tokend.proxy import Proxy

log = logging.getLogger("tokend.daemon")
FIRST_ATTEMPT_WAIT = 60.0  # seconds to wait for every identity's first answer before the first write
EMPTY_CONFIG_WAIT = 1.0  # seconds an empty config file gets to be written (an editor saving in place) on a reload

IdentityBuilder = Callable[[IdentityConfig, Clock], TokenSource]
SinkBuilder = Callable[[str, Any, str], Sink]


class AlreadyRunning(TokendError):
    pass


class Daemon:
    def __init__(
        self,
        config: Config,
        clock: Clock = SYSTEM,
        build_identity: IdentityBuilder = identities.build,
        build_sink: SinkBuilder = sinks.build,
        stop: threading.Event | None = None,
    ) -> None:
        self.clock = clock
        self.build_identity = build_identity
        self.build_sink = build_sink
        self.owner = paths.config_id(config.path)
        self.started_at = clock.now()
        self.config = config
        self.policy = Policy()  # apply sets it from the config
        self.config_error: str | None = None
        self.refreshers: dict[str, Refresher] = {}
        self.workers: dict[str, SinkWorker] = {}
        self.on_workers_changed: Callable[[dict[str, SinkWorker], list[SinkWorker]], None] | None = None
        self.proxy: Proxy | None = None  # the local proxy's listeners, once running
        self.io: IOLoop | None = None  # the daemon's loop, once running
        self.observer: Observer | None = None  # the health and metrics endpoint, when configured
        self._lock = threading.RLock()
        self._reload_lock = threading.Lock()  # one reload at a time, whoever asked
        self._running = False
        self._stop = stop or threading.Event()
        self._stop_reason = "stopped"
        self.reloads: Counter[str] = Counter()  # accepted, refused
        self.apply(config)

    # -- what the sinks and IPC see -------------------------------------------------------------------------------
    def entries(self, kind: str) -> list[Entry]:
        """The entries sink ``kind`` should hold now: every target using it whose identity has a valid token."""
        with self._lock:
            out = []
            for target in self.config.targets.values():
                refresher = self.refreshers.get(target.identity)
                token = refresher.valid_token() if refresher and kind in target.sinks else None
                # user = "@principal": the entry names the token's own principal; none while it cannot be named
                held = principal.resolved(target, token.claims) if token is not None else None
                if token is not None and held is not None:
                    out.append(Entry(held, token))
            return out

    def token_for(self, name: str | None) -> ipc.TokenAnswer:
        with self._lock:
            target = self.config.target(name)
            r = self.refreshers[target.identity]
        token = r.valid_token()
        if token is None:
            raise TokendError(
                f"no valid token for target {target.name!r} yet (identity {target.identity}: "
                f"{r.state}{': ' + r.last_error if r.last_error else ''}); see `tokend status`"
            )
        return ipc.TokenAnswer(token.value, token.expires_on, principal.resolve(target, token.claims).as_dict())

    def status(self) -> dict[str, Any]:
        now = self.clock.now()
        with self._lock:
            cfg, refreshers, workers = self.config, dict(self.refreshers), dict(self.workers)
        ids = []
        for name, r in refreshers.items():
            token = r.valid_token()
            ids.append(
                {
                    "name": name,
                    "source": r.identity.config.source,
                    "state": r.state,
                    "principal": token.principal if token else None,
                    # the true end of its life (Token.remaining), whatever the wall clock did since it arrived
                    "expires_on": int(now + token.remaining(self.clock)) if token else None,
                    "refresh_at": int(now + max(0.0, r.due_in())),
                    "last_error": r.last_error,
                    "cache": r.identity.cache,
                }
            )
        targets = []
        for t in cfg.targets.values():
            token = refreshers[t.identity].valid_token()
            per_sink = {kind: workers[kind].status_of(t.name, token) for kind in t.sinks}
            proxy = self.proxy.status(t.name) if self.proxy is not None else None
            # the user clients log in as: ``user`` itself, or for "@principal" the token's principal (None: not yet)
            resolved = principal.user_for(t, token.claims if token is not None else {})
            targets.append({**t.as_dict(), "resolved_user": resolved, "sinks": per_sink, "proxy": proxy})
        return {
            "config": str(cfg.path),
            "config_error": self.config_error,
            "pid": os.getpid(),
            "started_at": int(self.started_at),
            "identities": ids,
            "targets": targets,
        }

    # -- config changes -----------------------------------------------------------------------------------------
    def reload(self, why: str) -> None:
        """Read the config again and swap it in; a bad one is refused and the running config keeps serving."""
        with self._reload_lock:
            try:
                new = self._load_written()
                if new == self.config:
                    self.config_error = None
                    log.info("config unchanged (%s)", why)
                    return
                self.apply(new)
            except TokendError as e:
                self.config_error = str(e)
                self.reloads["refused"] += 1
                log.error("config change refused (%s), still serving the previous one: %s", why, e)
                raise
            self.config_error = None
            self.reloads["accepted"] += 1
            log.info("config reloaded (%s): %d identities, %d targets", why, len(self.refreshers), len(new.targets))

    def _load_written(self) -> Config:
        """The config as its writer left it. An editor that saves in place truncates the file and then writes it: a
        reload landing in between finds it empty, which would retire every target. So an empty file is read again
        for up to EMPTY_CONFIG_WAIT seconds, then refused (`tokend stop` is how to hold nothing on purpose)."""
        path = self.config.path
        deadline = time.monotonic() + EMPTY_CONFIG_WAIT
        while not (data := config_mod.read(path)).strip():
            if time.monotonic() >= deadline or self._stop.wait(0.02):
                raise ConfigError(
                    path,
                    "",
                    "is empty; the running config keeps serving. Write the config back, "
                    "or stop tokend with `tokend stop`",
                )
        return config_mod.decode(data, path)

    def apply(self, new: Config) -> None:
        """Make the running parts match ``new``. Sinks are built and checked first, so a bad one refuses it all."""
        # Every kind runs, used or not, so what an earlier config wrote there is cleaned up; only used ones are
        # checked (and a failed check of a used one refuses the config).
        used_kinds = {k for t in new.targets.values() for k in t.sinks}
        built = {}
        for kind in SINKS:
            old = self.workers.get(kind)
            if old is None or old.sink.options != new.sinks[kind].options:
                sink = self.build_sink(kind, new.sinks[kind].options, self.owner)
                try:
                    if kind in used_kinds:
                        sink.check()
                except SinkUnavailable as e:  # not usable now (no keychain yet): report and retry, not fatal
                    log.warning("sink %s: %s", kind, e)
                built[kind] = sink
        used = {t.identity for t in new.targets.values()}
        self.policy = Policy(margin=new.refresh_margin)
        with self._lock:
            for r in self.refreshers.values():
                r.policy = self.policy
            for w in self.workers.values():
                w.policy = self.policy
            retired_workers = [w for k, w in self.workers.items() if k in built]  # replaced by a new place
            retired = [r for n, r in self.refreshers.items() if n not in used or new.identities[n] != r.identity.config]
            for r in retired:
                del self.refreshers[r.identity.name]
            for name in sorted(used - set(self.refreshers)):
                r = Refresher(
                    self.build_identity(new.identities[name], self.clock),
                    self.policy,
                    self.clock,
                    self._tokens_changed,
                    self._login_required,
                )
                self.refreshers[name] = r
                if self._running:
                    r.start()
            for kind, sink in built.items():
                w = SinkWorker(sink, functools.partial(self.entries, kind), self.policy, self.clock)
                self.workers[kind] = w
                if self._running:
                    w.start()
            self.config = new
            places = {w.sink.place() for w in self.workers.values()}
        for r in retired:
            r.stop()
        for w in retired_workers:
            w.stop()
        for w in retired_workers:
            w.join(5.0)
            if w.sink.place() in places:
                continue  # the new sink writes the same place: cleaning it would undo the new sink's write
            try:
                w.sink.sync([])  # what we wrote at the old place goes
            except TokendError as e:
                log.warning("could not clean %s: %s", w.sink.location(), e)
        if self.on_workers_changed is not None and built:
            self.on_workers_changed({k: self.workers[k] for k in built}, retired_workers)
        if self.proxy is not None:
            self.proxy.apply(new)
        if self.io is not None and (self.observer is None or self.observer.where != new.observe):
            self._observe(new)
        self._tokens_changed()

    def _observe(self, config: Config) -> None:
        """(Re)start the health and metrics endpoint where ``config`` says (or stop it)."""
        if self.observer is not None:
            self.observer.close()
            self.observer = None
        if config.observe is not None and self.io is not None:
            from tokend import observe

            try:
                self.observer = observe.start(self, self.io, config.observe)
            except OSError as e:
                log.error("cannot serve health and metrics on %s: %s", config.observe, e.strerror or e)

    def _tokens_changed(self) -> None:
        for w in list(self.workers.values()):
            w.poke()

    def _login_required(self, identity: str, reason: str) -> None:
        """Once per episode: tell the person, on the desktop, what to run."""
        from tokend import notify

        threading.Thread(
            target=notify.notify, args=(f"tokend: sign-in needed for {identity}", reason), name="notify", daemon=True
        ).start()

    def sign_in_changed(self, source: str | None = None, identity: str | None = None) -> None:
        """A sign-in changed outside the daemon: refresh the identities it concerns now."""
        with self._lock:
            chosen = [
                r
                for n, r in self.refreshers.items()
                if (identity is None or n == identity) and (source is None or r.identity.config.source == source)
            ]
        for r in chosen:
            r.sign_in_changed()

    # -- IPC ------------------------------------------------------------------------------------------------------
    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one IPC request (``ipc.OPS``)."""
        op = request.get("op")
        if op == ipc.STATUS:
            return self.status()
        if op == ipc.TOKEN:
            answer = self.token_for(_name(request, "target"))
            return {"token": answer.token, "expires_on": answer.expires_on, "target": answer.target}
        if op == ipc.SIGN_IN_CHANGED:
            self.sign_in_changed(identity=_name(request, "identity"))
            return {"refreshing": True}
        if op == ipc.RELOAD:
            self.reload("tokend reload")
            return {"reloaded": True}
        if op == ipc.STOP:
            self.stop("tokend stop")
            return {"stopping": True}
        raise UsageError(f"unknown request {op!r}; operations: {', '.join(ipc.OPS)}")

    # -- running ------------------------------------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        self._stop_reason = reason
        self._stop.set()

    def run_once(self) -> int:
        """Fetch every identity once, write every sink once. 0 when all of it worked, else 1 with the reasons."""
        for r in self.refreshers.values():
            r.step()
        failed = [f"identity {n}: {r.last_error}" for n, r in self.refreshers.items() if r.valid_token() is None]
        for kind, w in self.workers.items():
            if not w.sync():
                failed.append(f"sink {kind}: {w.last_error}")
        for r in self.refreshers.values():
            r.identity.close()
        for line in failed:
            print(f"tokend: {line}", file=sys.stderr)
        return EXIT_FAILURE if failed else EXIT_OK

    def run(self) -> int:
        """Run until a signal or an IPC stop. Returns the exit code."""
        from tokend.ioloop import IOLoop
        from tokend.limits import raise_file_limit
        from tokend.proxy import Proxy
        from tokend.watch import Watcher

        raise_file_limit()  # before any descriptor is handed out: the proxy's budget is what is left of it
        io = IOLoop().start()
        server = ipc.Server(ipc.endpoint(self.config.path), self.handle, io.executor)
        watcher = Watcher(io)
        sink_watches: dict[str, Any] = {}

        def watch_sinks(new: dict[str, SinkWorker], retired: list[SinkWorker]) -> None:
            for w in retired:
                if w.sink.kind in sink_watches:
                    watcher.unwatch(sink_watches.pop(w.sink.kind))
            for kind, w in new.items():
                if w.sink.watched():  # someone replacing the file (a dotfile manager): write our block again
                    sink_watches[kind] = watcher.watch(w.sink.watched(), w.poke)

        try:
            with _signals(self):
                io.run(server.start())  # answers status from the start; refuses a bad endpoint before any write
                self.io = io
                self._observe(self.config)  # health answers from the start too: a probe sees "not ready", not refused
                with self._lock:
                    self._running = True
                    for r in self.refreshers.values():
                        r.start()
                deadline = self.clock.boot() + FIRST_ATTEMPT_WAIT
                for r in list(self.refreshers.values()):
                    while not r.first_done.wait(0.2) and not self._stop.is_set() and self.clock.boot() < deadline:
                        pass
                if not self._stop.is_set():
                    proxy_io = IOLoop(selector=True).start() if system.WINDOWS else io
                    self.proxy = Proxy(proxy_io, self.config.path, lambda name: self.token_for(name).token)
                    self.proxy.apply(self.config)
                    with self._lock:
                        for w in self.workers.values():
                            w.start()
                        watch_sinks(dict(self.workers), [])
                        self.on_workers_changed = watch_sinks
                    watcher.watch([self.config.path], lambda: self._reload_quietly("config file changed"))
                    if any(i.source == "azure-cli" for i in self.config.identities.values()):
                        # az login / logout / account set rewrite the CLI's profile
                        watcher.watch(
                            [azure_cli_dir() / "azureProfile.json"], lambda: self.sign_in_changed(source="azure-cli")
                        )
                    watcher.start()
                    log.info(
                        "tokend running: %d identities, %d targets, config %s",
                        len(self.refreshers),
                        len(self.config.targets),
                        self.config.path,
                    )
                    _notify_service_manager(b"READY=1")
                self._stop.wait()  # signal handlers and IPC set it; no periodic wake-up while idle
        finally:
            if self._running:
                _notify_service_manager(b"STOPPING=1")
                log.info("tokend stopping (%s)", self._stop_reason)
            watcher.stop()
            server.close()
            if self.observer is not None:
                self.observer.close()
            if self.proxy is not None:
                self.proxy.close()
            with self._lock:
                refreshers, workers = list(self.refreshers.values()), list(self.workers.values())
            for r in refreshers:
                r.stop()
            for w in workers:
                w.stop()
            for w in workers:
                w.join(5.0)  # a write in progress finishes: the file is never left half-done
            for r in refreshers:
                r.join(0.5)  # a token request in flight is abandoned (its thread is a daemon thread)
            io.stop()
        return EXIT_OK

    def _reload_quietly(self, why: str) -> None:
        with suppress(TokendError):  # logged, and shown in status
            self.reload(why)


def _name(request: dict[str, Any], key: str) -> str | None:
    value = request.get(key)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"bad request: {key} must be a name or null")
    return value


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
def _signals(daemon: Daemon) -> Iterator[None]:
    handlers: dict[int, Callable[[int, Any], None]] = {
        signal.SIGTERM: lambda signum, _f: daemon.stop(signal.Signals(signum).name),
        signal.SIGINT: lambda signum, _f: daemon.stop(signal.Signals(signum).name),
    }
    if hasattr(signal, "SIGBREAK"):  # Windows: Ctrl-Break, and what a console close sends
        handlers[signal.SIGBREAK] = lambda signum, _f: daemon.stop("SIGBREAK")
    if hasattr(signal, "SIGHUP"):
        handlers[signal.SIGHUP] = lambda _s, _f: threading.Thread(
            target=daemon._reload_quietly, args=("SIGHUP",), daemon=True
        ).start()
    previous = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _notify_service_manager(message: bytes) -> None:
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


def start(config: Config, once: bool = False, stop: threading.Event | None = None) -> int:
    """``tokend run``: one daemon for this config, or one pass with ``once``. ``stop``: set by the signal handlers
    the command installed before its imports, so a signal during start-up ends it cleanly too."""
    with instance_lock(config.path):
        if stop is not None and stop.is_set():
            return EXIT_OK
        daemon = Daemon(config, stop=stop)
        return daemon.run_once() if once else daemon.run()
