"""A scripted PostgreSQL server and a scripted driver, for in-process tests of tokend.pg: the login generator played
against server bytes with no socket at all (``play``), and the drivers against one real loopback connection whose
server side a test writes as plain blocking code (``one_connection``), TLS with the proxy's own self-signed
certificate for 127.0.0.1 (``server_tls``)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokend.pg import login
from tokend.proxy.tls import local_context


class ServerGone(Exception):
    """The script has no more bytes: what a driver reports as the server closing the connection."""


@dataclass
class Played:
    """What the generator did: each step in order (``Need`` as asked), the bytes it sent, what it passed on."""

    steps: list[Any] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    passed: list[bytes] = field(default_factory=list)
    left: bytes = b""  # the server's bytes the generator never asked for


def play(gen: Generator[Any, bytes, Any], server: bytes, tls_error: ssl.SSLError | None = None) -> tuple[Any, Played]:
    """Drive ``gen`` as a driver would, the server sending ``server`` (all of it, at once); ``tls_error`` is thrown
    in at StartTLS. (its result, what it did); what it raises propagates, with ``Played`` on the exception as
    ``played``."""
    p = Played()
    data = memoryview(server)
    try:
        step = next(gen)
        while True:
            reply, thrown = b"", None
            p.steps.append(step)
            if isinstance(step, login.Need):
                if len(data) < step.n:
                    raise ServerGone(f"the generator asked for {step.n} bytes; {len(data)} were left")
                reply, data = bytes(data[: step.n]), data[step.n :]
            elif isinstance(step, login.Send):
                p.sent.append(step.data)
            elif isinstance(step, login.StartTLS):
                thrown = tls_error
            elif isinstance(step, login.Pass):
                p.passed.append(step.message)
            step = gen.send(reply) if thrown is None else gen.throw(thrown)
    except StopIteration as e:
        p.left = bytes(data)
        return e.value, p
    except BaseException as e:
        p.left = bytes(data)
        e.played = p  # type: ignore[attr-defined]
        raise


def typed(kind: bytes, body: bytes = b"") -> bytes:
    """A server message: type, length, body."""
    return kind + struct.pack("!i", 4 + len(body)) + body


def auth(code: int) -> bytes:
    return typed(b"R", struct.pack("!i", code))


def parameter(name: str, value: str) -> bytes:
    return typed(b"S", name.encode() + b"\0" + value.encode() + b"\0")


def ready_for_query() -> bytes:
    return typed(b"Z", b"I")


def error_response(**fields: str) -> bytes:
    """An ErrorResponse with fields by code: error_response(S="FATAL", C="28P01", M="…")."""
    return typed(b"E", b"".join(k.encode() + v.encode() + b"\0" for k, v in fields.items()) + b"\0")


def data_row(*values: str | None) -> bytes:
    body = struct.pack("!h", len(values))
    for v in values:
        body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v.encode())) + v.encode()
    return typed(b"D", body)


def command_complete(tag: str) -> bytes:
    return typed(b"C", tag.encode() + b"\0")


def server_tls(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a self-signed certificate for 127.0.0.1, and that certificate (a client's CA file)."""
    return local_context(folder)


def read_exactly(sock: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            raise ServerGone("the client closed the connection")
        got += chunk
    return got


def read_untyped(sock: socket.socket) -> tuple[int, bytes]:
    """A start-up packet (SSLRequest, StartupMessage, CancelRequest) from the client: (code, body)."""
    length, code = struct.unpack("!ii", read_exactly(sock, 8))
    return code, read_exactly(sock, length - 8)


def read_typed(sock: socket.socket) -> tuple[bytes, bytes]:
    """A typed message from the client: (type, body)."""
    head = read_exactly(sock, 5)
    (length,) = struct.unpack("!i", head[1:])
    return head[:1], read_exactly(sock, length - 4)


@dataclass
class Served:
    port: int
    failures: list[BaseException] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


@contextlib.contextmanager
def one_connection(handler: Callable[[socket.socket], None]) -> Iterator[Served]:
    """A listener on 127.0.0.1 whose first connection ``handler`` serves (blocking, 10 s per receive) on a thread;
    what the handler raised is raised here at the end."""
    listener = socket.create_server(("127.0.0.1", 0))
    served = Served(listener.getsockname()[1])

    def run() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                handler(conn)
        except BaseException as e:  # reported to the test at the end
            served.failures.append(e)
        finally:
            served.done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        listener.close()
        thread.join(15)
    if served.failures:
        raise served.failures[0]


def tls_login(
    tls: ssl.SSLContext, after_startup: bytes, got: dict[str, Any], then: Callable[[ssl.SSLSocket], None] | None = None
) -> Callable[[socket.socket], None]:
    """A handler that plays the usual server: 'S' to the SSLRequest, TLS, the StartupMessage in, a cleartext password
    request, the password in, then ``after_startup`` (AuthenticationOk, parameters, ReadyForQuery …); ``got``
    receives what the client sent ("ssl", "startup", "password"); ``then`` serves the rest of the connection."""

    def handler(conn: socket.socket) -> None:
        got["ssl"] = read_untyped(conn)
        conn.sendall(b"S")
        with tls.wrap_socket(conn, server_side=True) as t:
            got["startup"] = read_untyped(t)
            t.sendall(auth(3))
            got["password"] = read_typed(t)
            t.sendall(after_startup)
            if then is not None:
                then(t)

    return handler
