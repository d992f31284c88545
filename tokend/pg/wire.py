"""The PostgreSQL wire-protocol messages tokend reads and writes: the start-up exchange (SSLRequest, StartupMessage,
authentication, ErrorResponse) for the one login routine (``tokend.pg.login``) and the proxy's client leg, and the
simple query protocol for ``tokend.pg.connection``. Encoding and decoding only: no socket here.

Client-to-server start-up messages are untyped (Int32 length, Int32 code or protocol version, body); every other
message is typed (Byte1 type, Int32 length including itself, body). See PostgreSQL's "Frontend/Backend Protocol",
sections "Message Flow" and "Message Formats".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tokend.errors import TokendError

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3_0 = 3 << 16
MAX_STARTUP = 10_000  # bytes: PostgreSQL's own limit for a start-up packet
MAX_SERVER_MESSAGE = 1 << 20  # bytes of one message from the server during authentication
MAX_MESSAGE = 1 << 30  # bytes of one message from the server after it: PostgreSQL's largest value (1 GB)
HEADER = 5  # bytes of a typed message's head: its type and its length

AUTH_OK, AUTH_CLEARTEXT = 0, 3
AUTH_NAMES = {2: "Kerberos", 5: "MD5 password", 6: "SCM credentials", 7: "GSSAPI", 9: "SSPI", 10: "SASL (SCRAM)"}


class ProtocolError(Exception):
    """The peer broke the protocol; the connection ends."""


class ServerError(TokendError):
    """The server's ErrorResponse: its message as the text, its SQLSTATE in ``code``, every field in ``fields``."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(fields.get("M", "the server refused"))
        self.code = fields.get("C", "")
        self.fields = fields


def ssl_request() -> bytes:
    """SSLRequest: asks the server to start TLS; it answers one byte, S (yes) or N."""
    return struct.pack("!ii", 8, SSL_REQUEST)


@dataclass(frozen=True)
class Startup:
    version: int  # protocol version the client asked for (3.0 = 196608, 3.2 = 196610)
    params: dict[str, str]  # user, database, options, application_name, …

    def encode(self) -> bytes:
        body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in self.params.items()) + b"\0"
        return struct.pack("!ii", 8 + len(body), self.version) + body


def split_params(body: bytes) -> dict[str, str]:
    """The name/value pairs of a StartupMessage body (each NUL-terminated, a final NUL)."""
    parts = body.split(b"\0")
    if len(parts) < 2 or parts[-1] != b"" or parts[-2] != b"":
        raise ProtocolError("malformed start-up message")
    fields = parts[:-2]
    if len(fields) % 2:
        raise ProtocolError("malformed start-up message")
    try:
        return {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields), 2)}
    except UnicodeDecodeError:
        raise ProtocolError("start-up parameters are not UTF-8") from None


def header(head: bytes, limit: int) -> tuple[bytes, int]:
    """A typed message's (type, body length in bytes) from its ``HEADER`` bytes; ProtocolError when the length is
    impossible or over ``limit`` bytes (a server must not make tokend hold an unbounded message)."""
    (length,) = struct.unpack("!i", head[1:HEADER])
    if not 4 <= length <= limit:
        raise ProtocolError(f"a server message of {length} bytes")
    return head[:1], length - 4


def typed(kind: bytes, body: bytes) -> bytes:
    """A typed message as it travels: its type, its length (itself included) and its body."""
    return kind + struct.pack("!i", 4 + len(body)) + body


def auth_code(body: bytes) -> int:
    """The request code of an Authentication ('R') message: 0 ok, 3 cleartext password, … (``AUTH_NAMES``)."""
    if len(body) < 4:
        raise ProtocolError("a truncated authentication request")
    (code,) = struct.unpack("!i", body[:4])
    return int(code)


def password(token: str) -> bytes:
    """PasswordMessage ('p'): the token, as a cleartext password."""
    return typed(b"p", token.encode() + b"\0")


def auth_ok() -> bytes:
    return b"R" + struct.pack("!ii", 8, AUTH_OK)


def error(message: str, code: str = "28000", hint: str = "", severity: str = "FATAL") -> bytes:
    """ErrorResponse ('E'): what libpq shows as ``FATAL:  message`` with ``HINT:  hint``."""
    fields = [(b"S", severity), (b"V", severity), (b"C", code), (b"M", message)]
    if hint:
        fields.append((b"H", hint))
    return typed(b"E", b"".join(t + v.encode() + b"\0" for t, v in fields) + b"\0")


def error_fields(body: bytes) -> dict[str, str]:
    """The fields of an ErrorResponse / NoticeResponse body, by their one-letter codes."""
    out = {}
    for field in body.split(b"\0"):
        if field:
            out[chr(field[0])] = field[1:].decode("utf-8", "replace")
    return out


def parameter(body: bytes) -> tuple[str, str]:
    """A ParameterStatus ('S') body: (name, value)."""
    name, _, rest = body.partition(b"\0")
    return name.decode("utf-8", "replace"), rest.rstrip(b"\0").decode("utf-8", "replace")


def query(sql: str) -> bytes:
    """Query ('Q'): one or more statements in the simple query protocol."""
    return typed(b"Q", sql.encode() + b"\0")


def terminate() -> bytes:
    """Terminate ('X'): the client is done; the server closes the connection."""
    return typed(b"X", b"")


def data_row(body: bytes) -> list[str | None]:
    """A DataRow ('D') body: each column's text, None for NULL."""
    try:
        (n,) = struct.unpack("!h", body[:2])
        row: list[str | None] = []
        pos = 2
        for _ in range(n):
            (size,) = struct.unpack("!i", body[pos : pos + 4])
            pos += 4
            if size >= 0 and pos + size > len(body):
                raise ProtocolError("a truncated data row")
            row.append(None if size < 0 else body[pos : pos + size].decode("utf-8", "replace"))
            pos += max(size, 0)
    except struct.error:
        raise ProtocolError("a truncated data row") from None
    return row


def command_tag(body: bytes) -> str:
    """A CommandComplete ('C') body: the command's tag ("SELECT 3", "GRANT", …)."""
    return body.rstrip(b"\0").decode("utf-8", "replace")
