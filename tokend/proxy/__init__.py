"""The local auth proxy: clients connect with no password at all and the proxy logs in to the target's server with
the daemon's current token for them.

Per target, listeners from its ``listen`` list: ``unix:PORT`` (``.s.PGSQL.PORT`` in this config's 0700 folder under
the runtime folder; libpq: ``host=<that folder> port=PORT``) and loopback TCP (``127.0.0.1:PORT``, ``[::1]:PORT``).
They run on one event loop (no thread per connection), share the daemon's refreshers (one token per identity,
however many connections) and one upstream TLS context per CA file, and follow each config: listeners are added,
moved and removed; a changed target is used by new connections; open sessions finish untouched. Status per target:
where it listens, open and total connections, the last error.

Fail closed, bounded (DESIGN.md, "Security rules"; ``tokend.limits``):
- Who connected is checked at accept, before a byte is read: the Unix socket's peer credentials, the TCP client
  socket's owner (``peer``). A connection whose owner cannot be proven to be this user — the lookup failed (out of
  descriptors, netlink, no /proc), the client is gone, another uid — is sent one ErrorResponse and closed at once.
  Where the OS cannot tell the owner of a TCP client at all (macOS, Windows), a TCP listener does not open unless
  the target says ``allow_any_local_user = true``.
- Descriptors: every session takes two from ``limits.Budget`` at accept (the reserve stays the daemon's); past it,
  new connections are turned away with "too many connections".
- Before the start-up message: at most ``PENDING_PER_LISTENER`` connections per listener and ``PENDING_PER_UID``
  per uid, the oldest evicted first (``limits.Pending``); ``HANDSHAKE_TIMEOUT`` seconds and ``wire.MAX_STARTUP``
  bytes per message for the client's part. The server's part of the login has ``LOGIN_TIMEOUT``, PostgreSQL's own
  authentication_timeout.
- Cancel requests being forwarded: at most ``CANCELS_PER_LISTENER`` at once.
- Log lines about connections go through ``logs.Aggregated``; an accept error is the listener's error until the
  next accept works.

The audit log (``[proxy] audit_log``, on by default; ``tokend.proxy.audit``): a JSON line per session let in —
refused by tokend or the server, or logged in and relayed — with the client's uid, pid and executable. Connections
turned away at accept (another user's, an unproven owner, no descriptors left) are not sessions: another local user
could otherwise rotate the member's record away; they are in the log, aggregated. A TCP client's pid is found from
its socket in /proc on the loop's thread pool, never on the loop; the line is written when the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import ssl
import sys
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokend import limits, logs, paths, system
from tokend.config import Config, Listen, Target
from tokend.ioloop import IOLoop
from tokend.logs import Aggregated
from tokend.pg import tls as pgtls
from tokend.pg import wire
from tokend.proxy import audit, peer, tls
from tokend.proxy.conn import relay, resolve
from tokend.proxy.session import Listening, ServerLeg, TokenFor, start

log = logging.getLogger("tokend.proxy")
HANDSHAKE_TIMEOUT = 10.0  # seconds from accept to the client's start-up message (TLS handshake included)
LOGIN_TIMEOUT = 60.0  # seconds from the start-up message to logged in: PostgreSQL's own authentication_timeout
PENDING_PER_LISTENER = 1024  # connections without a start-up message yet, per listener (the listen backlog's size)
PENDING_PER_UID = 512  # of those, per peer uid
CANCELS_PER_LISTENER = 16  # cancel requests being forwarded to the server at once, per listener
RETRY = 10.0  # seconds between attempts to open a listener that failed (a port in use)
ACCEPT_PAUSE = 0.5  # seconds to wait after a failed accept (out of descriptors, …) before the next one
BACKLOG = 1024  # connections the kernel queues for one listener
# absent from Windows' Python: a unix: listener there fails to open (OSError), shown as the listener's error
AF_UNIX: int = getattr(socket, "AF_UNIX", -1)


@dataclass
class Listener:
    address: Listen
    target: Target
    sock: socket.socket | None = None
    task: asyncio.Task[None] | None = None
    open: int = 0
    total: int = 0
    last_error: str | None = None  # why it does not listen (a bind error): stays until the bind works
    accept_error: str | None = None  # the last accept failure: clears on the next accept that works
    host: str = ""  # where clients connect: the folder (Unix socket) or the address
    sessions: set[asyncio.Task[None]] = field(default_factory=set)
    pending: limits.Pending = field(default_factory=lambda: limits.Pending(PENDING_PER_LISTENER, PENDING_PER_UID))
    cancels: limits.Budget = field(default_factory=lambda: limits.Budget(CANCELS_PER_LISTENER))
    server: ServerLeg = field(default_factory=ServerLeg)  # its sessions' last failure to reach the server
    retry: asyncio.TimerHandle | None = None
    on: Listening | None = None  # what its sessions need; rebuilt when the config changes


class _Session:
    """One accepted connection's bookkeeping: its socket, its pending place, its deadline, why it was ended."""

    __slots__ = ("counts", "lookup", "record", "running", "sock", "task", "ticket", "timer", "why")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.task: asyncio.Task[None] | None = None
        self.ticket: limits.Ticket | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.why = ""  # set when the proxy ends it: evicted, handshake, login
        self.running = False
        self.record: audit.Record | None = None  # the audit log's line, when it is on
        self.lookup: asyncio.Future[None] | None = None  # the client's pid and executable being found (TCP)
        self.counts: tuple[Any, Any] | None = None  # the relay's two readers: bytes each way

    def end(self, why: str) -> None:
        if not self.why:
            self.why = why
        if self.task is not None:
            self.task.cancel()

    def started(self) -> None:
        """The client's start-up is in: no longer pending; the server's part of the login has its own deadline."""
        if self.ticket is not None:
            self.ticket.release()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = asyncio.get_running_loop().call_later(LOGIN_TIMEOUT, self.end, "login")

    def logged_in(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Proxy:
    def __init__(self, io: IOLoop, config_path: Path, token_for: TokenFor) -> None:
        self.io = io
        self.folder = paths.proxy_dir(config_path)
        self.state = paths.config_state_dir(config_path)
        self.token_for = token_for
        self.listeners: dict[tuple[str, Listen], Listener] = {}
        self._local_tls: ssl.SSLContext | None = None
        self._upstream = pgtls.Contexts(lambda why: log.warning("proxy: %s", why))  # one per CA file in use
        self.certificate: Path | None = None
        self.shares = limits.shares(limits.file_limit())
        self.budget = limits.Budget(self.shares.proxy)
        self.quiet = Aggregated(log)
        self.me = os.getuid() if hasattr(os, "getuid") else None
        self.config_path = config_path
        self.audit: logs.AuditLog | None = None  # [proxy] audit_log; opened by the first config that wants it

    # -- from the daemon's threads ----------------------------------------------------------------------------------
    def apply(self, config: Config) -> None:
        """Make the listeners match ``config`` (on the loop; returns when done)."""
        self.io.run(self._apply(config))

    def status(self, target: str) -> dict[str, Any] | None:
        mine = [ls for (name, _), ls in list(self.listeners.items()) if name == target]
        if not mine:
            return None
        errors = [ls.last_error or ls.accept_error for ls in mine if ls.last_error or ls.accept_error]
        return {
            "listen": [{"host": ls.host, "port": ls.address.port} for ls in mine],
            "open": sum(ls.open for ls in mine),
            "total": sum(ls.total for ls in mine),
            "last_error": errors[0] if errors else None,
            "server_error": next((ls.server.last_error for ls in mine if ls.server.last_error), None),
            "certificate": str(self.certificate) if self.certificate else None,
        }

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.io.run(self._apply(None), timeout=10)
        if self.audit is not None:  # sessions that end later write to it again (the handler reopens the file)
            self.audit.close()

    # -- on the loop -------------------------------------------------------------------------------------------------
    async def _apply(self, config: Config | None) -> None:
        wanted = {(t.name, a): t for t in (config.targets.values() if config else []) for a in t.listen}
        if config is not None:
            if config.audit_log and self.audit is None:
                self.audit = logs.AuditLog(logs.audit_file(self.config_path))
            elif not config.audit_log and self.audit is not None:
                self.audit.close()
                self.audit = None
        for key in [k for k in self.listeners if k not in wanted]:
            self._stop(self.listeners.pop(key))
        self._upstream.keep({t.sslrootcert for t in wanted.values()})
        for key, target in wanted.items():
            ls = self.listeners.get(key)
            if ls is None:
                ls = self.listeners[key] = Listener(key[1], target)
                ls.on = self._listening(ls)
                self._open(ls)
            else:
                ls.target = target  # new connections use the new settings; open ones keep theirs
                ls.on = self._listening(ls)
                if ls.task is None and ls.retry is None:  # refused by a rule the new settings may lift
                    self._open(ls)

    def _listening(self, ls: Listener) -> Listening:
        upstream = self._upstream.get(ls.target.sslrootcert)  # built once per CA file, never per connection
        return Listening(
            ls.target,
            None if ls.address.unix else self._local_tls,
            upstream if isinstance(upstream, ssl.SSLContext) else None,
            self._where(ls),
            upstream if isinstance(upstream, str) else "",
            ls.cancels,
            self.quiet,
            ls.server,
        )

    def _open(self, ls: Listener) -> None:
        if ls.task is not None:
            return
        ls.retry = None
        where = self._where(ls)
        if not ls.address.unix and not peer.TCP_OWNER_KNOWN and not ls.target.allow_any_local_user:
            ls.last_error = (
                f"this OS cannot tell which local user connects over TCP, so {where} stays closed: listen on "
                f'"unix:{ls.address.port}" instead, or set allow_any_local_user = true in [targets.{ls.target.name}] '
                "to let every local user log in through it"
            )
            log.warning("proxy for target %s: %s", ls.target.name, ls.last_error)
            return
        try:
            if not ls.address.unix and self._local_tls is None:  # made before the first client, so status shows it
                self._local_tls, self.certificate = tls.local_context(self.state)
                ls.on = self._listening(ls)
            ls.sock = self._bind(ls)
        except OSError as e:
            ls.last_error = f"cannot listen on {where}: {e.strerror or e}; tokend tries again every {RETRY:.0f} s"
            log.warning("proxy for target %s: %s", ls.target.name, ls.last_error)
            ls.retry = asyncio.get_running_loop().call_later(RETRY, self._retry, ls)
            return
        ls.last_error = None
        ls.task = asyncio.get_running_loop().create_task(self._accept(ls))
        log.info("proxy for target %s listening on %s", ls.target.name, where)

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
            if sys.platform == "win32":  # no AF_UNIX in Windows' CPython: the listener reports it and retries
                raise OSError("Unix sockets are not available on Windows")
            sock = socket.socket(AF_UNIX, socket.SOCK_STREAM)
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
        sock.listen(BACKLOG)
        sock.setblocking(False)
        return sock

    def _stop(self, ls: Listener) -> None:
        if ls.retry is not None:
            ls.retry.cancel()
        if ls.task is not None:
            ls.task.cancel()
        if ls.sock is not None:
            if ls.address.unix:
                with contextlib.suppress(OSError):
                    os.unlink(ls.sock.getsockname())
            ls.sock.close()
        log.info("proxy for target %s: stopped listening on %s (open sessions go on)", ls.target.name, self._where(ls))

    async def _accept(self, ls: Listener) -> None:
        loop = asyncio.get_running_loop()
        assert ls.sock is not None
        where = self._where(ls)
        while True:
            try:
                sock, _ = await loop.sock_accept(ls.sock)
            except asyncio.CancelledError:
                raise
            except OSError as e:  # out of file descriptors, …: say so (once a minute), breathe, go on
                ls.accept_error = f"accept failed: {e.strerror or e}"
                self.quiet.warning(("accept", where, e.errno), "proxy %s: %s", where, ls.accept_error)
                await asyncio.sleep(ACCEPT_PAUSE)
                continue
            ls.accept_error = None
            self._admit(ls, sock, where)
            await asyncio.sleep(0)  # the sessions read what their clients sent before the next accept

    def _admit(self, ls: Listener, sock: socket.socket, where: str) -> None:
        """Check who connected and what is left; start a session or turn the connection away at once."""
        key = self._owner(ls, sock, where)
        if key is None:
            return
        if not self.budget.take(2):
            self.quiet.warning(
                ("descriptors", where),
                "proxy %s: turned a connection away: its sessions hold all %d descriptors the proxy may use "
                "(the soft RLIMIT_NOFILE less %d kept for the daemon's own work)",
                where,
                self.budget.total,
                self.shares.reserve,
            )
            _turn_away(sock, "tokend's proxy has too many connections open", "53300", "close some and try again")
            return
        loop = asyncio.get_running_loop()
        s = _Session(sock)
        if self.audit is not None:
            s.record, s.lookup = self._record(ls, sock, where, key)
        ticket = ls.pending.admit(functools.partial(s.end, "evicted"), key)
        if ticket is None:  # cannot happen with PENDING_PER_LISTENER > 0 (nothing here is busy), kept for safety
            self.budget.give(2)
            _turn_away(sock, "tokend's proxy has too many connections starting", "53300", "try again")
            return
        s.ticket = ticket
        ls.open += 1
        ls.total += 1
        s.task = loop.create_task(self._session(ls, s))
        s.timer = loop.call_later(HANDSHAKE_TIMEOUT, s.end, "handshake")
        ls.sessions.add(s.task)
        s.task.add_done_callback(functools.partial(self._ended, ls, s, where))

    def _owner(self, ls: Listener, sock: socket.socket, where: str) -> Hashable | None:
        """The key a connection is counted under (its uid), or None: it was turned away (logged, closed)."""
        if not ls.address.unix and ls.target.allow_any_local_user:
            return "any local user"
        reason = ""
        try:
            uid = system.peer_uid(sock) if ls.address.unix else peer.tcp_peer_uid(sock)
        except OSError as e:
            uid, reason = None, e.strerror or type(e).__name__
        if uid is not None and uid == self.me:
            return uid
        if uid is None:
            self.quiet.warning(
                ("unproven", where),
                "proxy %s: refused a connection whose local user could not be checked (%s)",
                where,
                reason or "the client is gone or the OS did not say",
            )
            _turn_away(
                sock,
                "tokend's proxy serves its own user only, and could not check who connected",
                "28000",
                "try again; see tokend's log",
            )
        else:
            self.quiet.warning(
                ("refused", where, uid), "proxy %s: refused a connection from another local user (uid %d)", where, uid
            )
            _turn_away(
                sock,
                f"this tokend proxy serves its own user only (uid {self.me}), not uid {uid}",
                "28000",
                "only the user who runs tokend may use its proxy",
            )
        return None

    def _record(
        self, ls: Listener, sock: socket.socket, where: str, key: Hashable
    ) -> tuple[audit.Record, asyncio.Future[None] | None]:
        """A session's audit record with who connected: the uid the owner check proved, the client's pid and
        executable — at once from a Unix socket's credentials, else (TCP, Linux) looked up off the loop."""
        r = audit.Record(ls.target.name, where, uid=key if isinstance(key, int) else None)
        if ls.address.unix:
            r.pid = peer.unix_peer_pid(sock)
            r.executable = peer.executable(r.pid) if r.pid else None
            return r, None
        if not peer.TCP_OWNER_KNOWN:
            return r, None
        try:
            theirs, ours = sock.getpeername()[:2], sock.getsockname()[:2]
        except OSError:  # gone already: its session ends at once, and says so
            return r, None

        def find() -> None:
            try:
                r.pid = peer.tcp_client_pid(sock.family, theirs, ours, r.uid)
                r.executable = peer.executable(r.pid) if r.pid else None
            except Exception as e:  # a bug here must not lose the line: it is written without them
                log.debug("proxy %s: could not find the client's process: %r", where, e)

        return r, asyncio.get_running_loop().run_in_executor(None, find)

    async def _session(self, ls: Listener, s: _Session) -> None:
        s.running = True
        loop = asyncio.get_running_loop()
        assert ls.on is not None
        pair = await start(loop, s.sock, ls.on, self.token_for, s.started, s.record)
        if pair is None:
            return
        s.logged_in()
        done: asyncio.Future[None] = loop.create_future()
        s.counts = relay(pair[0], pair[1], lambda: resolve(done))
        await done

    def _ended(self, ls: Listener, s: _Session, where: str, task: asyncio.Task[None]) -> None:
        if s.ticket is not None:
            s.ticket.release()
        if s.timer is not None:
            s.timer.cancel()
        if not s.running:  # ended before its first step: the coroutine never saw the socket
            with contextlib.suppress(OSError):
                s.sock.close()
        ls.open -= 1
        ls.sessions.discard(task)
        self.budget.give(2)
        if s.why == "evicted":
            self.quiet.info(
                ("evicted", where),
                "proxy %s: closed the oldest connection that had sent no start-up message, to make room "
                "(at most %d per listener, %d per user)",
                where,
                PENDING_PER_LISTENER,
                PENDING_PER_UID,
            )
        elif s.why == "handshake":
            self.quiet.info(
                ("handshake", where),
                "proxy %s: closed a connection that sent no start-up message within %.0f s",
                where,
                HANDSHAKE_TIMEOUT,
            )
        elif s.why == "login":
            self.quiet.warning(
                ("login", where),
                "proxy %s: closed a connection the server had not logged in within %.0f s",
                where,
                LOGIN_TIMEOUT,
            )
        elif not task.cancelled() and task.exception() is not None:
            e = task.exception()
            self.quiet.log(logging.ERROR, ("failed", where, type(e).__name__), "proxy %s: session failed: %r", where, e)
            log.debug("proxy %s: session failed", where, exc_info=e)
        if s.record is not None:
            self._audit(s, task)

    def _audit(self, s: _Session, task: asyncio.Task[None]) -> None:
        """The session's line in the audit log, once its client's pid is known (at once, but for TCP)."""
        r = s.record
        assert r is not None
        r.end = time.time()
        if s.counts is not None:
            r.sent, r.received = s.counts[0].count, s.counts[1].count
        if s.why:
            r.outcome = {
                "evicted": "error: closed to make room for newer connections (it had sent no start-up message)",
                "handshake": f"error: no start-up message within {HANDSHAKE_TIMEOUT:.0f} s",
                "login": f"error: the server had not logged it in within {LOGIN_TIMEOUT:.0f} s",
            }.get(s.why, f"error: {s.why}")
        elif task.cancelled() and r.outcome != "ok":
            r.outcome = "error: ended when the proxy stopped"
        elif not task.cancelled() and task.exception() is not None:
            r.outcome = f"error: {type(task.exception()).__name__}"

        def write(_: object = None) -> None:
            if self.audit is not None:
                self.audit.write(r.line())

        if s.lookup is None or s.lookup.done():
            write()
        else:
            s.lookup.add_done_callback(write)


def _turn_away(sock: socket.socket, message: str, code: str, hint: str) -> None:
    """One ErrorResponse, if the socket takes it at once, and close: nothing is read, nothing waits."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(wire.error(message, code, hint))
    with contextlib.suppress(OSError):
        sock.close()
