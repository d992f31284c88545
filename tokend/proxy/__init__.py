"""The local auth proxy: clients connect with no password at all and the proxy logs in to the target's server with
the daemon's current token for them.

Per target, listeners from its ``listen`` list: ``unix:PORT`` (``.s.PGSQL.PORT`` in this config's 0700 folder under
the runtime folder; libpq: ``host=<that folder> port=PORT``) and loopback TCP (``127.0.0.1:PORT``, ``[::1]:PORT``).
They run on one event loop (no thread per connection), share the daemon's refreshers (one token per identity,
however many connections), and follow each config: listeners are added, moved and removed; a changed target is
used by new connections; open sessions finish untouched. Status per target: where it listens, open and total
connections, the last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokend import paths, system
from tokend.config import Config, Listen, Target
from tokend.ioloop import IOLoop
from tokend.proxy import tls
from tokend.proxy.conn import relay, resolve
from tokend.proxy.peer import tcp_peer_uid
from tokend.proxy.session import Listening, TokenFor, start

log = logging.getLogger("tokend.proxy")
START_TIMEOUT = 30.0  # seconds a connection may take from accept to logged in
RETRY = 10.0  # seconds between attempts to open a listener that failed (a port in use)


@dataclass
class Listener:
    address: Listen
    target: Target
    sock: socket.socket | None = None
    task: asyncio.Task[None] | None = None
    open: int = 0
    total: int = 0
    last_error: str | None = None
    host: str = ""  # where clients connect: the folder (Unix socket) or the address
    sessions: set[asyncio.Task[None]] = field(default_factory=set)


class Proxy:
    def __init__(self, io: IOLoop, config_path: Path, token_for: TokenFor) -> None:
        self.io = io
        self.folder = paths.proxy_dir(config_path)
        self.state = paths.config_state_dir(config_path)
        self.token_for = token_for
        self.listeners: dict[tuple[str, Listen], Listener] = {}
        self._local_tls: ssl.SSLContext | None = None
        self.certificate: Path | None = None

    # -- from the daemon's threads ----------------------------------------------------------------------------------
    def apply(self, config: Config) -> None:
        """Make the listeners match ``config`` (on the loop; returns when done)."""
        self.io.run(self._apply(config))

    def status(self, target: str) -> dict[str, Any] | None:
        mine = [ls for (name, _), ls in list(self.listeners.items()) if name == target]
        if not mine:
            return None
        errors = [ls.last_error for ls in mine if ls.last_error]
        return {
            "listen": [{"host": ls.host, "port": ls.address.port} for ls in mine],
            "open": sum(ls.open for ls in mine),
            "total": sum(ls.total for ls in mine),
            "last_error": errors[0] if errors else None,
            "certificate": str(self.certificate) if self.certificate else None,
        }

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.io.run(self._apply(None), timeout=10)

    # -- on the loop -------------------------------------------------------------------------------------------------
    async def _apply(self, config: Config | None) -> None:
        wanted = {(t.name, a): t for t in (config.targets.values() if config else []) for a in t.listen}
        for key in [k for k in self.listeners if k not in wanted]:
            self._stop(self.listeners.pop(key))
        for key, target in wanted.items():
            ls = self.listeners.get(key)
            if ls is None:
                ls = self.listeners[key] = Listener(key[1], target)
                self._open(ls)
            else:
                ls.target = target  # new connections use the new settings; open ones keep theirs

    def _open(self, ls: Listener) -> None:
        if ls.task is not None:
            return
        try:
            if not ls.address.unix and self._local_tls is None:  # made before the first client, so status shows it
                self._local_tls, self.certificate = tls.local_context(self.state)
            ls.sock = self._bind(ls)
        except OSError as e:
            ls.last_error = (
                f"cannot listen on {self._where(ls)}: {e.strerror or e}; tokend tries again every {RETRY:.0f} s"
            )
            log.warning("proxy for target %s: %s", ls.target.name, ls.last_error)
            asyncio.get_running_loop().call_later(RETRY, self._retry, ls)
            return
        ls.last_error = None
        ls.task = asyncio.get_running_loop().create_task(self._accept(ls))
        log.info("proxy for target %s listening on %s", ls.target.name, self._where(ls))

    def _retry(self, ls: Listener) -> None:
        if any(x is ls for x in self.listeners.values()):
            self._open(ls)

    def _where(self, ls: Listener) -> str:
        a = ls.address
        return str(self.folder / f".s.PGSQL.{a.port}") if a.unix else f"{a.host}:{a.port}"

    def _bind(self, ls: Listener) -> socket.socket:
        a = ls.address
        if a.unix:
            paths.private_dir(self.folder)
            path = self.folder / f".s.PGSQL.{a.port}"
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: we hold the config's instance lock
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)
            try:
                sock.bind(str(path))
            finally:
                os.umask(old)
            ls.host = str(self.folder)
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in a.host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((a.host, a.port))
            ls.host = a.host
        sock.listen(1024)
        sock.setblocking(False)
        return sock

    def _stop(self, ls: Listener) -> None:
        if ls.task is not None:
            ls.task.cancel()
        if ls.sock is not None:
            if ls.address.unix:
                with contextlib.suppress(OSError):
                    os.unlink(ls.sock.getsockname())
            ls.sock.close()
        log.info("proxy for target %s: stopped listening on %s (open sessions go on)", ls.target.name, self._where(ls))

    def _listening(self, ls: Listener) -> Listening:
        if ls.address.unix:
            return Listening(
                ls.target, None, tls.upstream_context(ls.target.sslrootcert), self._where(ls), system.peer_uid
            )
        return Listening(
            ls.target, self._local_tls, tls.upstream_context(ls.target.sslrootcert), self._where(ls), tcp_peer_uid
        )

    async def _accept(self, ls: Listener) -> None:
        loop = asyncio.get_running_loop()
        assert ls.sock is not None
        while True:
            try:
                sock, _ = await loop.sock_accept(ls.sock)
            except asyncio.CancelledError:
                raise
            except OSError as e:  # out of file descriptors, …: say so, breathe, go on
                ls.last_error = f"accept failed: {e.strerror or e}"
                log.warning("proxy %s: %s", self._where(ls), ls.last_error)
                await asyncio.sleep(0.5)
                continue
            ls.open += 1
            ls.total += 1
            task = loop.create_task(self._session(ls, sock))
            ls.sessions.add(task)
            task.add_done_callback(ls.sessions.discard)

    async def _session(self, ls: Listener, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        try:
            pair = await asyncio.wait_for(start(loop, sock, self._listening(ls), self.token_for), START_TIMEOUT)
        except (asyncio.TimeoutError, ssl.SSLError, OSError) as e:
            log.info("proxy %s: a connection did not start: %s", self._where(ls), e or type(e).__name__)
            with contextlib.suppress(OSError):
                sock.close()
            pair = None
        except Exception:
            log.exception("proxy %s: session failed", self._where(ls))
            with contextlib.suppress(OSError):
                sock.close()
            pair = None
        if pair is None:
            ls.open -= 1
            return
        relay(pair[0], pair[1], lambda: resolve(done))
        try:
            await done
        finally:
            ls.open -= 1


def raise_file_limit(wanted: int = 8192) -> None:
    """Two descriptors per proxied connection: lift the soft limit towards the hard one (the usual 1024 would stop
    at ~500 connections)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
