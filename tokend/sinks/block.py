"""tokend's marked block at the top of a text file that is otherwise the user's (pgpass, pg_service.conf).

The block sits first because libpq takes the first match in both files. It is fenced by comment lines that carry
the owner (the config id), so two tokend configs can share a file. Every byte outside the block is kept as it was;
the block follows the file's line-end convention.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokend.sinks.atomic import check_writable, rewrite

BEGIN = b"# >>> tokend "
END = b"# <<< tokend "
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
    rest = without(old or b"", owner)
    newline = b"\r\n" if (rest.split(b"\n", 1)[0] + b"\n").endswith(b"\r\n") else b"\n"
    return render(lines, owner, newline) + rest


def without(data: bytes, owner: str) -> bytes:
    """``data`` with ``owner``'s block taken out."""
    begin, end = BEGIN + owner.encode(), END + owner.encode()
    lines = data.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.startswith(begin)), None)
    if start is None:
        return data
    stop = next((i for i in range(start + 1, len(lines)) if lines[i].rstrip(b"\r\n") == end), None)
    if stop is None:  # an end marker someone deleted: drop only our begin line, keep the rest as theirs
        return b"".join(lines[:start] + lines[start + 1:])
    return b"".join(lines[:start] + lines[stop + 1:])


@dataclass(frozen=True)
class MarkedFile:
    """One user file that holds an owner's block: where it is, whether it can be written, and writing the block."""

    path: Path
    owner: str
    setting: str  # the config key that moves it, for error texts

    @classmethod
    def from_options(cls, options: Mapping[str, Any], owner: str, default: Callable[[], Path],
                     setting: str) -> MarkedFile:
        configured = options.get("path")
        return cls(Path(configured).expanduser() if configured else default(), owner, setting)

    def check(self) -> None:
        check_writable(self.path, self.setting)

    def write(self, lines: Sequence[str]) -> None:
        rewrite(self.path, lambda old: splice(old, self.owner, lines))
