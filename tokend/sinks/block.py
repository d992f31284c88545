"""tokend's marked block at the top of a text file that is otherwise the user's (pgpass, pg_service.conf).

The block sits first because libpq takes the first match in both files. It is fenced by comment lines that carry
the owner (the config id), so two tokend configs can share a file. Every byte outside the block is kept as it was;
the block follows the file's line-end convention, and a UTF-8 BOM the file starts with stays at the very start.

Only an intact block is tokend's: a begin marker, then lines, then its end marker, with no other marker between.
A damaged one (a marker whose partner was deleted or cut off) costs no user line: only the lone marker line goes,
every line after it is treated as the user's.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokend.sinks import Entry, Sink, lock_dir
from tokend.sinks.atomic import check_writable, place, read, rewrite

BEGIN = b"# >>> tokend "
END = b"# <<< tokend "
BOM = b"\xef\xbb\xbf"
_NOTE = b" >>> managed by tokend: rewritten on every refresh, edits here are lost"


def render(lines: Sequence[str], owner: str, newline: bytes = b"\n") -> bytes:
    """The fenced block holding ``lines``; empty when there are none."""
    if not lines:
        return b""
    out = [BEGIN + owner.encode() + _NOTE, *(line.encode() for line in lines), END + owner.encode()]
    return newline.join(out) + newline


def splice(old: bytes | None, owner: str, lines: Sequence[str]) -> bytes | None:
    """The file's new bytes: ``owner``'s old block removed, the new one first, every other byte as it was.

    Returns None when there is no file and nothing to write.
    """
    if old is None and not lines:
        return None
    data = old or b""
    bom = BOM if data.startswith(BOM) else b""
    rest = without(data[len(bom) :], owner)
    newline = b"\r\n" if (rest.split(b"\n", 1)[0] + b"\n").endswith(b"\r\n") else b"\n"
    return bom + render(lines, owner, newline) + rest


# A marker (of any owner) to the end of its line; it counts where bytes.splitlines would start a line.
_MARKER = re.compile(rb"# (?:>>>|<<<) tokend [^\r\n]*(?:\r\n|\r|\n)?")


def _markers(data: bytes) -> list[tuple[int, int, bytes]]:
    """Every marker line: (start, end with its line end, text without BOM and line end). Only marker lines are
    looked at (a literal-prefix scan), so a 10,000-line file costs no Python per line."""
    out = []
    for m in _MARKER.finditer(data):
        start = m.start() - len(BOM) if data[max(0, m.start() - len(BOM)) : m.start()] == BOM else m.start()
        if start == 0 or data[start - 1 : start] in (b"\n", b"\r"):
            out.append((start, m.end(), m.group().rstrip(b"\r\n")))
    return out


def without(data: bytes, owner: str) -> bytes:
    """``data`` with ``owner``'s intact blocks taken out, and its lone (damaged) marker lines dropped."""
    begin, end = BEGIN + owner.encode(), END + owner.encode()
    marks = _markers(data)
    drop: list[tuple[int, int]] = []
    i = 0
    while i < len(marks):
        start, stop, text = marks[i]
        if text.startswith(begin) and text[len(begin) : len(begin) + 1] in (b"", b" "):
            if i + 1 < len(marks) and marks[i + 1][2] == end:  # intact: the next marker is its end
                drop.append((start, marks[i + 1][1]))
                i += 2
                continue
            drop.append((start, stop))  # a begin marker whose end is missing: only the marker goes
        elif text == end:
            drop.append((start, stop))  # an end marker whose begin is missing
        i += 1
    if not drop:
        return data
    kept, at = [], 0
    for start, stop in drop:
        kept.append(data[at:start])
        at = stop
    kept.append(data[at:])
    return b"".join(kept)


def owned_lines(text: str, owner: str) -> set[int]:
    """The numbers (from 1) of the lines inside ``owner``'s block, its marker lines included (a BOM before the
    first line is no part of it; owner "o1" is not owner "o12")."""
    begin, end = (BEGIN + owner.encode()).decode(), (END + owner.encode()).decode()
    inside, out = False, set()
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.removeprefix("\ufeff").rstrip("\r")
        if line == begin or line.startswith(begin + " "):
            inside = True
        elif line == end:
            inside = False
            out.add(n)
        if inside:
            out.add(n)
    return out


class BlockSink(Sink):
    """A sink whose place is the owner's block in a user's text file (pgpass, pg_service.conf): the file at
    ``[sinks.KIND] path``, else the kind's ``default_path()``. Subclasses say what the block's lines are."""

    def __init__(self, options: Mapping[str, Any], owner: str) -> None:
        super().__init__(options, owner)
        configured = options.get("path")
        self.path = Path(configured).expanduser() if configured else self.default_path()
        self.lock_dir = lock_dir()  # tokend's private folder for the writers' lock file

    @staticmethod
    @abstractmethod
    def default_path() -> Path: ...

    @abstractmethod
    def lines(self, entries: Sequence[Entry]) -> list[str]: ...

    def location(self) -> str:
        return str(self.path)

    def place(self) -> str:
        return place(self.path)

    def watched(self) -> list[Path]:
        return [self.path]

    def check(self) -> None:
        check_writable(self.path, f"[sinks.{self.kind}] path")

    def sync(self, entries: Sequence[Entry]) -> None:
        lines = self.lines(entries)
        rewrite(self.path, lambda old: splice(old, self.owner, lines), self.lock_dir)

    def purge(self) -> str | None:
        """The owner's block taken out; a file left with nothing else in it (one tokend made for its block, such
        as ~/.pg_service.conf) is removed too. None when the file holds no block of this owner's."""
        old = read(self.path)
        if old is None or without(old, self.owner) == old:
            return None
        BlockSink.sync(self, [])
        left = read(self.path)
        if left is not None and not left.removeprefix(BOM).strip() and not self.path.is_symlink():
            self.path.unlink()
            return f"removed {self.path} (it held only this config's entries)"
        return f"removed this config's entries from {self.path}"
