"""A small synchronous PostgreSQL connection for tokend's own queries (``tokend admin``): the one login
(``tokend.pg.login``) with TLS verified like libpq's ``sslmode=verify-full`` (the system's roots or the target's
``sslrootcert``) and the token as the cleartext password Azure asks for, then the simple query protocol with text
results. No driver to install; errors come back as the server's own message and SQLSTATE (``ServerError``), or
one line saying what failed where (``TokendError``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TypeVar

from tokend.config import Target
from tokend.errors import TokendError
from tokend.pg import login, tls, wire
from tokend.pg.wire import ServerError

__all__ = ["Connection", "Result", "ServerError", "ident", "literal"]

T = TypeVar("T")
TIMEOUT = 30.0  # seconds for the connection and login, and again for each query
APPLICATION = "tokend admin"  # application_name, as pg_stat_activity shows the session


@dataclass
class Result:
    rows: list[list[str | None]] = field(default_factory=list)
    command: str = ""  # the CommandComplete tag: "SELECT 3", "GRANT", …


def simple_query(sql: str) -> login.Gen[list[Result]]:
    """Query: the result of each statement in ``sql``. The first error ends it (the server rolls back what ran in
    the same implicit transaction) and is raised once the server is ready again."""
    yield login.Send(wire.query(sql))
    results, current, error = [], Result(), None
    while True:
        kind, body = yield from login.message(wire.MAX_MESSAGE)
        if kind == b"D":
            current.rows.append(wire.data_row(body))
        elif kind == b"C":
            current.command = wire.command_tag(body)
            results.append(current)
            current = Result()
        elif kind == b"E":
            error = ServerError(wire.error_fields(body))
        elif kind == b"Z":
            if error is not None:
                raise error
            return results


class Connection:
    def __init__(self, target: Target, token: str, database: str | None = None) -> None:
        self.target = target
        db = database or (target.database if target.database != "*" else "postgres")
        sock = login.connect(target.host, target.port, TIMEOUT)
        try:
            ctx = tls.context("verify-full", target.sslrootcert)
        except (OSError, ValueError) as e:
            sock.close()
            why = getattr(e, "strerror", None) or e
            raise TokendError(f"cannot load the CA file {target.sslrootcert}: {why}") from None
        self._io = login.Blocking(sock, target.host, target.port, ctx)
        params = {"user": target.user, "database": db, "application_name": APPLICATION}
        try:
            self._run(login.login(params, token, target.host, target.port))
        except BaseException:
            self._io.close()
            raise

    def _run(self, gen: login.Gen[T]) -> T:
        """``gen`` within TIMEOUT; what breaks the connection as one line."""
        try:
            return self._io.run(gen, TIMEOUT)
        except wire.ProtocolError as e:
            raise TokendError(f"{self.target.host}: {e}") from None
        except OSError as e:
            raise TokendError(f"{self.target.host}:{self.target.port}: {e.strerror or e}") from None

    def query(self, sql: str) -> list[Result]:
        """Run ``sql`` (one or more statements) with the simple query protocol; the result of each statement. The
        first error ends it (the server rolls back what ran in the same implicit transaction)."""
        return self._run(simple_query(sql))

    def rows(self, sql: str) -> list[list[str | None]]:
        return self.query(sql)[-1].rows

    def close(self) -> None:
        with contextlib.suppress(OSError, TokendError):  # the server closes its end either way
            self._io.run(_send(wire.terminate()), 1.0)
        self._io.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _send(data: bytes) -> login.Gen[None]:
    yield login.Send(data)


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
