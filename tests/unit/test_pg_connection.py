"""The small connection ``tokend admin`` runs its SQL on: the one login with TLS verified against the target's CA
file, the token as the password, the simple query protocol (rows with NULL apart from '', each statement's tag, the
first error raised once the server is ready again), Terminate at close; identifiers and literals quoted for any
standard_conforming_strings."""

from __future__ import annotations

import dataclasses
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from tokend.config import Target
from tokend.errors import TokendError
from tokend.pg import connection, login, wire
from tokend.pg.connection import Connection, ServerError, ident, literal

from support.builders import target
from support.pgserver import (
    auth,
    command_complete,
    data_row,
    error_response,
    one_connection,
    parameter,
    read_typed,
    ready_for_query,
    server_tls,
    tls_login,
    typed,
)

TOKEN = "eyJ0eXAi.not-a-real-token.sig"
LOGGED_IN = auth(0) + parameter("server_version", "16.4") + ready_for_query()


def at(port: int, cert: Path, database: str = "*") -> Target:
    return dataclasses.replace(target(host="127.0.0.1", port=port, database=database), sslrootcert=cert)


def test_queries_return_rows_and_tags_and_the_first_error_after_ready(tmp_path: Path) -> None:
    server_ctx, cert = server_tls(tmp_path)
    got: dict[str, Any] = {"queries": []}

    def queries(t: ssl.SSLSocket) -> None:
        _, body = read_typed(t)
        got["queries"].append(body)
        row_description = typed(b"T", b"\0\x02" + (b"a\0" + b"\0" * 18) + (b"b\0" + b"\0" * 18))
        t.sendall(
            row_description
            + data_row("1", None)
            + data_row("", "x")
            + command_complete("SELECT 2")
            + command_complete("GRANT")
            + ready_for_query()
        )
        _, body = read_typed(t)
        got["queries"].append(body)
        t.sendall(error_response(S="ERROR", C="42501", M="permission denied for table t") + ready_for_query())
        got["last"] = read_typed(t)

    with (
        one_connection(tls_login(server_ctx, LOGGED_IN, got, queries)) as s,
        Connection(at(s.port, cert), TOKEN) as conn,
    ):
        results = conn.query("select a, b from t; grant select on t to x")
        assert [r.rows for r in results] == [[["1", None], ["", "x"]], []]
        assert [r.command for r in results] == ["SELECT 2", "GRANT"]
        with pytest.raises(ServerError, match="permission denied for table t") as e:
            conn.rows("select * from t")
        assert e.value.code == "42501"
    assert wire.split_params(got["startup"][1]) == {
        "user": "DBA Group",
        "database": "postgres",  # "*" targets: the maintenance database
        "application_name": connection.APPLICATION,
    }
    assert got["password"] == (b"p", TOKEN.encode() + b"\0")
    assert got["queries"] == [b"select a, b from t; grant select on t to x\0", b"select * from t\0"]
    assert got["last"] == (b"X", b"")  # Terminate at close


def test_the_servers_refusal_at_login_is_its_error(tmp_path: Path) -> None:
    server_ctx, cert = server_tls(tmp_path)
    refusal = error_response(S="FATAL", C="28P01", M='password authentication failed for user "DBA Group"')
    with (
        one_connection(tls_login(server_ctx, refusal, {})) as s,
        pytest.raises(ServerError, match="password authentication failed") as e,
    ):
        Connection(at(s.port, cert, "appdb"), TOKEN, "reports")
    assert e.value.code == "28P01"


def test_a_server_that_does_not_verify_is_refused_before_the_token_leaves(tmp_path: Path) -> None:
    server_ctx, _ = server_tls(tmp_path / "server")
    _, other = server_tls(tmp_path / "other")
    got: dict[str, Any] = {}
    with (
        one_connection(lambda conn: _tls_then_nothing(conn, server_ctx, got)) as s,
        pytest.raises(login.TLSFailed, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        Connection(at(s.port, other), TOKEN)
    assert "startup" not in got


def _tls_then_nothing(conn: socket.socket, ctx: ssl.SSLContext, got: dict[str, Any]) -> None:
    conn.recv(8)
    conn.sendall(b"S")
    try:
        with ctx.wrap_socket(conn, server_side=True) as t:
            got["startup"] = t.recv(100)
    except (ssl.SSLError, OSError):
        pass


def test_a_ca_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(TokendError, match=r"cannot load the CA file .*missing\.pem: No such file or directory"):
            Connection(at(listener.getsockname()[1], tmp_path / "missing.pem"), TOKEN)
    finally:
        listener.close()


@pytest.mark.parametrize(
    ("name", "quoted"),
    [("DBA Group", '"DBA Group"'), ('say "hi"', '"say ""hi"""'), ("Ünï", '"Ünï"')],
)
def test_identifiers_keep_case_spaces_and_quotes(name: str, quoted: str) -> None:
    assert ident(name) == quoted


@pytest.mark.parametrize(
    ("text", "quoted"),
    [("DBA Group", "'DBA Group'"), ("it's", "'it''s'"), ("a\\' OR 1=1 --", "E'a\\\\'' OR 1=1 --'")],
)
def test_literals_mean_the_text_whatever_standard_conforming_strings_says(text: str, quoted: str) -> None:
    assert literal(text) == quoted
