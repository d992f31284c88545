"""The emulator's token check for PostgreSQL: an LDAP simple bind whose password is an Entra token. The BER here is
encoded and decoded by the test's own few lines (RFC 4511), not the module's, and the handler runs in-process over
a socket pair: no server is started."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tokend.emulator import ldapcheck
from tokend.emulator.directory import RESOURCES, Directory
from tokend.emulator.ldapcheck import INVALID_CREDENTIALS, PROTOCOL_ERROR, SUCCESS, LdapCheck


def ber(tag: int, value: bytes) -> bytes:
    """One BER TLV, long-form length from 128 bytes on (X.690 8.1.3)."""
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + value


def integer(n: int) -> bytes:
    return ber(0x02, n.to_bytes((n.bit_length() + 8) // 8 or 1, "big", signed=True))


def bind_request(msg_id: int, role: str, password: bytes, auth_tag: int = 0x80) -> bytes:
    dn = f"cn={role},ou=roles,dc=tokend".encode()
    op = ber(0x60, integer(3) + ber(0x04, dn) + ber(auth_tag, password))
    return ber(0x30, integer(msg_id) + op)


def parse(data: bytes) -> tuple[int, bytes, bytes]:
    """(tag, value, rest) of the first TLV in ``data``."""
    tag, first, pos = data[0], data[1], 2
    length = first
    if first & 0x80:
        length, pos = int.from_bytes(data[2 : 2 + (first & 0x7F)], "big"), 2 + (first & 0x7F)
    return tag, data[pos : pos + length], data[pos + length :]


def bind_response(data: bytes) -> tuple[int, int, str]:
    """(message id, result code, diagnostic message) of a BindResponse."""
    tag, message, _ = parse(data)
    assert tag == 0x30
    tag, mid, rest = parse(message)
    assert tag == 0x02
    tag, op, _ = parse(rest)
    assert tag == 0x61  # [APPLICATION 1] BindResponse
    tag, code, rest = parse(op)
    assert tag == 0x0A  # ENUMERATED resultCode
    tag, matched, rest = parse(rest)
    assert tag == 0x04 and matched == b""
    tag, text, _ = parse(rest)
    assert tag == 0x04
    return int.from_bytes(mid, "big", signed=True), code[0], text.decode()


@pytest.fixture(scope="module")
def directory() -> Directory:
    d = Directory()
    alice = d.add_user("alice@contoso.example")
    d.add_user("bob@contoso.example")
    d.add_group("DBA Group", alice.oid)
    return d


@pytest.fixture
def check(directory: Directory) -> Iterator[LdapCheck]:
    """An LdapCheck whose socket is bound on loopback but never served: only its handler and bind() are used."""
    c = LdapCheck(directory)
    yield c
    c._server.server_close()


def token_of(d: Directory, upn: str) -> bytes:
    return d.mint(RESOURCES[0], user=d.users[upn])[0].encode()


def converse(check: LdapCheck, request: bytes) -> bytes:
    """Send ``request`` and end the stream; run the server's handler on the other end; return all it answered."""
    client, server = socket.socketpair()
    with client, server:
        client.sendall(request)
        client.shutdown(socket.SHUT_WR)
        ldapcheck._Handler(server, ("local", 0), check._server)
        server.shutdown(socket.SHUT_WR)  # not close(): unread input would turn it into a reset
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_the_hba_options_point_postgresql_at_the_check() -> None:
    assert ldapcheck.hba_options(3890) == (
        'ldapserver=127.0.0.1 ldapport=3890 ldapprefix="cn=" ldapsuffix=",ou=roles,dc=tokend"'
    )


def test_a_bind_with_a_members_token_succeeds_over_the_wire(check: LdapCheck, directory: Directory) -> None:
    token = token_of(directory, "alice@contoso.example")
    assert len(token) > 255  # a real token needs BER's long-form length, as PostgreSQL sends it
    answer = converse(check, bind_request(200, "DBA Group", token))  # 200: a message id that needs two bytes
    assert bind_response(answer) == (200, SUCCESS, "")
    assert check.checks[-1]["role"] == "DBA Group" and check.checks[-1]["ok"] is True
    assert check.checks[-1]["principal"] == "alice@contoso.example"


def test_a_bind_with_a_non_members_token_is_invalid_credentials_with_the_reason(
    check: LdapCheck, directory: Directory
) -> None:
    answer = converse(check, bind_request(1, "DBA Group", token_of(directory, "bob@contoso.example")))
    mid, code, text = bind_response(answer)
    assert (mid, code) == (1, INVALID_CREDENTIALS) and 'is not "DBA Group"' in text
    assert check.checks[-1]["ok"] is False and check.checks[-1]["reason"] == text


def test_two_binds_on_one_connection_get_two_answers_and_an_unbind_ends_it(
    check: LdapCheck, directory: Directory
) -> None:
    token = token_of(directory, "alice@contoso.example")
    unbind = ber(0x30, integer(3) + bytes([0x42, 0]))
    request = bind_request(1, "alice@contoso.example", token) + bind_request(2, "bob@contoso.example", token)
    answer = converse(check, request + unbind + bind_request(4, "DBA Group", token))
    first = bind_response(answer)
    rest = parse(answer)[2]
    second = bind_response(rest)
    assert first == (1, SUCCESS, "") and second[:2] == (2, INVALID_CREDENTIALS)
    assert parse(rest)[2] == b""  # nothing after the unbind was answered


@pytest.mark.parametrize(
    "request_",
    [
        bind_request(7, "DBA Group", b"\xa3sasl", auth_tag=0xA3),  # SASL, not simple
        ber(0x30, integer(7) + ber(0x63, ber(0x04, b"dc=tokend"))),  # a SearchRequest
    ],
    ids=["sasl-bind", "search"],
)
def test_anything_but_a_simple_bind_is_a_protocol_error(check: LdapCheck, request_: bytes) -> None:
    assert bind_response(converse(check, request_)) == (7, PROTOCOL_ERROR, "only simple bind is supported")
    assert check.checks == []


def test_a_message_over_a_megabyte_is_dropped_unread(check: LdapCheck) -> None:
    huge = bytes([0x30, 0x84]) + (2 << 20).to_bytes(4, "big")
    assert converse(check, huge) == b""


@pytest.mark.parametrize(
    ("dn", "role"),
    [("cn=DBA Group,ou=roles,dc=tokend", "DBA Group"), ("uid=someone", "uid=someone")],
)
def test_bind_takes_the_role_out_of_the_dn(check: LdapCheck, directory: Directory, dn: str, role: str) -> None:
    code, _ = check.bind(dn, b"not-a-token")
    assert code == INVALID_CREDENTIALS and check.checks[-1]["role"] == role


def test_a_password_that_is_not_ascii_is_not_an_access_token(check: LdapCheck) -> None:
    assert check.bind("cn=DBA Group,ou=roles,dc=tokend", "pässword".encode()) == (
        INVALID_CREDENTIALS,
        "The password is not an access token.",
    )
