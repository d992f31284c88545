"""The few PostgreSQL wire-protocol messages the proxy reads and writes before it starts relaying bytes.

Client-to-server start-up messages are untyped (Int32 length, Int32 code or protocol version, body); every other
message is typed (Byte1 type, Int32 length including itself, body). See PostgreSQL's "Frontend/Backend Protocol",
sections "Message Flow" and "Message Formats".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3_0 = 3 << 16
MAX_STARTUP = 10_000  # bytes: PostgreSQL's own limit for a start-up packet
MAX_SERVER_MESSAGE = 1 << 20  # bytes of one message from the server during authentication

AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL = 0, 3, 5, 10
AUTH_NAMES = {2: "Kerberos", 5: "MD5 password", 6: "SCM credentials", 7: "GSSAPI", 9: "SSPI", 10: "SASL (SCRAM)"}


def ssl_request() -> bytes:
    """SSLRequest: asks the server to start TLS; it answers one byte, S (yes) or N."""
    return struct.pack("!ii", 8, SSL_REQUEST)


class ProtocolError(Exception):
    """The peer broke the protocol; the connection ends."""


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


def password(token: str) -> bytes:
    """PasswordMessage ('p'): the token, as a cleartext password."""
    body = token.encode() + b"\0"
    return b"p" + struct.pack("!i", 4 + len(body)) + body


def auth_ok() -> bytes:
    return b"R" + struct.pack("!ii", 8, AUTH_OK)


def error(message: str, code: str = "28000", hint: str = "", severity: str = "FATAL") -> bytes:
    """ErrorResponse ('E'): what libpq shows as ``FATAL:  message`` with ``HINT:  hint``."""
    fields = [(b"S", severity), (b"V", severity), (b"C", code), (b"M", message)]
    if hint:
        fields.append((b"H", hint))
    body = b"".join(t + v.encode() + b"\0" for t, v in fields) + b"\0"
    return b"E" + struct.pack("!i", 4 + len(body)) + body


def error_fields(body: bytes) -> dict[str, str]:
    """The fields of an ErrorResponse / NoticeResponse body, by their one-letter codes."""
    out = {}
    for field in body.split(b"\0"):
        if field:
            out[chr(field[0])] = field[1:].decode("utf-8", "replace")
    return out
