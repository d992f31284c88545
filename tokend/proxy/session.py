"""One client connection through the local proxy: the client's start-up, the server's TLS and authentication with
the token, then a byte relay.

Who connected was already checked by the listener, at accept (``tokend.proxy``): a session only ever sees the
user's own clients.
Client leg: SSLRequest is answered 'S' (TCP, with the local certificate) or 'N' (the Unix socket), GSSENCRequest
'N'; a CancelRequest is forwarded to the target's server (inside TLS; at most ``Listening.cancels`` at once) and the
connection closed; the StartupMessage's user must be the target's user — or the OS login name, which libpq sends
when none is given. Refusals (wrong user, no token, the server's own refusal) come back as a proper ErrorResponse
after the StartupMessage, since libpq hides one sent in reply to SSLRequest.
Server leg: TCP, SSLRequest, TLS verified (verify-full), the StartupMessage with the target's user, the token as the
answer to the cleartext-password request; any other authentication request is refused with the reason.
The client never sees an authentication request: it gets the server's AuthenticationOk and what follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import getpass
import logging
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass

from tokend.config import Target
from tokend.errors import TokendError
from tokend.limits import Budget
from tokend.logs import Aggregated
from tokend.proxy import wire
from tokend.proxy.conn import Conn

log = logging.getLogger("tokend.proxy")
CONNECT_TIMEOUT = 10.0  # seconds to reach the server


class Refused(Exception):
    """Tell the client why (an ErrorResponse) and close."""

    def __init__(self, message: str, code: str = "28000", hint: str = "") -> None:
        super().__init__(message)
        self.code, self.hint = code, hint


@dataclass(frozen=True)
class Listening:
    """What a session needs to know about the listener it came in on."""

    target: Target
    tls: ssl.SSLContext | None  # for SSLRequests on TCP; None on the Unix socket (plain)
    upstream: ssl.SSLContext | None  # the target's, shared by its sessions; None: upstream_error says why
    where: str  # "127.0.0.1:6432" / the socket path, for log lines
    upstream_error: str  # why there is no upstream context
    cancels: Budget  # cancel requests this listener may be forwarding at once
    quiet: Aggregated  # the proxy's log for what clients can repeat at will


@dataclass(frozen=True)
class Cancel:
    message: bytes  # the whole CancelRequest, as the client sent it


TokenFor = Callable[[str], str]  # target name → a valid token (raises TokendError with the reason)


async def start(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    on: Listening,
    token_for: TokenFor,
    started: Callable[[], None] = lambda: None,
) -> tuple[Conn, Conn] | None:
    """Take one client connection up to a logged-in pair (client, server), or answer it (a refusal, a cancel)
    and return None. ``started()`` once the client's start-up message is in (the end of the pending stage)."""
    if sock.family != getattr(socket, "AF_UNIX", None):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small messages go out at once, as libpq's do
    client = Conn(loop, sock)
    server: Conn | None = None
    try:
        first = await _client_start(client, on)
        started()
        if isinstance(first, Cancel):
            await _cancel(client, first, on)
            return None
        params = _params_for(first, on.target)
        try:
            token = token_for(on.target.name)
        except TokendError as e:
            raise Refused(
                f"tokend has no valid token for target {on.target.name}: {e}",
                "08004",
                "see `tokend status` and `tokend doctor`",
            ) from None
        server = await _connect(loop, on)
        await server.write(wire.Startup(first.version, params).encode())
        await _authenticate(client, server, token, on.target)
        await client.write(wire.auth_ok())
        return client, server
    except Refused as e:
        with contextlib.suppress(OSError):  # a client that went away meanwhile
            await client.write(wire.error(str(e), e.code, e.hint))
        on.quiet.info(("refused", on.where, e.code), "proxy %s: refused a connection: %s", on.where, e)
    except (OSError, wire.ProtocolError, asyncio.IncompleteReadError) as e:
        on.quiet.info(
            ("ended", on.where), "proxy %s: connection ended during start-up: %s", on.where, e or type(e).__name__
        )
    except BaseException:  # cancelled (too slow, evicted, stopping) or a bug: both sockets go, now
        for c in (client, server):
            if c is not None:
                with contextlib.suppress(OSError):
                    c.sock.close()
        raise
    for c in (client, server):
        if c is not None:
            await c.close()
    return None


async def _client_start(client: Conn, on: Listening) -> wire.Startup | Cancel:
    """Answer SSL and GSS requests until the StartupMessage or a CancelRequest."""
    tls_done = False
    for _ in range(4):
        length, code = struct.unpack("!ii", await client.readexactly(8))
        if not 8 <= length <= wire.MAX_STARTUP:
            raise wire.ProtocolError(f"a start-up message of {length} bytes")
        body = await client.readexactly(length - 8)
        if code == wire.SSL_REQUEST and not tls_done:
            if on.tls is None:
                await client.write(b"N")
            else:
                await client.write(b"S")
                await client.start_tls(on.tls, server_side=True)
                tls_done = True
        elif code == wire.GSSENC_REQUEST:
            await client.write(b"N")
        elif code == wire.CANCEL_REQUEST:
            return Cancel(struct.pack("!ii", length, code) + body)
        elif code >> 16 == 3:
            return wire.Startup(code, wire.split_params(body))
        else:
            raise Refused(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}", "0A000")
    raise wire.ProtocolError("too many requests before the start-up message")


def _params_for(startup: wire.Startup, target: Target) -> dict[str, str]:
    """The client's parameters with the target's user; the OS login name (libpq's default) counts as no user."""
    params = dict(startup.params)
    asked = params.get("user", "")
    login = _login_name()
    if asked not in ("", target.user, login):
        raise Refused(
            f'tokend\'s proxy for target {target.name} logs in as "{target.user}" only, not "{asked}"',
            "28000",
            f'connect with user="{target.user}" (or give no user at all)',
        )
    db = params.get("database")
    if db in (None, "", asked):  # none given: libpq's default is the user name, so the target's user's
        db = target.database if target.database != "*" else target.user
    if target.database != "*" and db != target.database:
        raise Refused(
            f"target {target.name} is for database {target.database!r}, not {db!r}",
            "3D000",
            f"connect with dbname={target.database}",
        )
    params["database"] = db
    params["user"] = target.user
    return params


@functools.cache
def _login_name() -> str:
    """This process's login name (read once: it cannot change, and NSS may read /etc/passwd each time)."""
    try:
        return getpass.getuser()
    except Exception:  # no login name at all (a container with an unnamed uid)
        return ""


async def _connect(loop: asyncio.AbstractEventLoop, on: Listening) -> Conn:
    t = on.target
    if on.upstream is None:
        raise Refused(on.upstream_error, "08001", "fix the target's sslrootcert")
    try:  # an address needs no resolver: no hop to a thread
        infos = socket.getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except OSError:
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as e:
            raise Refused(
                f"cannot resolve {t.host}: {e}", "08001", "check the target's host and your DNS / VPN"
            ) from None
    last: Exception | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, address), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as e:
            sock.close()
            last = e
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = Conn(loop, sock)
        await server.write(wire.ssl_request())
        if await server.readexactly(1) != b"S":
            await server.close()
            raise Refused(
                f"{t.host}:{t.port} does not offer TLS; Azure requires it",
                "08001",
                "is this the right server and port?",
            )
        try:
            await server.start_tls(on.upstream, server_side=False, server_hostname=t.host)
        except ssl.SSLError as e:
            await server.close()
            raise Refused(
                f"TLS to {t.host}:{t.port} failed: {e.reason or e}",
                "08001",
                "set the target's sslrootcert to the CA that signed the server's certificate",
            ) from None
        return server
    raise Refused(
        f"cannot reach {t.host}:{t.port}: {last}",
        "08001",
        "check the port, the server's firewall rules and that it is running",
    )


async def _authenticate(client: Conn, server: Conn, token: str, target: Target) -> None:
    """Answer the server's authentication with the token, passing on what the client must see, until
    AuthenticationOk."""
    while True:
        kind = await server.readexactly(1)
        (length,) = struct.unpack("!i", await server.readexactly(4))
        if not 4 <= length <= wire.MAX_SERVER_MESSAGE:
            raise wire.ProtocolError(f"a server message of {length} bytes")
        body = await server.readexactly(length - 4)
        if kind == b"R":
            (code,) = struct.unpack("!i", body[:4])
            if code == wire.AUTH_OK:
                return
            if code == wire.AUTH_CLEARTEXT:
                await server.write(wire.password(token))
                continue
            raise Refused(
                f"{target.host} asked for {wire.AUTH_NAMES.get(code, f'authentication {code}')}; tokend's "
                "proxy answers only password requests, as Azure's Entra logins use",
                "28000",
                "is the target's user an Entra principal on this server?",
            )
        if kind == b"E":
            fields = wire.error_fields(body)
            hint = f'tokend logged in as "{target.user}" with identity {target.identity}\'s token; see `tokend status`'
            raise Refused(
                fields.get("M", "the server refused the login"),
                fields.get("C", "28000"),
                "; ".join(h for h in (fields.get("H"), hint) if h),
            )
        await client.write(kind + struct.pack("!i", length) + body)  # NegotiateProtocolVersion, notices


async def _cancel(client: Conn, cancel: Cancel, on: Listening) -> None:
    """A client's CancelRequest (its key is the server's own, relayed in BackendKeyData) to the target's server,
    unless the listener already forwards as many as it may; then the client's connection closes."""
    if not on.cancels.take(1):
        on.quiet.warning(
            ("cancels", on.where),
            "proxy %s: dropped a cancel request: %d are being forwarded already",
            on.where,
            on.cancels.total,
        )
    else:
        try:
            await _forward(client.loop, cancel, on)
        finally:
            on.cancels.give(1)
    await client.close()


async def _forward(loop: asyncio.AbstractEventLoop, cancel: Cancel, on: Listening) -> None:
    try:
        server = await asyncio.wait_for(_connect(loop, on), CONNECT_TIMEOUT * 2)
    except (Refused, OSError, asyncio.TimeoutError) as e:
        on.quiet.info(("cancel failed", on.where), "proxy %s: could not forward a cancel request: %s", on.where, e)
        return
    try:
        with contextlib.suppress(OSError):
            await server.write(cancel.message)
        await server.close()
    except BaseException:
        with contextlib.suppress(OSError):
            server.sock.close()
        raise
