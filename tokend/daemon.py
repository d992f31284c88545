"""The daemon: owns the refreshers, the sink workers, the config watcher, the IPC endpoint, signals and the one
shutdown path.

Start-up: take the per-config instance lock, build sinks (each test-writes, so a bad path fails now), start one
refresher per identity in use, wait for each first answer (so a restart does not briefly drop still-valid entries),
then start the sink workers, answer on IPC, and tell a service manager we are ready. A changed config (file watcher,
SIGHUP or ``tokend reload``) is parsed and checked on the side, then swapped in; identities whose settings did not
change keep their refresher and token. Every reason to stop (signal, IPC stop) ends in ``run``'s return value.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tokend import config as config_mod
from tokend import identities, ipc, paths, sinks
from tokend.config import Config, Target
from tokend.errors import EXIT_FAILURE, EXIT_OK, SinkUnavailable, TokendError, UsageError
from tokend.refresh import Policy
from tokend.refresher import Refresher
from tokend.sinks import Entry
from tokend.sinkworker import SinkWorker
from tokend.token import Token

log = logging.getLogger("tokend.daemon")
FIRST_ATTEMPT_WAIT = 60.0  # seconds to wait for every identity's first answer before the first write


class AlreadyRunning(TokendError):
    pass


class Daemon:
    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.owner = paths.config_id(config.path)
        self.started_at = clock()
        self.config = config
        self.policy = Policy()  # _apply sets it from the config
        self.config_error: str | None = None
        self.refreshers: dict[str, Refresher] = {}
        self.workers: dict[str, SinkWorker] = {}
        self._lock = threading.RLock()
        self._running = False
        self._stop = threading.Event()
        self._stop_reason = "stopped"
        self._apply(config)

    # -- what the sinks and IPC see -------------------------------------------------------------------------------
    def entries(self, kind: str) -> list[Entry]:
        """The entries sink ``kind`` should hold now: every target using it whose identity has a valid token."""
        with self._lock:
            out = []
            for target in self.config.targets.values():
                refresher = self.refreshers.get(target.identity)
                token = refresher.valid_token() if refresher and kind in target.sinks else None
                if token is not None:
                    out.append(Entry(target, token))
            return out

    def token_for(self, name: str | None) -> tuple[Target, Token]:
        with self._lock:
            target = resolve_target(self.config, name)
            r = self.refreshers[target.identity]
        token = r.valid_token()
        if token is None:
            raise TokendError(f"no valid token for target {target.name!r} yet (identity {target.identity}: "
                              f"{r.state}{': ' + r.last_error if r.last_error else ''})")
        return target, token

    def status(self) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            cfg, refreshers, workers = self.config, dict(self.refreshers), dict(self.workers)
        ids = []
        for name, r in refreshers.items():
            token = r.valid_token()
            ids.append({
                "name": name, "source": r.identity.config.source, "state": r.state,
                "principal": token.principal if token else None,
                "expires_on": int(token.expires_on) if token else None,
                "refresh_at": int(r.next_at) if r.next_at else None,
                "last_error": r.last_error, "cache": r.identity.cache,
            })
        targets = []
        for t in cfg.targets.values():
            token = refreshers[t.identity].valid_token()
            per_sink = {}
            for kind in t.sinks:
                w = workers[kind]
                written = w.written.get(t.name)
                if w.last_error:
                    state = "failed"
                elif written is not None and written > now:
                    state = "ok" if token is not None and written == token.expires_on else "pending"
                else:
                    state = "pending" if token is not None else "empty"
                per_sink[kind] = {"state": state, "location": w.sink.location(),
                                  "last_write": int(w.last_write) if w.last_write else None,
                                  "last_error": w.last_error}
            targets.append({"name": t.name, "host": t.host, "port": t.port, "database": t.database, "user": t.user,
                            "identity": t.identity, "sinks": per_sink})
        return {"config": str(cfg.path), "config_error": self.config_error, "pid": os.getpid(),
                "started_at": int(self.started_at), "identities": ids, "targets": targets}

    # -- config changes -----------------------------------------------------------------------------------------
    def reload(self, why: str) -> None:
        """Read the config again and swap it in; a bad one is refused and the running config keeps serving."""
        try:
            new = config_mod.load(self.config.path)
            if new == self.config:
                self.config_error = None
                log.info("config unchanged (%s)", why)
                return
            self._apply(new)
        except TokendError as e:
            self.config_error = str(e)
            log.error("config change refused (%s), still serving the previous one: %s", why, e)
            raise
        self.config_error = None
        log.info("config reloaded (%s): %d identities, %d targets", why, len(self.refreshers), len(new.targets))

    def _apply(self, new: Config) -> None:
        """Make the running parts match ``new``. Sinks are built and checked first, so a bad one refuses it all."""
        # Every kind runs, used or not, so what an earlier config wrote there is cleaned up; only used ones are
        # checked (and a failed check of a used one refuses the config).
        used_kinds = {k for t in new.targets.values() for k in t.sinks}
        built = {}
        for kind in config_mod.SINK_KINDS:
            old = self.workers.get(kind)
            if old is None or old.sink.options != new.sinks[kind].options:
                sink = sinks.build(kind, new.sinks[kind].options, self.owner)
                try:
                    if kind in used_kinds:
                        sink.check()
                except SinkUnavailable as e:  # not usable now (no keychain yet): report and retry, not fatal
                    log.warning("sink %s: %s", kind, e)
                built[kind] = sink
        used = {t.identity for t in new.targets.values()}
        self.policy = Policy(margin=new.refresh_margin)
        with self._lock:
            for part in (*self.refreshers.values(), *self.workers.values()):
                part.policy = self.policy
            retired_workers = [w for k, w in self.workers.items() if k in built]  # replaced by a new place
            retired = [r for n, r in self.refreshers.items()
                       if n not in used or new.identities[n] != r.identity.config]
            for r in retired:
                del self.refreshers[r.identity.name]
            for name in sorted(used - set(self.refreshers)):
                r = Refresher(identities.build(new.identities[name]), self.policy, self.clock, self._tokens_changed,
                              self._login_required)
                self.refreshers[name] = r
                if self._running:
                    r.start()
            for kind, sink in built.items():
                w = SinkWorker(sink, lambda kind=kind: self.entries(kind), self.policy, self.clock)
                self.workers[kind] = w
                if self._running:
                    w.start()
            for w in retired_workers:
                if self.workers.get(w.sink.kind) is w:
                    del self.workers[w.sink.kind]
            self.config = new
        for r in retired:
            r.stop()
        for w in retired_workers:
            w.stop()
            try:
                w.sink.sync([])  # what we wrote at the old place goes
            except TokendError as e:
                log.warning("could not clean %s: %s", w.sink.location(), e)
        self._tokens_changed()

    def _tokens_changed(self) -> None:
        for w in list(self.workers.values()):
            w.poke()

    def _login_required(self, identity: str, reason: str) -> None:
        """Once per episode: tell the person, on the desktop, what to run."""
        from tokend import notify

        threading.Thread(target=notify.notify, args=(f"tokend: sign-in needed for {identity}", reason),
                         name="notify", daemon=True).start()

    def sign_in_changed(self, source: str | None = None, identity: str | None = None) -> None:
        """A sign-in changed outside the daemon: refresh the identities it concerns now."""
        with self._lock:
            chosen = [r for n, r in self.refreshers.items()
                      if (identity is None or n == identity) and (source is None or r.identity.config.source == source)]
        for r in chosen:
            r.sign_in_changed()

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
        from tokend.watch import FileWatcher

        server = ipc.Server(paths.socket_path(self.config.path), self._handle)
        watchers = [FileWatcher([self.config.path], lambda: self._reload_quietly("config file changed")),
                    # az login / logout / account set rewrite the CLI's profile
                    FileWatcher([azure_cli_dir() / "azureProfile.json"],
                                lambda: self.sign_in_changed(source="azure-cli"))]
        with _signals(self):
            with self._lock:
                self._running = True
                for r in self.refreshers.values():
                    r.start()
            deadline = self.clock() + FIRST_ATTEMPT_WAIT
            for r in list(self.refreshers.values()):
                while not r.first_done.wait(0.2) and not self._stop.is_set() and self.clock() < deadline:
                    pass
            with self._lock:
                for w in self.workers.values():
                    w.start()
            server.start()
            for watcher in watchers:
                watcher.start()
            log.info("tokend running: %d identities, %d targets, config %s", len(self.refreshers),
                     len(self.config.targets), self.config.path)
            _notify_service_manager(b"READY=1")
            self._stop.wait()  # signal handlers and IPC set it; no periodic wake-up while idle
        _notify_service_manager(b"STOPPING=1")
        log.info("tokend stopping (%s)", self._stop_reason)
        for watcher in watchers:
            watcher.stop()
        server.close()
        with self._lock:
            parts = [*self.refreshers.values(), *self.workers.values()]
        for part in parts:
            part.stop()
        for part in parts:
            part.join(5.0)
        return EXIT_OK

    def _reload_quietly(self, why: str) -> None:
        with suppress(TokendError):  # logged, and shown in status
            self.reload(why)

    def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return self.status()
        if op == "token":
            target, token = self.token_for(request.get("target"))
            return {"token": token.value, "expires_on": token.expires_on, "target": target_dict(target)}
        if op == "sign-in-changed":
            self.sign_in_changed(identity=request.get("identity"))
            return {"refreshing": True}
        if op == "reload":
            self.reload("tokend reload")
            return {"reloaded": True}
        if op == "stop":
            self.stop("tokend stop")
            return {"stopping": True}
        raise UsageError(f"unknown request {op!r}")


def azure_cli_dir() -> Path:
    """The Azure CLI's config folder: AZURE_CONFIG_DIR, else ~/.azure."""
    return Path(os.environ.get("AZURE_CONFIG_DIR") or Path.home() / ".azure").expanduser()


def target_dict(t: Target) -> dict[str, Any]:
    return {"name": t.name, "host": t.host, "port": t.port, "database": t.database, "user": t.user}


def resolve_target(config: Config, name: str | None) -> Target:
    """The target called ``name``, or the only one when no name is given."""
    if name is None:
        if len(config.targets) == 1:
            return next(iter(config.targets.values()))
        names = ", ".join(config.targets) or "none"
        raise UsageError(f"name a target (configured: {names}); e.g. tokend token {next(iter(config.targets), 'T')}")
    if name not in config.targets:
        names = ", ".join(config.targets) or "none"
        raise UsageError(f"no target {name!r} in {config.path} (configured: {names})")
    return config.targets[name]


@contextmanager
def instance_lock(config_path: Path) -> Iterator[None]:
    """Hold the one-daemon-per-config lock. The OS releases it when the process dies, even by kill -9."""
    path = paths.lock_path(config_path)
    paths.private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if sys.platform != "win32":
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise AlreadyRunning(f"another tokend (pid {other}) is already running for {config_path}; "
                                     "stop it with `tokend stop` or use another --config") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@contextmanager
def _signals(daemon: Daemon) -> Iterator[None]:
    handlers: dict[int, Callable[[int, Any], None]] = {
        signal.SIGTERM: lambda signum, _f: daemon.stop(signal.Signals(signum).name),
        signal.SIGINT: lambda signum, _f: daemon.stop(signal.Signals(signum).name),
    }
    if hasattr(signal, "SIGHUP"):
        handlers[signal.SIGHUP] = lambda _s, _f: threading.Thread(
            target=daemon._reload_quietly, args=("SIGHUP",), daemon=True).start()
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


def start(config: Config, once: bool = False) -> int:
    """``tokend run``: one daemon for this config, or one pass with ``once``."""
    with instance_lock(config.path):
        daemon = Daemon(config)
        return daemon.run_once() if once else daemon.run()
