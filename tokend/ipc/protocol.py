"""The IPC protocol, shared by every endpoint, the client and the server: one JSON request line, one JSON answer
line.

Operations (``OPS``, the one list client and server share): ``status``, ``token`` (``target``: a name or null),
``reload``, ``stop``, ``sign-in-changed`` (``identity``: a name or null), ``token-by-connection`` (``host``,
``port``, ``user``, ``database``: what a client connects with, each a string or null; the daemon picks the target
libpq would match, ``sinks.pgpass.target_for``, and answers as ``token`` does).
Answers: ``{"ok": true, "result": …}`` or ``{"ok": false, "error": "one line", "exit_code": N}``.

This module is the bottom of ``tokend.ipc``: it imports nothing of the package, so each endpoint (``unix``,
``winpipe``), the client and the server import it and never one another's internals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

STATUS, TOKEN, RELOAD, STOP, SIGN_IN_CHANGED = "status", "token", "reload", "stop", "sign-in-changed"
TOKEN_BY_CONNECTION = "token-by-connection"
OPS = (STATUS, TOKEN, RELOAD, STOP, SIGN_IN_CHANGED, TOKEN_BY_CONNECTION)
CONNECTION_KEYS = ("host", "port", "user", "database")  # what ``token-by-connection`` is asked with
MAX_REQUEST = 64 * 1024  # bytes in one request line
REQUEST_TIMEOUT = 10.0  # seconds for a client to send its request
BACKLOG = 1024  # pending connections the kernel queues (capped by net.core.somaxconn)
BUSY_RETRY = 2.0  # seconds a client keeps retrying a full backlog (or busy pipe) before it gives up with one line

Handler = Callable[[dict[str, Any]], dict[str, Any]]
OnClient = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]


@dataclass(frozen=True)
class TokenAnswer:
    """What ``token`` answers: the token, its end (Unix epoch seconds) and the target it is for (its public keys)."""

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

    checks_peer: bool  # True: the server must prove each peer's uid itself (a Unix socket); False: the OS did (a pipe)

    def describe(self) -> str: ...

    def connect(self, timeout: float) -> Stream:
        """A connected duplex stream; DaemonNotRunning when nobody listens."""

    async def listen(self, on_client: OnClient) -> Any:
        """Start serving; returns something with ``close()``."""

    def cleanup(self) -> None: ...


def read_answer(stream: Stream) -> bytes:
    """One answer line (of any size: a status for ten thousand targets spans many reads)."""
    chunks = []
    while True:
        chunk = stream.recv(1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            break
    return b"".join(chunks)
