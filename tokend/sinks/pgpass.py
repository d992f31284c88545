"""The libpq password file: one marked block of tokend's at the top (sinks/block.py), every other byte the user's.

libpq takes the first matching line, so the block goes first. Fields escape ``\\`` and ``:``. The file is rewritten
whole through the atomic writer (temp file, fsync, rename, folder lock, symlink written through). No BOM ever.
Location: ``[sinks.pgpass] path``, else PGPASSFILE, else ~/.pgpass (%APPDATA%\\postgresql\\pgpass.conf on Windows).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tokend import system
from tokend.sinks import Entry, block


def default_path() -> Path:
    env = os.environ.get("PGPASSFILE")
    if env:
        return Path(env).expanduser()
    if system.WINDOWS:  # pragma: no cover
        return Path(os.environ.get("APPDATA", Path.home())) / "postgresql" / "pgpass.conf"
    return Path.home() / ".pgpass"


def escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def line_for(entry: Entry) -> str:
    t = entry.target
    return ":".join(escape(f) for f in (t.host, str(t.port), t.database, t.user, entry.token.value))


def render_block(entries: Sequence[Entry], owner: str, newline: bytes = b"\n") -> bytes:
    return block.render([line_for(e) for e in entries], owner, newline)


def splice(old: bytes | None, owner: str, entries: Sequence[Entry]) -> bytes | None:
    return block.splice(old, owner, [line_for(e) for e in entries])


def parse(text: str) -> list[tuple[str, str, str, str, str]]:
    """Lines as libpq reads them: (host, port, database, user, password); comments and short lines skipped."""
    out = []
    for raw in text.split("\n"):
        raw = raw.removesuffix("\r")
        if raw.startswith("#") or not raw:
            continue
        fields: list[str] = []
        cur: list[str] = []
        i = 0
        while i < len(raw):
            ch = raw[i]
            if ch == "\\" and i + 1 < len(raw):
                cur.append(raw[i + 1])
                i += 2
                continue
            if ch == ":" and len(fields) < 4:
                fields.append("".join(cur))
                cur = []
            else:
                cur.append(ch)
            i += 1
        fields.append("".join(cur))
        if len(fields) == 5:
            out.append((fields[0], fields[1], fields[2], fields[3], fields[4]))
    return out


class PgpassSink(block.BlockSink):
    kind = "pgpass"
    default_path = staticmethod(default_path)

    def lines(self, entries: Sequence[Entry]) -> list[str]:
        return [line_for(e) for e in entries]
