"""The daemon's side of IPC: an asyncio server on the daemon's loop, and the table that maps each operation to the
daemon's query that answers it.

No thread per connection; a request may be at most ``MAX_REQUEST`` bytes and must arrive within
``REQUEST_TIMEOUT`` seconds; answers of any size stream out. Requests are answered by a handler on a small thread
pool, so a slow ``status`` never holds up the proxy sharing the loop. At most ``limits.Shares.ipc`` connections at
once (256 with a usual descriptor limit), inside the daemon's reserve: when they are all taken, the oldest one that
has not sent its request yet is closed for the newcomer (``limits.Pending``). Refusals are logged once a minute per
uid (``logs.Aggregated``), not once per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, Protocol

from tokend import limits, system
from tokend.errors import EXIT_USAGE, TokendError, UsageError
from tokend.ioloop import run_on
from tokend.ipc.protocol import (
    CONNECTION_KEYS,
    OPS,
    RELOAD,
    REQUEST_TIMEOUT,
    SIGN_IN_CHANGED,
    STATUS,
    STOP,
    TOKEN,
    TOKEN_BY_CONNECTION,
    Endpoint,
    Handler,
    TokenAnswer,
)
from tokend.logs import Aggregated

log = logging.getLogger("tokend.ipc")
WRITE_TIMEOUT = REQUEST_TIMEOUT * 3  # seconds for a client to take its answer
# seconds a token request waits for a successor that is due (Refresher.fresh_token): pgAdmin caches the answer, so a
# token about to expire is not handed out while a fresher one is moments away; under the client's 10 s
TOKEN_FRESH_WAIT = 5.0


class Answers(Protocol):
    """What the daemon offers IPC: its queries and its three actions."""

    def status(self) -> dict[str, Any]: ...

    def token_for(self, name: str | None, wait: float = 0.0) -> TokenAnswer: ...

    def token_by_connection(
        self, host: str | None, port: str | None, user: str | None, database: str | None
    ) -> TokenAnswer: ...

    def sign_in_changed(self, source: str | None = None, identity: str | None = None) -> None: ...

    def reload(self, why: str) -> None: ...

    def stop(self, reason: str) -> None: ...


Op = Callable[[Answers, dict[str, Any]], dict[str, Any]]


def _token(d: Answers, request: dict[str, Any]) -> dict[str, Any]:
    answer = d.token_for(_name(request, "target"), wait=TOKEN_FRESH_WAIT)
    return {"token": answer.token, "expires_on": answer.expires_on, "target": answer.target}


def _token_by_connection(d: Answers, request: dict[str, Any]) -> dict[str, Any]:
    host, port, user, database = (_name(request, key) for key in CONNECTION_KEYS)
    answer = d.token_by_connection(host, port, user, database)
    return {"token": answer.token, "expires_on": answer.expires_on, "target": answer.target}


def _sign_in_changed(d: Answers, request: dict[str, Any]) -> dict[str, Any]:
    d.sign_in_changed(identity=_name(request, "identity"))
    return {"refreshing": True}


def _reload(d: Answers, _request: dict[str, Any]) -> dict[str, Any]:
    d.reload("tokend reload")
    return {"reloaded": True}


def _stop(d: Answers, _request: dict[str, Any]) -> dict[str, Any]:
    d.stop("tokend stop")
    return {"stopping": True}


TABLE: Mapping[str, Op] = {
    STATUS: lambda d, _request: d.status(),
    TOKEN: _token,
    RELOAD: _reload,
    STOP: _stop,
    SIGN_IN_CHANGED: _sign_in_changed,
    TOKEN_BY_CONNECTION: _token_by_connection,
}  # every operation of ``OPS`` in its order (tests/unit/test_ipc.py holds them to it)


def dispatch(answers: Answers, request: dict[str, Any]) -> dict[str, Any]:
    """Answer one request (``OPS``) through ``TABLE``."""
    op = request.get("op")
    handler = TABLE.get(op) if isinstance(op, str) else None
    if handler is None:
        raise UsageError(f"unknown request {op!r}; operations: {', '.join(OPS)}")
    return handler(answers, request)


def handler_for(answers: Answers) -> Handler:
    """The ``Server``'s handler answering from ``answers``."""
    return lambda request: dispatch(answers, request)


def _name(request: dict[str, Any], key: str) -> str | None:
    value = request.get(key)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"bad request: {key} must be a name or null")
    return value


class Server:
    """Answers requests on the daemon's endpoint with ``handler`` (run on ``executor``), on the running loop."""

    def __init__(self, where: Endpoint, handler: Handler, executor: Executor) -> None:
        self.endpoint = where
        self.handler = handler
        self.executor = executor
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = limits.Pending(limits.shares(limits.file_limit()).ipc)
        self._quiet = Aggregated(log)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await self.endpoint.listen(self._serve)

    def close(self) -> None:
        """Stop listening (from any thread: the closing itself runs on the loop)."""
        server, self._server = self._server, None
        if server is not None:
            run_on(self._loop, server.close)
        self.endpoint.cleanup()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ticket = self._pending.admit(writer.transport.abort)
        if ticket is None:
            self._quiet.warning(
                "busy", "IPC: closed a connection: %d others are being answered already", self._pending.limit
            )
            writer.transport.abort()
            return
        try:
            if not self._peer_is_me(writer):
                return
            reply = await self._answer(reader, ticket)
            writer.write(json.dumps(reply).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            ticket.release()
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _peer_is_me(self, writer: asyncio.StreamWriter) -> bool:
        """On a Unix socket, the peer must be proven to be this user; a pipe's ACL already admits only the user."""
        if sys.platform == "win32" or not self.endpoint.checks_peer:
            return True
        sock = writer.get_extra_info("socket")
        me = os.getuid()
        try:
            uid = system.peer_uid(sock) if sock is not None else None
        except OSError:
            uid = None
        if uid is not None and uid == me:
            return True
        self._quiet.warning(
            ("refused", uid),
            "IPC: refused a connection from %s (only uid %d is served)",
            f"uid {uid}" if uid is not None else "a peer whose uid could not be read",
            me,
        )
        return False

    async def _answer(self, reader: asyncio.StreamReader, ticket: limits.Ticket) -> dict[str, Any]:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            ticket.busy()  # a request in hand: answered, never evicted
            request = json.loads(line)
            if not isinstance(request, dict) or request.get("op") not in OPS:
                raise ValueError(f"unknown request; operations: {', '.join(OPS)}")
            loop = asyncio.get_running_loop()
            return {"ok": True, "result": await loop.run_in_executor(self.executor, self.handler, request)}
        except TokendError as e:
            return {"ok": False, "error": str(e), "exit_code": e.exit_code}
        except asyncio.TimeoutError:
            return {"ok": False, "error": f"no request within {REQUEST_TIMEOUT:.0f} s", "exit_code": EXIT_USAGE}
        except (ValueError, asyncio.LimitOverrunError) as e:
            why = "too long" if isinstance(e, asyncio.LimitOverrunError) or "limit" in str(e) else str(e)
            return {"ok": False, "error": f"bad request: {why}"[:300], "exit_code": EXIT_USAGE}
        except Exception:
            log.exception("IPC request failed")
            return {"ok": False, "error": "internal error in the daemon; see its log", "exit_code": 1}
