"""The libpq password file: one marked block of tokend's at the top, every other byte the user's.

libpq takes the first matching line, so the block goes first. Fields escape ``\\`` and ``:``. The file is rewritten
whole through the atomic writer (temp file, fsync, rename, folder lock, symlink written through). No BOM ever.
Location: ``[sinks.pgpass] path``, else PGPASSFILE, else ~/.pgpass (%APPDATA%\\postgresql\\pgpass.conf on Windows).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokend.errors import SinkError
from tokend.sinks import Entry, Sink
from tokend.sinks.atomic import rewrite

BEGIN = b"# >>> tokend "
END = b"# <<< tokend "
_NOTE = b" >>> managed by tokend: rewritten on every refresh, edits here are lost"


def default_path() -> Path:
    env = os.environ.get("PGPASSFILE")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":  # pragma: no cover
        return Path(os.environ.get("APPDATA", Path.home())) / "postgresql" / "pgpass.conf"
    return Path.home() / ".pgpass"


def escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def line_for(entry: Entry) -> str:
    t = entry.target
    return ":".join(escape(f) for f in (t.host, str(t.port), t.database, t.user, entry.token.value))


def render_block(entries: Sequence[Entry], owner: str, newline: bytes = b"\n") -> bytes:
    """tokend's block for ``owner``: markers around one line per entry; empty when there are no entries."""
    if not entries:
        return b""
    lines = [BEGIN + owner.encode() + _NOTE]
    lines += [line_for(e).encode() for e in entries]
    lines.append(END + owner.encode())
    return newline.join(lines) + newline


def splice(old: bytes | None, owner: str, entries: Sequence[Entry]) -> bytes | None:
    """The file's new bytes: ``owner``'s old block removed, the new one first, every other byte as it was.

    Returns None when there is no file and nothing to write.
    """
    if old is None and not entries:
        return None
    rest = _without_block(old or b"", owner)
    newline = b"\r\n" if b"\r\n" in rest.split(b"\n", 1)[0] + b"\n" else b"\n"
    return render_block(entries, owner, newline) + rest


def _without_block(data: bytes, owner: str) -> bytes:
    begin, end = BEGIN + owner.encode(), END + owner.encode()
    lines = data.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.startswith(begin)), None)
    if start is None:
        return data
    stop = next((i for i in range(start + 1, len(lines)) if lines[i].rstrip(b"\r\n") == end), None)
    if stop is None:  # an end marker someone deleted: drop only our begin line, keep the rest as theirs
        return b"".join(lines[:start] + lines[start + 1:])
    return b"".join(lines[:start] + lines[stop + 1:])


def parse(text: str) -> list[tuple[str, str, str, str, str]]:
    """Lines as libpq reads them: (host, port, database, user, password); comments and short lines skipped."""
    out = []
    for raw in text.split("\n"):
        raw = raw.removesuffix("\r")
        if raw.startswith("#") or not raw:
            continue
        fields, cur, i = [], [], 0
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


class PgpassSink(Sink):
    kind = "pgpass"

    def __init__(self, options: Mapping[str, Any], owner: str) -> None:
        super().__init__(options, owner)
        configured = options.get("path")
        self.path = Path(configured).expanduser() if configured else default_path()

    def location(self) -> str:
        return str(self.path)

    def check(self) -> None:
        folder = Path(os.path.realpath(self.path)).parent
        if folder.exists() and not folder.is_dir():
            raise SinkError(f"{self.path}: {folder} is not a folder; set [sinks.pgpass] path to a file in a folder")
        if not folder.is_dir():
            raise SinkError(f"{self.path}: folder {folder} does not exist; create it or set [sinks.pgpass] path")
        if not os.access(folder, os.W_OK):
            raise SinkError(f"{self.path}: folder {folder} is not writable; fix its permissions or set "
                            "[sinks.pgpass] path")
        if self.path.exists() and not os.access(self.path, os.R_OK):
            raise SinkError(f"{self.path}: cannot read it; fix its permissions (it should be yours, mode 0600)")

    def sync(self, entries: Sequence[Entry]) -> None:
        rewrite(self.path, lambda old: splice(old, self.owner, entries))
