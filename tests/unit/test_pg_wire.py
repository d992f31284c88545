"""The wire messages: start-up packets round-trip, ErrorResponse fields, typed messages bounded by their limit, query
results decoded (NULL kept apart from the empty string), and malformed input a ProtocolError, never a crash."""

from __future__ import annotations

import struct

import pytest

from tokend.pg import wire

from support.pgserver import command_complete, data_row, error_response, parameter


def test_startup_round_trips_through_split_params() -> None:
    params = {"user": "DBA Group", "database": "appdb", "application_name": "psql"}
    packet = wire.Startup(wire.PROTOCOL_3_0, params).encode()
    length, version = struct.unpack("!ii", packet[:8])
    assert length == len(packet) and version == 196608
    assert wire.split_params(packet[8:]) == params


@pytest.mark.parametrize(
    "body",
    [b"user\0x", b"user\0\0", b"user\0x\0database\0\0", b"\xff\xfe\0x\0\0"],
    ids=["unended", "odd", "half", "utf8"],
)
def test_a_malformed_startup_body_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(wire.ProtocolError):
        wire.split_params(body)


def test_ssl_request_is_the_eight_bytes_libpq_sends() -> None:
    assert wire.ssl_request() == bytes.fromhex("0000000804d2162f")


def test_error_response_fields_round_trip_with_the_hint() -> None:
    message = wire.error('role "x" does not exist', "28000", "ask your administrator")
    kind, size = wire.header(message[: wire.HEADER], wire.MAX_SERVER_MESSAGE)
    assert kind == b"E" and size == len(message) - wire.HEADER
    fields = wire.error_fields(message[wire.HEADER :])
    assert fields == {
        "S": "FATAL",
        "V": "FATAL",
        "C": "28000",
        "M": 'role "x" does not exist',
        "H": "ask your administrator",
    }


def test_server_error_carries_message_sqlstate_and_fields() -> None:
    body = error_response(S="FATAL", C="28P01", M='password authentication failed for user "DBA Group"')[5:]
    e = wire.ServerError(wire.error_fields(body))
    assert str(e) == 'password authentication failed for user "DBA Group"'
    assert e.code == "28P01" and e.fields["S"] == "FATAL"
    assert str(wire.ServerError({})) == "the server refused" and wire.ServerError({}).code == ""


@pytest.mark.parametrize("length", [3, -1, wire.MAX_SERVER_MESSAGE + 1])
def test_a_message_length_out_of_bounds_is_refused_before_its_body(length: int) -> None:
    with pytest.raises(wire.ProtocolError, match=f"a server message of {length} bytes"):
        wire.header(b"R" + struct.pack("!i", length), wire.MAX_SERVER_MESSAGE)


def test_the_limit_is_inclusive_and_the_empty_body_allowed() -> None:
    assert wire.header(b"Z" + struct.pack("!i", 4), 4) == (b"Z", 0)
    assert wire.header(b"D" + struct.pack("!i", wire.MAX_MESSAGE), wire.MAX_MESSAGE)[1] == wire.MAX_MESSAGE - 4


def test_password_and_typed_messages_carry_their_length() -> None:
    assert wire.password("tok") == b"p\0\0\0\x08tok\0"
    assert wire.typed(b"X", b"") == wire.terminate() == b"X\0\0\0\x04"
    assert wire.query("select 1") == b"Q\0\0\0\x0dselect 1\0"
    assert wire.auth_ok() == b"R\0\0\0\x08\0\0\0\0"


def test_auth_code_reads_the_request_and_refuses_a_truncated_one() -> None:
    assert wire.auth_code(struct.pack("!i", 3)) == wire.AUTH_CLEARTEXT
    assert wire.auth_code(struct.pack("!i", 10) + b"SCRAM-SHA-256\0\0") == 10
    with pytest.raises(wire.ProtocolError, match="truncated"):
        wire.auth_code(b"\0\0")


def test_query_results_decode_null_apart_from_empty() -> None:
    assert wire.data_row(data_row("a", None, "", "ünï")[5:]) == ["a", None, "", "ünï"]
    assert wire.command_tag(command_complete("SELECT 3")[5:]) == "SELECT 3"
    assert wire.parameter(parameter("server_version", "16.4")[5:]) == ("server_version", "16.4")


@pytest.mark.parametrize(
    "body",
    [b"\0", b"\0\x01\0\0", b"\0\x01\0\0\0\x09abc", b"\0\x02\0\0\0\x01a"],
    ids=["no count", "no size", "short value", "missing column"],
)
def test_a_truncated_data_row_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(wire.ProtocolError, match="truncated"):
        wire.data_row(body)
