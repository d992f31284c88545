"""A small synchronous PostgreSQL client for tokend's own queries (`tokend admin`): TLS verified like libpq's
``sslmode=verify-full`` (the system's roots or the target's ``sslrootcert``), the token as the cleartext password
Azure asks for, and the simple query protocol with text results. No driver to install; errors come back as the
server's own message and SQLSTATE.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass, field

from tokend.config import Target
from tokend.errors import TokendError
from tokend.proxy import wire
from tokend.proxy.tls import upstream_context

TIMEOUT = 30.0  # seconds for the connection and each query


class ServerError(TokendError):
    """The server refused: its message, and its SQLSTATE in ``code``."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(fields.get("M", "the server refused"))
        self.code = fields.get("C", "")
        self.fields = fields


@dataclass
class Result:
    columns: list[str] = field(default_factory=list)
    rows: list[list[str | None]] = field(default_factory=list)
    command: str = ""


class Connection:
    def __init__(self, target: Target, token: str, database: str | None = None) -> None:
        self.target = target
        db = database or (target.database if target.database != "*" else "postgres")
        try:
            raw = socket.create_connection((target.host, target.port), timeout=TIMEOUT)
        except OSError as e:
            raise TokendError(f"cannot reach {target.host}:{target.port}: {e.strerror or e}") from None
        raw.sendall(wire.ssl_request())
        if raw.recv(1) != b"S":
            raw.close()
            raise TokendError(f"{target.host}:{target.port} does not offer TLS; Azure requires it")
        try:
            self.sock = upstream_context(target.sslrootcert).wrap_socket(raw, server_hostname=target.host)
        except OSError as e:
            raw.close()
            raise TokendError(f"TLS to {target.host}:{target.port} failed: {e}") from None
        self.sock.sendall(
            wire.Startup(
                wire.PROTOCOL_3_0, {"user": target.user, "database": db, "application_name": "tokend admin"}
            ).encode()
        )
        while True:
            kind, body = self._read()
            if kind == b"R":
                (code,) = struct.unpack("!i", body[:4])
                if code == wire.AUTH_CLEARTEXT:
                    self.sock.sendall(wire.password(token))
                elif code != wire.AUTH_OK:
                    raise TokendError(
                        f"{target.host} asked for {wire.AUTH_NAMES.get(code, code)}; tokend logs in "
                        "with a token as the password only"
                    )
            elif kind == b"E":
                raise ServerError(wire.error_fields(body))
            elif kind == b"Z":
                return

    def _read(self) -> tuple[bytes, bytes]:
        head = self._exactly(5)
        (length,) = struct.unpack("!i", head[1:])
        return head[:1], self._exactly(length - 4)

    def _exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise TokendError(f"{self.target.host} closed the connection")
            buf += chunk
        return buf

    def query(self, sql: str) -> list[Result]:
        """Run ``sql`` (one or more statements) with the simple query protocol; the result of each statement. The
        first error ends it (the server rolls back what ran in the same implicit transaction)."""
        body = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", 4 + len(body)) + body)
        results, current, error = [], Result(), None
        while True:
            kind, data = self._read()
            if kind == b"T":
                (n,) = struct.unpack("!h", data[:2])
                names, pos = [], 2
                for _ in range(n):
                    end = data.index(b"\0", pos)
                    names.append(data[pos:end].decode())
                    pos = end + 1 + 18
                current.columns = names
            elif kind == b"D":
                (n,) = struct.unpack("!h", data[:2])
                row: list[str | None] = []
                pos = 2
                for _ in range(n):
                    (size,) = struct.unpack("!i", data[pos : pos + 4])
                    pos += 4
                    row.append(None if size < 0 else data[pos : pos + size].decode())
                    pos += max(size, 0)
                current.rows.append(row)
            elif kind == b"C":
                current.command = data.rstrip(b"\0").decode()
                results.append(current)
                current = Result()
            elif kind == b"E":
                error = ServerError(wire.error_fields(data))
            elif kind == b"Z":
                if error is not None:
                    raise error
                return results

    def rows(self, sql: str) -> list[list[str | None]]:
        return self.query(sql)[-1].rows

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"X" + struct.pack("!i", 4))
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def ident(name: str) -> str:
    """An SQL identifier, quoted: spaces, case and quotes kept exactly (Entra names are case-sensitive)."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """An SQL string literal that means ``text`` whatever standard_conforming_strings says: quotes doubled, and a
    text with a backslash written as an escape string (``E'…'``) with each backslash doubled — with the setting off, a
    backslash in a plain literal would escape the quote after it."""
    quoted = text.replace("'", "''")
    if "\\" in text:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return "'" + quoted + "'"
