"""tokend's marked block at the top of a text file that is otherwise the user's (pgpass, pg_service.conf).

The block sits first because libpq takes the first match in both files. It is fenced by comment lines that carry
the owner (the config id), so two tokend configs can share a file. Every byte outside the block is kept as it was;
the block follows the file's line-end convention, and a UTF-8 BOM the file starts with stays at the very start.

Only an intact block is tokend's: a begin marker, then lines, then its end marker, with no other marker between.
A damaged one (a marker whose partner was deleted or cut off) costs no user line: only the lone marker line goes,
every line after it is treated as the user's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokend.sinks.atomic import check_writable, resolve, rewrite

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
    rest = without(data[len(bom):], owner)
    newline = b"\r\n" if (rest.split(b"\n", 1)[0] + b"\n").endswith(b"\r\n") else b"\n"
    return bom + render(lines, owner, newline) + rest


def _marker(line: bytes) -> bytes | None:
    """BEGIN or END when ``line`` is a tokend marker line (of any owner), else None."""
    line = line.removeprefix(BOM)
    if line.startswith(BEGIN):
        return BEGIN
    if line.startswith(END):
        return END
    return None


def without(data: bytes, owner: str) -> bytes:
    """``data`` with ``owner``'s intact blocks taken out, and its lone (damaged) marker lines dropped."""
    begin, end = BEGIN + owner.encode(), END + owner.encode()
    lines = data.splitlines(keepends=True)
    drop: set[int] = set()
    i = 0
    while i < len(lines):
        line = lines[i].removeprefix(BOM)
        if line.startswith(begin) and line.rstrip(b"\r\n")[len(begin):len(begin) + 1] in (b"", b" "):
            stop = next((j for j in range(i + 1, len(lines)) if _marker(lines[j])), None)
            if stop is not None and lines[stop].removeprefix(BOM).rstrip(b"\r\n") == end:
                drop.update(range(i, stop + 1))
                i = stop + 1
                continue
            drop.add(i)  # a begin marker whose end is missing: only the marker goes
        elif line.rstrip(b"\r\n") == end:
            drop.add(i)  # an end marker whose begin is missing
        i += 1
    if not drop:
        return data
    return b"".join(ln for k, ln in enumerate(lines) if k not in drop)


def lines_of(data: bytes, owner: str) -> list[bytes] | None:
    """The lines inside ``owner``'s first intact block (None when there is none): what tokend last wrote there."""
    begin, end = BEGIN + owner.encode(), END + owner.encode()
    lines = [ln.removeprefix(BOM).rstrip(b"\r\n") for ln in data.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith(begin):
            stop = next((j for j in range(i + 1, len(lines)) if _marker(lines[j])), None)
            if stop is not None and lines[stop] == end:
                return lines[i + 1:stop]
    return None


@dataclass(frozen=True)
class MarkedFile:
    """One user file that holds an owner's block: where it is, whether it can be written, and writing the block."""

    path: Path
    owner: str
    setting: str  # the config key that moves it, for error texts
    lock_dir: Path  # tokend's private folder for the writers' lock file

    @classmethod
    def from_options(cls, options: Mapping[str, Any], owner: str, default: Callable[[], Path], setting: str,
                     lock_dir: Path) -> MarkedFile:
        configured = options.get("path")
        return cls(Path(configured).expanduser() if configured else default(), owner, setting, lock_dir)

    def place(self) -> str:
        """The file that is really written (symlinks followed), to tell whether two sinks write the same one."""
        try:
            return str(resolve(self.path))
        except Exception:
            return str(self.path)

    def check(self) -> None:
        check_writable(self.path, self.setting)

    def write(self, lines: Sequence[str]) -> None:
        rewrite(self.path, lambda old: splice(old, self.owner, lines), self.lock_dir)
