"""The daemon: owns the refreshers, the sink workers, the IPC endpoint, signals and the one shutdown path.

Start-up order: take the per-config instance lock, build sinks (each test-writes, so a bad path fails now), start one
refresher per identity, wait for each first attempt (so a restart does not briefly drop still-valid entries), then
start the sink workers and answer on IPC. Every reason to stop (signal, IPC stop, fatal error) ends in ``run``'s
return value, the process's exit code.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tokend import identities, ipc, paths, sinks
from tokend.config import Config, Target
from tokend.errors import EXIT_FAILURE, EXIT_OK, TokendError, UsageError
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
    def __init__(self, config: Config, clock: Callable[[], float] = time.time, policy: Policy | None = None) -> None:
        self.config = config
        self.clock = clock
        self.policy = policy or Policy(margin=config.refresh_margin)
        self.owner = paths.config_id(config.path)
        self.started_at = clock()
        self._stop = threading.Event()
        self._stop_reason = "stopped"
        self.refreshers: dict[str, Refresher] = {
            name: Refresher(identities.build(ic), self.policy, clock, self._tokens_changed)
            for name, ic in config.identities.items()
            if config.targets_of(name)
        }
        self.workers: dict[str, SinkWorker] = {}
        for kind in sorted({k for t in config.targets.values() for k in t.sinks} | {"pgpass"}):
            sink = sinks.build(kind, config.sinks[kind].options, self.owner)
            sink.check()
            self.workers[kind] = SinkWorker(sink, lambda kind=kind: self.entries(kind), self.policy, clock)

    # -- what the sinks and IPC see -------------------------------------------------------------------------------
    def entries(self, kind: str) -> list[Entry]:
        """The entries sink ``kind`` should hold now: every target using it whose identity has a valid token."""
        out = []
        for target in self.config.targets.values():
            if kind not in target.sinks:
                continue
            token = self.refreshers[target.identity].valid_token()
            if token is not None:
                out.append(Entry(target, token))
        return out

    def token_for(self, name: str | None) -> tuple[Target, Token]:
        target = resolve_target(self.config, name)
        token = self.refreshers[target.identity].valid_token()
        if token is None:
            r = self.refreshers[target.identity]
            raise TokendError(f"no valid token for target {target.name!r} yet (identity {target.identity}: "
                              f"{r.state}{': ' + r.last_error if r.last_error else ''})")
        return target, token

    def status(self) -> dict[str, Any]:
        now = self.clock()
        ids = []
        for name, r in self.refreshers.items():
            token = r.valid_token()
            ids.append({
                "name": name, "source": r.identity.config.source, "state": r.state,
                "principal": token.principal if token else None,
                "expires_on": int(token.expires_on) if token else None,
                "refresh_at": int(r.next_at) if r.next_at else None,
                "last_error": r.last_error,
            })
        targets = []
        for t in self.config.targets.values():
            token = self.refreshers[t.identity].valid_token()
            per_sink = {}
            for kind in t.sinks:
                w = self.workers[kind]
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
        return {"config": str(self.config.path), "pid": os.getpid(), "started_at": int(self.started_at),
                "identities": ids, "targets": targets}

    def stop(self, reason: str) -> None:
        self._stop_reason = reason
        self._stop.set()

    def _tokens_changed(self) -> None:
        for w in self.workers.values():
            w.poke()

    # -- running ------------------------------------------------------------------------------------------------
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
        server = ipc.Server(paths.socket_path(self.config.path), self._handle)
        with _signals(self):
            for r in self.refreshers.values():
                r.start()
            deadline = self.clock() + FIRST_ATTEMPT_WAIT
            for r in self.refreshers.values():
                while not r.first_done.wait(0.2) and not self._stop.is_set() and self.clock() < deadline:
                    pass
            for w in self.workers.values():
                w.start()
            server.start()
            log.info("tokend running: %d identities, %d targets, config %s", len(self.refreshers),
                     len(self.config.targets), self.config.path)
            while not self._stop.wait(1.0):
                pass
        log.info("tokend stopping (%s)", self._stop_reason)
        server.close()
        for part in (*self.refreshers.values(), *self.workers.values()):
            part.stop()
        for part in (*self.refreshers.values(), *self.workers.values()):
            part.join(5.0)
        return EXIT_OK

    def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return self.status()
        if op == "token":
            target, token = self.token_for(request.get("target"))
            return {"token": token.value, "expires_on": token.expires_on, "target": target_dict(target)}
        if op == "stop":
            self.stop("tokend stop")
            return {"stopping": True}
        raise UsageError(f"unknown request {op!r}")


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
    names = ["SIGTERM", "SIGINT"]
    previous = {}
    for name in names:
        sig = getattr(signal, name)
        previous[sig] = signal.signal(sig, lambda signum, _frame: daemon.stop(signal.Signals(signum).name))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def start(config: Config, once: bool = False) -> int:
    """``tokend run``: one daemon for this config, or one pass with ``once``."""
    with instance_lock(config.path):
        daemon = Daemon(config)
        return daemon.run_once() if once else daemon.run()
