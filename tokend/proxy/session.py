"""One client connection through the local proxy: the client's start-up, the server's TLS and authentication with
the token, then a byte relay.

Who connected was already checked by the listener, at accept (``tokend.proxy``): a session only ever sees the
user's own clients.
Client leg: a TLS request is answered 'S' (TCP, with the local certificate) or 'N' (the Unix socket), a GSS one
'N'; a CancelRequest is forwarded to the target's server (inside TLS; at most ``Listening.cancels`` at once) and the
connection closed; the StartupMessage's user must be the target's user — or the OS login name, which libpq sends
when none is given. Refusals (wrong user, no token, the server's own refusal) come back as a proper ErrorResponse
after the StartupMessage, since libpq hides one sent in reply to its TLS request.
Server leg: the one login (``tokend.pg.login``, driven on this loop): TCP, TLS requested and verified (verify-full,
the listener's shared context), the StartupMessage with the client's protocol version and parameters, the target's
user and the person in application_name (``tokend.proxy.audit``), the token as the answer to the cleartext-password
request; any other authentication request is refused with the reason. The client never sees an authentication
request: it gets what the server sent before it (notices, NegotiateProtocolVersion), then the server's
AuthenticationOk and what follows, relayed.
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

from tokend import advice
from tokend import principal as principal_mod
from tokend.config import Target
from tokend.errors import TokendError
from tokend.limits import Budget
from tokend.logs import Aggregated
from tokend.pg import login, wire
from tokend.proxy import audit
from tokend.proxy.conn import Conn
from tokend.token import display_claims

log = logging.getLogger("tokend.proxy")
CONNECT_TIMEOUT = 10.0  # seconds to reach the server


class Refused(Exception):
    """Tell the client why (an ErrorResponse) and close."""

    def __init__(self, message: str, code: str = "28000", hint: str = "") -> None:
        super().__init__(message)
        self.code, self.hint = code, hint


@dataclass
class ServerLeg:
    """The last failure of the proxy's own connection to the target's server (unreachable, TLS refused or not
    trusted), cleared by the next login that reaches it: status shows it as the proxy's ``last_error``."""

    last_error: str | None = None


@dataclass(frozen=True)
class Listening:
    """What a session needs to know about the listener it came in on."""

    target: Target
    tls: ssl.SSLContext | None  # for clients' TLS requests on TCP; None on the Unix socket (plain)
    upstream: ssl.SSLContext | None  # the target's, shared by its sessions; None: upstream_error says why
    where: str  # "127.0.0.1:6432" / the socket path, for log lines
    upstream_error: str  # why there is no upstream context
    cancels: Budget  # cancel requests this listener may be forwarding at once
    quiet: Aggregated  # the proxy's log for what clients can repeat at will
    server: ServerLeg  # the listener's, kept across config swaps


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
    record: audit.Record | None = None,
) -> tuple[Conn, Conn] | None:
    """Take one client connection up to a logged-in pair (client, server), or answer it (a refusal, a cancel)
    and return None. ``started()`` once the client's start-up message is in (the end of the pending stage).
    ``record``: the audit log's, filled in as the start-up goes (database, principal, outcome, …)."""
    note = record if record is not None else audit.Record(on.target.name, on.where)
    if sock.family != getattr(socket, "AF_UNIX", None):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small messages go out at once, as libpq's do
    client = Conn(loop, sock)
    server: Conn | None = None
    try:
        first = await _client_start(client, on)
        started()
        if isinstance(first, Cancel):
            note.outcome = "cancel request"
            await _cancel(client, first, on)
            return None
        t = on.target
        note.application_name = first.params.get("application_name")
        note.database, note.user = first.params.get("database"), first.params.get("user")
        token = None
        if principal_mod.follows(t):  # user = "@principal": the signed-in principal's own role, from the token
            token = _token(token_for, t)
            try:
                t = principal_mod.resolve(t, display_claims(token))
            except principal_mod.Unresolved as e:
                raise Refused(str(e), "28000", "see `tokend doctor`") from None
        params = _params_for(first, t)
        note.database, note.user = params["database"], params["user"]
        token = token or _token(token_for, t)
        principal, oid = audit.principal_of(token)
        note.principal, note.oid = principal or None, oid or None
        if t.application_name is not None:  # the person behind the (group) login, for pg_stat_activity and %a
            params["application_name"] = audit.application_name(
                t.application_name, params.get("application_name", ""), principal
            )
        try:
            server = await _open(loop, on)
            await _login(
                client, server, on, login.login(params, token, t.host, t.port, first.version, wait_ready=False)
            )
        except Refused as e:
            if e.code.startswith("08"):  # the server is unreachable or its TLS failed: status says so until it works
                on.server.last_error = f"{e}; fix: {e.hint}" if e.hint else str(e)
            raise
        on.server.last_error = None
        await client.write(wire.auth_ok())
        note.outcome = "ok"
        return client, server
    except Refused as e:
        note.outcome = f"refused: {e}"
        with contextlib.suppress(OSError):  # a client that went away meanwhile
            await client.write(wire.error(str(e), e.code, e.hint))
        on.quiet.info(("refused", on.where, e.code), "proxy %s: refused a connection: %s", on.where, e)
    except (OSError, wire.ProtocolError, asyncio.IncompleteReadError) as e:
        note.outcome = f"error: the connection ended during start-up: {e or type(e).__name__}"
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


def _token(token_for: TokenFor, t: Target) -> str:
    """The target's token, or the refusal that says why there is none."""
    try:
        return token_for(t.name)
    except TokendError as e:
        raise Refused(
            f"tokend has no valid token for target {t.name}: {e}", "08004", "see `tokend status` and `tokend doctor`"
        ) from None


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


def _params_for(first: wire.Startup, target: Target) -> dict[str, str]:
    """The client's parameters with the target's user; the OS login name (libpq's default) counts as no user."""
    params = dict(first.params)
    asked = params.get("user", "")
    if asked not in ("", target.user, _login_name()):
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


async def _open(loop: asyncio.AbstractEventLoop, on: Listening) -> Conn:
    """A TCP connection to the target's server, on this loop."""
    if on.upstream is None:
        raise Refused(on.upstream_error, "08001", advice.server_tls(on.target.name, on.target.host))
    try:
        return Conn(loop, await login.open_async(loop, on.target.host, on.target.port, CONNECT_TIMEOUT))
    except login.LoginError as e:
        raise Refused(str(e), e.code, e.hint) from None


async def _login(client: Conn | None, server: Conn, on: Listening, steps: login.Gen[object]) -> None:
    """Run the login's ``steps`` over ``server``: what the server sends before AuthenticationOk goes to ``client``;
    a failure is a refusal the client is told of, the server's own with its hint and tokend's."""
    t = on.target
    assert on.upstream is not None  # _open refuses without one
    try:
        await login.run_async(server, steps, on.upstream, t.host, client.write if client else None)
    except wire.ServerError as e:
        message = e.fields.get("M", "the server refused the login")
        hint = f'tokend logged in as "{t.user}" with identity {t.identity}\'s token'
        fix = advice.for_login_error(message, t.name, t.host, t.user)  # the same words doctor and admin say
        raise Refused(message, e.code or "28000", "; ".join(h for h in (e.fields.get("H"), hint, fix) if h)) from None
    except login.TLSFailed as e:
        raise Refused(str(e), e.code, advice.server_tls(t.name, t.host)) from None
    except login.LoginError as e:
        raise Refused(str(e), e.code, e.hint) from None


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
    """The cancel request inside TLS, as libpq sends one (the server's part of the login, up to TLS)."""
    opened: list[Conn] = []

    async def reach() -> Conn:
        server = await _open(loop, on)
        opened.append(server)
        await _login(None, server, on, login.request_tls(on.target.host, on.target.port))
        return server

    try:
        try:
            server = await asyncio.wait_for(reach(), CONNECT_TIMEOUT * 2)
        except (Refused, OSError, wire.ProtocolError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            on.quiet.info(("cancel failed", on.where), "proxy %s: could not forward a cancel request: %s", on.where, e)
            for c in opened:
                await c.close()
            return
        with contextlib.suppress(OSError):
            await server.write(cancel.message)
        await server.close()
    except BaseException:
        for c in opened:
            with contextlib.suppress(OSError):
                c.sock.close()
        raise
