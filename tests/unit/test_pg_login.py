"""The one login: the generator against scripted server bytes (a login that works, a bad password's ErrorResponse
with its fields, a server refusing TLS, a failed handshake, another authentication method, a truncated and an
oversize message) — the token leaves only inside TLS and only when asked for — and both drivers against a real
loopback connection: the blocking one with its deadline, the asynchronous one over the proxy's Conn."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from tokend.pg import login, wire
from tokend.pg import tls as pgtls
from tokend.proxy.conn import Conn

from support.net import closed_port
from support.pgserver import (
    ServerGone,
    auth,
    error_response,
    one_connection,
    parameter,
    play,
    read_exactly,
    read_untyped,
    ready_for_query,
    server_tls,
    tls_login,
    typed,
)

TOKEN = "eyJ0eXAi.not-a-real-token.sig"
PARAMS = {"user": "DBA Group", "database": "appdb"}
LOGGED_IN = auth(0) + parameter("server_version", "16.4") + typed(b"K", struct.pack("!ii", 7, 42)) + ready_for_query()


def steps(**kw: Any) -> Any:
    return login.login(PARAMS, TOKEN, "db.example", 5432, **kw)


def kinds(played: Any) -> list[str]:
    return [type(s).__name__ for s in played.steps]


def test_a_login_that_works_sends_the_token_inside_tls_when_asked() -> None:
    result, p = play(steps(), b"S" + auth(3) + LOGGED_IN)
    assert result == {"server_version": "16.4"}
    assert p.sent == [wire.ssl_request(), wire.Startup(wire.PROTOCOL_3_0, PARAMS).encode(), wire.password(TOKEN)]
    assert kinds(p)[:3] == ["Send", "Need", "StartTLS"]  # nothing else before TLS
    assert p.left == b""


def test_without_waiting_for_ready_it_stops_at_authentication_ok() -> None:
    rest = parameter("server_version", "16.4") + ready_for_query()
    result, p = play(steps(wait_ready=False, version=(3 << 16) | 2), b"S" + auth(3) + auth(0) + rest)
    assert result == {} and p.left == rest  # the proxy relays the rest as it comes
    assert struct.unpack("!i", p.sent[1][4:8])[0] == 196610  # the client's protocol version goes on


def test_a_bad_password_is_the_servers_error_with_its_fields() -> None:
    refusal = error_response(
        S="FATAL", V="FATAL", C="28P01", M='password authentication failed for user "DBA Group"', H="check the group"
    )
    with pytest.raises(wire.ServerError) as e:
        play(steps(), b"S" + auth(3) + refusal)
    assert str(e.value) == 'password authentication failed for user "DBA Group"'
    assert e.value.code == "28P01" and e.value.fields["H"] == "check the group" and e.value.fields["S"] == "FATAL"


def test_an_error_after_authentication_is_raised_too() -> None:
    with pytest.raises(wire.ServerError, match='database "nope" does not exist') as e:
        play(
            steps(), b"S" + auth(3) + auth(0) + error_response(S="FATAL", C="3D000", M='database "nope" does not exist')
        )
    assert e.value.code == "3D000"


@pytest.mark.parametrize("answer", [b"N", b"E"])
def test_a_server_refusing_tls_never_sees_the_startup_or_the_token(answer: bytes) -> None:
    with pytest.raises(login.NoTLS) as e:
        play(steps(), answer + auth(3))
    assert str(e.value) == "db.example:5432 does not offer TLS; Azure requires it"
    assert e.value.code == "08001" and e.value.hint == "is this the right server and port?"
    assert e.value.played.sent == [wire.ssl_request()]  # type: ignore[attr-defined]


def test_a_failed_handshake_says_why_and_sends_nothing_more() -> None:
    err = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    err.reason = "CERTIFICATE_VERIFY_FAILED"
    with pytest.raises(login.TLSFailed) as e:
        play(steps(), b"S", tls_error=err)
    assert str(e.value) == "TLS to db.example:5432 failed: CERTIFICATE_VERIFY_FAILED"
    assert "sslrootcert" in e.value.hint and e.value.reason == "CERTIFICATE_VERIFY_FAILED"
    assert e.value.played.sent == [wire.ssl_request()]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("code", "name"), [(10, "SASL (SCRAM)"), (5, "MD5 password"), (99, "authentication 99")])
def test_another_authentication_method_is_refused_by_name_without_the_token(code: int, name: str) -> None:
    with pytest.raises(login.Unsupported) as e:
        play(steps(), b"S" + typed(b"R", struct.pack("!i", code) + b"SCRAM-SHA-256\0\0"))
    assert str(e.value).startswith(f"db.example asked for {name}; tokend answers only password requests")
    assert e.value.code == "28000"
    assert wire.password(TOKEN) not in e.value.played.sent  # type: ignore[attr-defined]


def test_notices_before_authentication_ok_are_passed_on_whole() -> None:
    notice = typed(b"N", b"SNOTICE\0Mhello\0\0")
    negotiate = typed(b"v", struct.pack("!ii", 0, 0))
    _, p = play(steps(), b"S" + notice + auth(3) + negotiate + LOGGED_IN)
    assert p.passed == [notice, negotiate]


def test_a_truncated_message_is_a_protocol_error_or_a_server_gone() -> None:
    with pytest.raises(wire.ProtocolError, match="truncated authentication request"):
        play(steps(), b"S" + typed(b"R", b"\0"))
    with pytest.raises(ServerGone):  # the driver's "closed the connection": the generator asked for the rest
        play(steps(), b"S" + auth(3)[:7])


def test_an_oversize_message_is_refused_before_its_body_is_asked_for() -> None:
    huge = b"N" + struct.pack("!i", wire.MAX_SERVER_MESSAGE + 5)
    with pytest.raises(wire.ProtocolError, match="a server message of") as e:
        play(steps(), b"S" + huge + b"x" * 100)
    needs = [s.n for s in e.value.played.steps if isinstance(s, login.Need)]  # type: ignore[attr-defined]
    assert max(needs) == wire.HEADER


# -- the drivers, over a real loopback connection --------------------------------------------------------------------
def test_the_blocking_driver_logs_in_with_tls_verified(tmp_path: Path) -> None:
    server_ctx, cert = server_tls(tmp_path)
    got: dict[str, Any] = {}
    with one_connection(tls_login(server_ctx, LOGGED_IN, got)) as s:
        io = login.Blocking(
            login.connect("127.0.0.1", s.port, 5), "127.0.0.1", s.port, pgtls.context("verify-full", cert)
        )
        try:
            assert io.run(login.login(PARAMS, TOKEN, "127.0.0.1", s.port), 10) == {"server_version": "16.4"}
            assert isinstance(io.sock, ssl.SSLSocket) and io.sock.version() in ("TLSv1.2", "TLSv1.3")
        finally:
            io.close()
    assert got["ssl"][0] == wire.SSL_REQUEST
    assert wire.split_params(got["startup"][1]) == PARAMS
    assert got["password"] == (b"p", TOKEN.encode() + b"\0")


def test_the_blocking_driver_refuses_a_certificate_it_cannot_verify(tmp_path: Path) -> None:
    server_ctx, _ = server_tls(tmp_path)
    other = tmp_path / "other"
    _, other_cert = server_tls(other)
    got: dict[str, Any] = {}

    def handler(conn: socket.socket) -> None:
        got["ssl"] = read_untyped(conn)
        conn.sendall(b"S")
        with contextlib.suppress(ssl.SSLError, OSError):  # the client hangs up mid-handshake
            server_ctx.wrap_socket(conn, server_side=True).close()

    with one_connection(handler) as s:
        io = login.Blocking(
            login.connect("127.0.0.1", s.port, 5), "127.0.0.1", s.port, pgtls.context("verify-full", other_cert)
        )
        with pytest.raises(login.TLSFailed, match=f"TLS to 127.0.0.1:{s.port} failed: CERTIFICATE_VERIFY_FAILED"):
            io.run(login.login(PARAMS, TOKEN, "127.0.0.1", s.port), 10)
        io.close()


def test_the_blocking_driver_gives_up_at_its_deadline() -> None:
    def silent(conn: socket.socket) -> None:
        read_untyped(conn)
        with pytest.raises(ServerGone):  # holds the line, answering nothing, until the client goes
            read_exactly(conn, 1)

    with one_connection(silent) as s:
        io = login.Blocking(login.connect("127.0.0.1", s.port, 5), "127.0.0.1", s.port, pgtls.context("require"))
        t0 = time.monotonic()
        with pytest.raises(login.LoginError, match=rf"127\.0\.0\.1:{s.port} did not answer within 0\.3 s"):
            io.run(login.request_tls("127.0.0.1", s.port), 0.3)
        assert time.monotonic() - t0 < 5
        io.close()


def test_the_blocking_driver_says_when_the_server_closes_mid_message() -> None:
    def closes(conn: socket.socket) -> None:
        conn.sendall(auth(3)[:3])  # half a message, then the end of the connection

    with one_connection(closes) as s:
        io = login.Blocking(login.connect("127.0.0.1", s.port, 5), "127.0.0.1", s.port)
        with pytest.raises(login.LoginError, match=r"127\.0\.0\.1 closed the connection"):
            io.run(login.message(), 5)
        io.close()


def test_bytes_before_the_handshake_are_refused_as_an_injection() -> None:
    """CVE-2021-23222: a man in the middle answers 'S' and appends plain bytes that the client would read as if they
    came inside TLS."""

    def injects(conn: socket.socket) -> None:
        read_untyped(conn)
        conn.sendall(b"S" + auth(0) + ready_for_query())  # one write: one read on the other side
        with pytest.raises(ServerGone):
            read_exactly(conn, 1)

    with one_connection(injects) as s:
        io = login.Blocking(login.connect("127.0.0.1", s.port, 5), "127.0.0.1", s.port, pgtls.context("require"))
        with pytest.raises(wire.ProtocolError, match="unencrypted bytes"):
            io.run(login.request_tls("127.0.0.1", s.port), 5)
        io.close()


def test_connect_names_the_unreachable_port() -> None:
    port = closed_port()
    with pytest.raises(login.Unreachable, match=rf"cannot reach 127\.0\.0\.1:{port}: Connection refused") as e:
        login.connect("127.0.0.1", port, 5)
    assert e.value.reason == "Connection refused" and "firewall" in e.value.hint


def test_the_async_driver_logs_in_over_the_proxys_conn_and_passes_notices_on(tmp_path: Path) -> None:
    server_ctx, cert = server_tls(tmp_path)
    notice = typed(b"N", b"SNOTICE\0Mhello\0\0")
    got: dict[str, Any] = {}
    after = LOGGED_IN

    def handler(conn: socket.socket) -> None:
        got["ssl"] = read_untyped(conn)
        conn.sendall(b"S")
        with server_ctx.wrap_socket(conn, server_side=True) as t:
            got["startup"] = read_untyped(t)
            t.sendall(notice + auth(3))
            got["password"] = read_exactly(t, len(wire.password(TOKEN)))
            t.sendall(after)

    async def run(port: int) -> tuple[Any, list[bytes], bytes]:
        loop = asyncio.get_running_loop()
        sock = await login.open_async(loop, "127.0.0.1", port, 5)
        conn = Conn(loop, sock)
        passed: list[bytes] = []

        async def keep(message: bytes) -> None:
            passed.append(message)

        ctx = pgtls.context("verify-full", cert)
        steps = login.login(PARAMS, TOKEN, "127.0.0.1", port, wait_ready=False)
        result = await login.run_async(conn, steps, ctx, "127.0.0.1", keep)
        rest = await conn.readexactly(len(after) - len(auth(0)))
        await conn.close()
        return result, passed, rest

    with one_connection(handler) as s:
        result, passed, rest = asyncio.run(run(s.port))
    assert result == {} and passed == [notice]
    assert rest == after[len(auth(0)) :]  # what follows AuthenticationOk is left for the relay
    assert got["password"] == wire.password(TOKEN)


def test_the_async_opener_names_what_it_could_not_reach() -> None:
    port = closed_port()

    async def run(host: str) -> None:
        await login.open_async(asyncio.get_running_loop(), host, port, 5)

    with pytest.raises(login.Unreachable, match=rf"cannot reach 127\.0\.0\.1:{port}: Connection refused"):
        asyncio.run(run("127.0.0.1"))
    with pytest.raises(login.Unreachable, match=r"cannot resolve no-such-host\.invalid") as e:
        asyncio.run(run("no-such-host.invalid"))
    assert "DNS" in e.value.hint
