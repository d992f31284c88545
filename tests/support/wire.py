"""Raw PostgreSQL protocol bytes, for tests that act as a misbehaving or hostile client."""

from __future__ import annotations

import socket
import struct


def pg_startup(user: str, database: str) -> bytes:
    """A PostgreSQL StartupMessage (protocol 3.0), as a raw client sends it."""
    body = b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
    return struct.pack("!ii", 8 + len(body), 3 << 16) + body


def pg_message(sock: socket.socket) -> tuple[bytes, bytes]:
    """One typed message from a PostgreSQL server (or the proxy): (type, body); (b"", b"") at end of stream."""
    head = b""
    while len(head) < 5:
        chunk = sock.recv(5 - len(head))
        if not chunk:
            return b"", b""
        head += chunk
    (length,) = struct.unpack("!i", head[1:])
    body = b""
    while len(body) < length - 4:
        chunk = sock.recv(length - 4 - len(body))
        if not chunk:
            return b"", b""
        body += chunk
    return head[:1], body
