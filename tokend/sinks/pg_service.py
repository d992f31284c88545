"""pg_service.conf: a ``[TARGET]`` section per target (host, port, dbname, user, sslmode=require) in tokend's marked
block at the top, so ``psql service=TARGET`` connects and libpq takes the password from pgpass.

The token never goes here: libpq rejects service-file lines over 1021 characters. The user's own sections are kept
byte for byte (sinks/block.py) and the file is written by the same atomic writer as pgpass.
Location: ``[sinks.pg_service] path``, else PGSERVICEFILE, else ~/.pg_service.conf
(%APPDATA%\\postgresql\\.pg_service.conf on Windows).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tokend import system
from tokend.sinks import Entry, block


def default_path() -> Path:
    env = os.environ.get("PGSERVICEFILE")
    if env:
        return Path(env).expanduser()
    if system.WINDOWS:  # pragma: no cover
        return Path(os.environ.get("APPDATA", Path.home())) / "postgresql" / ".pg_service.conf"
    return Path.home() / ".pg_service.conf"


def section(entry: Entry) -> list[str]:
    t = entry.target
    # "*" in pgpass means any database; a service must name one: the server's default maintenance database.
    dbname = "postgres" if t.database == "*" else t.database
    return [f"[{t.name}]", f"host={t.host}", f"port={t.port}", f"dbname={dbname}", f"user={t.user}", "sslmode=require"]


class PgServiceSink(block.BlockSink):
    kind = "pg_service"
    default_path = staticmethod(default_path)

    def lines(self, entries: Sequence[Entry]) -> list[str]:
        return [line for e in entries for line in section(e)]
