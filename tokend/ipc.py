"""Talking to the daemon: one JSON request line, one JSON answer line, over an endpoint only the user can reach.

Operations (``OPS``, the one list client and server share): ``status``, ``token`` (``target``: a name or null),
``reload``, ``stop``, ``sign-in-changed`` (``identity``: a name or null).
Answers: ``{"ok": true, "result": …}`` or ``{"ok": false, "error": "one line", "exit_code": N}``.

Endpoints (``Endpoint``): on Linux and macOS a Unix socket, mode 0600, in the per-user runtime folder (0700), whose
peer's uid is checked as well (a peer whose uid cannot be read is refused too); on Windows a named pipe
``\\\\.\\pipe\\tokend-<config id>`` whose ACL admits only the user and SYSTEM (``tokend.winpipe``). Both carry the
same bytes; everything above the endpoint is the same code, so the Unix socket exercises it on every platform.

The server is asyncio (``Server``): no thread per connection, a request may be at most ``MAX_REQUEST`` bytes and
must arrive within ``REQUEST_TIMEOUT`` seconds, answers of any size stream out. Requests are answered by a handler
on a small thread pool, so a slow ``status`` never holds up the proxy sharing the loop. At most
``limits.Shares.ipc`` connections at once (256 with a usual descriptor limit), inside the daemon's reserve: when
they are all taken, the oldest one that has not sent its request yet is closed for the newcomer
(``limits.Pending``). Refusals are logged once a minute per uid (``logs.Aggregated``), not once per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tokend import limits, paths, system
from tokend.errors import EXIT_USAGE, DaemonNotRunning, TokendError, UsageError
from tokend.ioloop import run_on
from tokend.logs import Aggregated

log = logging.getLogger("tokend.ipc")

STATUS, TOKEN, RELOAD, STOP, SIGN_IN_CHANGED = "status", "token", "reload", "stop", "sign-in-changed"
OPS = (STATUS, TOKEN, RELOAD, STOP, SIGN_IN_CHANGED)
MAX_REQUEST = 64 * 1024  # bytes in one request line
REQUEST_TIMEOUT = 10.0  # seconds for a client to send its request
BACKLOG = 1024  # pending connections the kernel queues (capped by net.core.somaxconn)
BUSY_RETRY = 2.0  # seconds a client keeps retrying a full backlog before it gives up with one line

Handler = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class TokenAnswer:
    token: str
    expires_on: float
    target: dict[str, Any]


class Stream(Protocol):
    """A connected client stream (a socket, or a Windows pipe wrapped to look like one)."""

    def sendall(self, data: bytes) -> None: ...

    def recv(self, size: int) -> bytes: ...

    def close(self) -> None: ...


class Endpoint(Protocol):
    """Where one daemon listens and its clients connect."""

    def describe(self) -> str: ...

    def connect(self, timeout: float) -> Stream:
        """A connected duplex stream; DaemonNotRunning when nobody listens."""

    async def listen(self, on_client: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]) -> Any:
        """Start serving; returns something with ``close()``."""

    def cleanup(self) -> None: ...


class UnixEndpoint:
    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return str(self.path)

    def connect(self, timeout: float) -> Stream:
        deadline = time.monotonic() + min(timeout, BUSY_RETRY)
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(str(self.path))
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                raise DaemonNotRunning(f"no tokend daemon answers at {self.path}") from None
            except OSError as e:
                sock.close()
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK) or time.monotonic() > deadline:
                    if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                        raise TokendError(
                            f"the tokend daemon at {self.path} is too busy to answer; try again"
                        ) from None
                    raise TokendError(f"cannot reach the tokend daemon at {self.path}: {e.strerror or e}") from None
                time.sleep(0.01)  # the listen backlog is full: a burst of clients; try again shortly

    async def listen(self, on_client: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]) -> Any:
        folder = paths.private_dir(self.path.parent)
        if len(str(self.path).encode()) > 104:
            raise UsageError(
                f"the IPC socket path {self.path} is longer than Unix sockets allow (104 bytes); set "
                "XDG_RUNTIME_DIR to a shorter folder"
            )
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # stale: we hold the instance lock, so no live daemon owns it
        old = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(on_client, str(self.path), limit=MAX_REQUEST, backlog=BACKLOG)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        log.debug("IPC on %s (folder %s)", self.path, folder)
        return server

    def cleanup(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def endpoint(config_path: Path) -> Endpoint:
    """The endpoint of the daemon for ``config_path`` on this OS."""
    if system.WINDOWS:  # pragma: no cover - exercised by the Windows CI job
        from tokend.winpipe import PipeEndpoint

        return PipeEndpoint(paths.pipe_name(config_path))
    return UnixEndpoint(paths.socket_path(config_path))


class Client:
    """The one way anything talks to a running daemon."""

    def __init__(self, config_path: Path, timeout: float = 10.0, where: Endpoint | None = None) -> None:
        self.endpoint = where or endpoint(config_path)
        self.timeout = timeout

    def status(self) -> dict[str, Any]:
        return self.request({"op": STATUS})

    def token(self, target: str | None) -> TokenAnswer:
        r = self.request({"op": TOKEN, "target": target})
        return TokenAnswer(r["token"], float(r["expires_on"]), r["target"])

    def reload(self) -> None:
        self.request({"op": RELOAD})

    def stop(self) -> None:
        self.request({"op": STOP})

    def sign_in_changed(self, identity: str | None) -> None:
        self.request({"op": SIGN_IN_CHANGED, "identity": identity})

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one request; DaemonNotRunning when none answers, TokendError with the daemon's line and exit code
        when it refuses."""
        stream = self.endpoint.connect(self.timeout)
        try:
            stream.sendall(json.dumps(payload).encode() + b"\n")
            data = _read_answer(stream)
        except OSError as e:
            raise TokendError(
                f"the tokend daemon at {self.endpoint.describe()} did not answer: {e.strerror or type(e).__name__}"
            ) from None
        finally:
            stream.close()
        try:
            reply = json.loads(data)
        except ValueError:
            raise TokendError(
                f"the tokend daemon at {self.endpoint.describe()} closed the connection without an answer; see its log"
            ) from None
        if not reply.get("ok"):
            err = TokendError(reply.get("error", "the daemon refused the request"))
            err.exit_code = int(reply.get("exit_code", 1))
            raise err
        result: dict[str, Any] = reply["result"]
        return result


def ask(config_path: Path, call: Callable[[Client], Any]) -> Any:
    """``call(client)`` on the daemon of ``config_path``; with none, the error says what to do — or, when the config
    file itself is missing, names it."""
    try:
        return call(Client(config_path))
    except DaemonNotRunning as e:
        if not config_path.exists():
            from tokend.config import load

            load(config_path)  # raises the ConfigError naming the missing file
        raise TokendError(f"{e}; start it with `tokend run --config {config_path}`") from None


def _read_answer(stream: Stream) -> bytes:
    chunks = []
    while True:
        chunk = stream.recv(1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            break
    return b"".join(chunks)


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
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT * 3)
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            ticket.release()
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _peer_is_me(self, writer: asyncio.StreamWriter) -> bool:
        """On a Unix socket, the peer must be proven to be this user; a pipe's ACL already admits only the user."""
        if not isinstance(self.endpoint, UnixEndpoint):
            return True
        sock = writer.get_extra_info("socket")
        try:
            uid = system.peer_uid(sock) if sock is not None else None
        except OSError:
            uid = None
        if uid is not None and uid == os.getuid():
            return True
        self._quiet.warning(
            ("refused", uid),
            "IPC: refused a connection from %s (only uid %d is served)",
            f"uid {uid}" if uid is not None else "a peer whose uid could not be read",
            os.getuid(),
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
