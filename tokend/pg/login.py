"""The one PostgreSQL login tokend makes — the proxy's server leg, ``tokend admin``'s connection and ``tokend
doctor``'s TLS check: TLS first (SSLRequest; a server that answers anything but 'S' is refused, as Azure requires
TLS), the StartupMessage, the token as the answer to the server's cleartext-password request (the only method
Azure's Entra logins use; any other is refused with its name), the server's ErrorResponse raised with its fields.
The token is only ever sent inside TLS: ``login`` cannot reach the password step without ``request_tls``.

Sans-I/O, in psycopg's manner (``psycopg/generators.py``): the routine is a generator that yields what it waits
for and returns the outcome; it touches no socket and no clock, so tests drive it with scripted server bytes. It
yields:

- ``Send(data)``: write these bytes (the driver sends back ``b""``);
- ``Need(n)``: exactly ``n`` bytes from the server (the driver sends them back);
- ``StartTLS()``: start TLS on the connection now (``b""`` back, or the driver throws the ``ssl.SSLError`` into
  the generator, which turns it into the one-line ``TLSFailed``);
- ``Pass(message)``: a whole server message before AuthenticationOk (a notice, NegotiateProtocolVersion) that the
  proxy hands on to its client; the other callers drop it.

Two drivers run it: ``Blocking`` (a blocking socket with one deadline per run: ``tokend admin`` and doctor, each in
its own process) and ``run_async`` (the proxy's non-blocking ``Conn`` on the daemon's loop, any object with
``readexactly``/``write``/``start_tls``; the proxy bounds the whole login with its own timer). ``connect`` and
``open_async`` make the TCP connection they run on.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from tokend.errors import TokendError
from tokend.pg import tls as pgtls
from tokend.pg import wire

T = TypeVar("T")
CHUNK = 65536  # bytes asked of the socket per read by the blocking driver


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


@dataclass(frozen=True, slots=True)
class Need:
    n: int  # bytes


@dataclass(frozen=True, slots=True)
class StartTLS:
    pass


@dataclass(frozen=True, slots=True)
class Pass:
    message: bytes  # a whole typed message, as the server sent it


Step = Send | Need | StartTLS | Pass
Gen = Generator[Step, bytes, T]


class LoginError(TokendError):
    """A login that did not get through: one line (``str``), the SQLSTATE the proxy hands its client (``code``),
    the fix (``hint``) and the bare cause (``reason``, for doctor's evidence)."""

    def __init__(self, message: str, code: str = "08001", hint: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.code, self.hint, self.reason = code, hint, reason or message


class Unreachable(LoginError):
    """No TCP connection: the host does not resolve, or no address of it accepts one."""


class NoTLS(LoginError):
    """The server answered the SSLRequest with something other than 'S'."""


class TLSFailed(LoginError):
    """The TLS handshake failed: a certificate that does not verify, no common protocol version, …"""


class Unsupported(LoginError):
    """The server asked for an authentication method other than a password."""


# -- the routine --------------------------------------------------------------------------------------------------
def message(limit: int = wire.MAX_SERVER_MESSAGE) -> Gen[tuple[bytes, bytes]]:
    """One typed message from the server: (type, body); ProtocolError past ``limit`` bytes."""
    kind, size = wire.header((yield Need(wire.HEADER)), limit)
    body = (yield Need(size)) if size else b""
    return kind, body


def request_tls(host: str, port: int) -> Gen[None]:
    """SSLRequest, the server's one-byte answer, TLS. ``host``/``port`` name the server in the errors."""
    yield Send(wire.ssl_request())
    if (yield Need(1)) != b"S":
        raise NoTLS(
            f"{host}:{port} does not offer TLS; Azure requires it",
            "08001",
            "is this the right server and port?",
            "the server does not offer TLS; Azure requires it",
        )
    try:
        yield StartTLS()
    except ssl.SSLError as e:
        raise TLSFailed(
            f"TLS to {host}:{port} failed: {e.reason or e}",
            "08001",
            "set the target's sslrootcert to the CA that signed the server's certificate",
            str(e.reason or e),
        ) from None


def authenticate(token: str, host: str) -> Gen[None]:
    """Answer the server's authentication with the token until AuthenticationOk; any other message before it is
    passed on (``Pass``)."""
    while True:
        kind, body = yield from message()
        if kind == b"R":
            code = wire.auth_code(body)
            if code == wire.AUTH_OK:
                return
            if code == wire.AUTH_CLEARTEXT:
                yield Send(wire.password(token))
                continue
            raise Unsupported(
                f"{host} asked for {wire.AUTH_NAMES.get(code, f'authentication {code}')}; tokend answers only "
                "password requests, as Azure's Entra logins use",
                "28000",
                "is the target's user an Entra principal on this server?",
            )
        if kind == b"E":
            raise wire.ServerError(wire.error_fields(body))
        yield Pass(wire.typed(kind, body))


def ready() -> Gen[dict[str, str]]:
    """After AuthenticationOk, until ReadyForQuery: the server's parameters (ParameterStatus). Its ErrorResponse —
    a database that does not exist, too many connections — is raised; BackendKeyData and notices are dropped."""
    params: dict[str, str] = {}
    while True:
        kind, body = yield from message()
        if kind == b"S":
            name, value = wire.parameter(body)
            params[name] = value
        elif kind == b"E":
            raise wire.ServerError(wire.error_fields(body))
        elif kind == b"Z":
            return params


def login(
    params: dict[str, str],
    token: str,
    host: str,
    port: int,
    version: int = wire.PROTOCOL_3_0,
    wait_ready: bool = True,
) -> Gen[dict[str, str]]:
    """TLS, the StartupMessage (``params``: user, database, …; ``version``: the protocol the client asked for),
    the token as the password; with ``wait_ready``, on to ReadyForQuery (the server's parameters returned),
    else done at AuthenticationOk (the proxy relays the rest as it comes)."""
    yield from request_tls(host, port)
    yield Send(wire.Startup(version, params).encode())
    yield from authenticate(token, host)
    if not wait_ready:
        return {}
    return (yield from ready())


# -- the blocking driver ------------------------------------------------------------------------------------------
def connect(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to ``host:port`` within ``timeout`` seconds, or ``Unreachable``."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        why = _why(e, timeout)
        raise Unreachable(
            f"cannot reach {host}:{port}: {why}",
            "08001",
            "check the port, the server's firewall rules and that it is running",
            why,
        ) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Blocking:
    """Runs the generators over one blocking socket (plain until ``StartTLS``, then TLS with ``tls``: a
    ``tokend.pg.tls.context``). Each ``run`` has one deadline; a server that does not answer by then, or closes,
    is a ``LoginError``. What it reads ahead stays buffered for the next run (``tokend.pg.connection``'s queries)."""

    def __init__(self, sock: socket.socket, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.sock, self.host, self.port, self.tls = sock, host, port, tls
        self.buf = bytearray()

    def run(self, gen: Gen[T], timeout: float) -> T:
        """Drive ``gen`` to its end within ``timeout`` seconds; its result."""
        deadline = time.monotonic() + timeout
        try:
            step = next(gen)
            while True:
                reply, thrown = b"", None
                if isinstance(step, Need):
                    reply = self._read(step.n, deadline)
                elif isinstance(step, Send):
                    self._until(deadline)
                    self.sock.sendall(step.data)
                elif isinstance(step, StartTLS):
                    try:
                        self._start_tls(deadline)
                    except ssl.SSLError as e:
                        thrown = e
                step = gen.send(reply) if thrown is None else gen.throw(thrown)
        except StopIteration as e:
            return e.value
        except TimeoutError:
            raise LoginError(f"{self.host}:{self.port} did not answer within {timeout:g} s", "08006") from None
        finally:
            gen.close()

    def _until(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)

    def _read(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            self._until(deadline)
            chunk = self.sock.recv(CHUNK)
            if not chunk:
                raise LoginError(f"{self.host} closed the connection", "08006")
            self.buf += chunk
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _start_tls(self, deadline: float) -> None:
        if self.tls is None:
            raise ValueError("StartTLS with no TLS context")
        if self.buf:  # bytes sent before the handshake: an injection (CVE-2021-23222), never a server's
            raise wire.ProtocolError("unencrypted bytes after the TLS answer")
        self._until(deadline)
        self.sock = self.tls.wrap_socket(self.sock, server_hostname=pgtls.server_hostname(self.host))

    def close(self) -> None:
        self.sock.close()


# -- the asynchronous driver ----------------------------------------------------------------------------------------
class Stream(Protocol):
    """What ``run_async`` needs of a connection (the proxy's ``Conn``)."""

    async def readexactly(self, n: int) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def start_tls(self, ctx: ssl.SSLContext, server_side: bool, server_hostname: str | None = None) -> None: ...


async def run_async(
    stream: Stream,
    gen: Gen[T],
    tls: ssl.SSLContext | None = None,
    host: str = "",
    passed: Callable[[bytes], Awaitable[None]] | None = None,
) -> T:
    """Drive ``gen`` over ``stream`` on the running loop: TLS with ``tls`` to ``host``; ``passed`` gets each
    ``Pass`` (none: dropped). No deadline of its own: the caller's (the proxy's login timer cancels the task)."""
    try:
        step = next(gen)
        while True:
            reply, thrown = b"", None
            if isinstance(step, Need):
                reply = await stream.readexactly(step.n)
            elif isinstance(step, Send):
                await stream.write(step.data)
            elif isinstance(step, StartTLS):
                if tls is None:
                    raise ValueError("StartTLS with no TLS context")
                try:
                    await stream.start_tls(tls, server_side=False, server_hostname=pgtls.server_hostname(host))
                except ssl.SSLError as e:
                    thrown = e
            elif passed is not None:
                await passed(step.message)
            step = gen.send(reply) if thrown is None else gen.throw(thrown)
    except StopIteration as e:
        return e.value
    finally:
        gen.close()


async def open_async(loop: asyncio.AbstractEventLoop, host: str, port: int, timeout: float) -> socket.socket:
    """A non-blocking TCP connection to ``host:port`` (each address tried for ``timeout`` seconds; resolving too),
    or ``Unreachable``."""
    try:  # an address needs no resolver: no hop to a thread
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except OSError:
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise Unreachable(
                f"cannot resolve {host}: {_why(e, timeout)}", "08001", "check the target's host and your DNS / VPN"
            ) from None
    last: Exception | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
        except (OSError, asyncio.TimeoutError) as e:
            sock.close()
            last = e
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small messages go out at once, as libpq's do
        return sock
    why = _why(last, timeout) if last is not None else "no address"
    raise Unreachable(
        f"cannot reach {host}:{port}: {why}",
        "08001",
        "check the port, the server's firewall rules and that it is running",
        why,
    )


def _why(e: BaseException, timeout: float) -> str:
    """An OS error as a short reason: "Connection refused", "Name or service not known", "no answer within 10 s"."""
    if isinstance(e, (TimeoutError, asyncio.TimeoutError)):
        return f"no answer within {timeout:g} s"
    if isinstance(e, socket.gaierror):
        return e.strerror or str(e)
    if isinstance(e, OSError) and e.errno and e.errno > 0:
        return os.strerror(e.errno)
    return str(e) or type(e).__name__
