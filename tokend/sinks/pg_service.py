"""pg_service.conf: a ``[TARGET]`` section per target (host, port, dbname, user, sslmode=require) in tokend's marked
block at the top, so ``psql service=TARGET`` connects and libpq takes the password from pgpass.

The token never goes here: libpq rejects service-file lines over 1021 characters. The user's own sections are kept
byte for byte (sinks/block.py) and the file is written by the same atomic writer as pgpass.
Location: ``[sinks.pg_service] path``, else PGSERVICEFILE, else ~/.pg_service.conf
(%APPDATA%\\postgresql\\.pg_service.conf on Windows).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokend import system
from tokend.sinks import Entry, Sink, block, lock_dir


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
    return [f"[{t.name}]", f"host={t.host}", f"port={t.port}", f"dbname={dbname}", f"user={t.user}",
            "sslmode=require"]


class PgServiceSink(Sink):
    kind = "pg_service"

    def __init__(self, options: Mapping[str, Any], owner: str) -> None:
        super().__init__(options, owner)
        self.file = block.MarkedFile.from_options(options, owner, default_path, "[sinks.pg_service] path", lock_dir())
        self.path = self.file.path

    def location(self) -> str:
        return str(self.path)

    def place(self) -> str:
        return self.file.place()

    def watched(self) -> list[Path]:
        return [self.path]

    def check(self) -> None:
        self.file.check()

    def sync(self, entries: Sequence[Entry]) -> None:
        self.file.write([line for e in entries for line in section(e)])
