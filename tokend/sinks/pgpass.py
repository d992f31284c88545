"""The libpq password file: one marked block of tokend's at the top (sinks/block.py), every other byte the user's;
and libpq's rules for reading it, as pure functions, for doctor and for ``tokend token --host …``.

libpq takes the first matching line, so the block goes first. Fields escape ``\\`` and ``:``. The file is rewritten
whole through the atomic writer (temp file, fsync, rename, folder lock, symlink written through). No BOM ever.
Location: ``[sinks.pgpass] path``, else PGPASSFILE, else ~/.pgpass (%APPDATA%\\postgresql\\pgpass.conf on Windows).

libpq's rules, from "The Password File" (libpq docs, https://www.postgresql.org/docs/current/libpq-pgpass.html)
and ``passwordFromFile``/``pwdfMatchesString`` in src/interfaces/libpq/fe-connect.c:

1. A line is ``hostname:port:database:username:password``; a line starting with ``#`` is a comment; trailing CR and
   LF are stripped; an empty line is skipped. ``\\`` makes the next character literal (so ``\\:`` and ``\\\\``).
2. Each of the first four fields is compared as a whole with the connection's value, exactly (case-sensitive,
   byte for byte); a field that is exactly an unescaped ``*`` matches anything (``\\*`` is a literal star).
3. The fourth field must be followed by ``:``; the password is what follows, de-escaped, up to the next unescaped
   ``:``. A line with fewer fields never matches.
4. The first matching line wins; later ones are never read.
5. Host: a connection given only ``hostaddr`` is matched by that address; no host at all (or the default Unix
   socket folder) is matched as ``localhost``; any other socket folder is matched as its path. Port: none is matched
   as ``5432``. No database or no user name: nothing matches.
6. On Unix the file is ignored (with a warning on stderr) unless it is a plain file without group or world access
   (0600 or less). Windows makes no check.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tokend import advice, system
from tokend.config import PRINCIPAL, Config, Target
from tokend.errors import UsageError
from tokend.findings import Finding
from tokend.principal import follows
from tokend.sinks import Entry, atomic, block

DEFAULT_HOST = "localhost"  # libpq's DefaultHost
DEFAULT_PORT = "5432"  # libpq's DEF_PGPORT_STR
# libpq's compiled-in DEFAULT_PGSOCKET_DIR: /tmp upstream; Debian and Ubuntu build theirs with /var/run/postgresql.
DEFAULT_SOCKET_DIR = "/tmp"
WILDCARD = "*"
MIN_LIBPQ_MAJOR = 13  # the first libpq that reads pgpass lines of any length


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


@dataclass(frozen=True)
class Field:
    """One of a line's first four fields: its value with escapes undone, and whether it is the wildcard."""

    value: str
    wildcard: bool = False

    def matches(self, wanted: str) -> bool:
        """Rule 2: the whole field equals ``wanted``, or it is ``*``."""
        return self.wildcard or self.value == wanted

    def __str__(self) -> str:
        """The field as written: a literal star stays escaped, so it does not read as the wildcard."""
        if self.wildcard:
            return WILDCARD
        return "\\*" if self.value == WILDCARD else escape(self.value)


@dataclass(frozen=True)
class Line:
    """A line libpq can match: its number in the file (from 1), the four fields and the password."""

    number: int
    host: Field
    port: Field
    database: Field
    user: Field
    password: str

    def fields(self) -> str:
        """The four fields as written (escaped), for people: never the password."""
        return ":".join(str(f) for f in (self.host, self.port, self.database, self.user))

    def matches(self, host: str, port: str, database: str | None, user: str) -> bool:
        """Rule 2 for a connection whose values are already as libpq compares them (``connection()``).
        ``database`` None: not known (a target for every database), so any database field can match."""
        return (
            self.host.matches(host)
            and self.port.matches(port)
            and (database is None or self.database.matches(database))
            and self.user.matches(user)
        )


def split_fields(raw: str) -> list[tuple[str, bool]]:
    """Rule 1: ``raw`` cut at each unescaped ``:``, as (value with escapes undone, was exactly an unescaped ``*``)."""
    if "\\" not in raw:  # no escapes (every token line): str.split, not a walk over a 2 KB token
        return [(field, field == WILDCARD) for field in raw.split(":")]
    out: list[tuple[str, bool]] = []
    cur: list[str] = []
    escaped_any = False
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            cur.append(raw[i + 1])
            escaped_any = True
            i += 2
            continue
        if ch == ":":
            out.append(("".join(cur), cur == [WILDCARD] and not escaped_any))
            cur, escaped_any = [], False
        else:
            cur.append(ch)
        i += 1
    out.append(("".join(cur), cur == [WILDCARD] and not escaped_any))
    return out


def parse_line(raw: str, number: int = 1) -> Line | None:
    """Rules 1 and 3: the line as libpq reads it, or None for a comment, an empty line, or too few fields."""
    if raw.startswith("#"):
        return None
    raw = raw.rstrip("\r\n")
    if not raw:
        return None
    fields = split_fields(raw)
    if len(fields) < 5:
        return None
    host, port, database, user = (Field(v, w) for v, w in fields[:4])
    return Line(number, host, port, database, user, fields[4][0])


def read(text: str) -> list[Line]:
    """Every line of a pgpass file libpq could match, in file order."""
    found = (parse_line(raw, n) for n, raw in enumerate(text.split("\n"), 1))
    return [line for line in found if line is not None]


def parse(text: str) -> list[tuple[str, str, str, str, str]]:
    """Lines as libpq reads them: (host, port, database, user, password); comments and short lines skipped."""
    return [(ln.host.value, ln.port.value, ln.database.value, ln.user.value, ln.password) for ln in read(text)]


def connection(
    host: str | None, port: str | int | None, socket_dir: str = DEFAULT_SOCKET_DIR, hostaddr: str | None = None
) -> tuple[str, str]:
    """Rule 5: the (host, port) libpq compares with the file for a connection to ``host``:``port`` (or, with no
    host, to ``hostaddr``); ``socket_dir``: the Unix socket folder this libpq was built with."""
    if not host and hostaddr:
        host = hostaddr
    elif not host or host == socket_dir:
        host = DEFAULT_HOST
    return host, str(port) if port not in (None, "") else DEFAULT_PORT


def first_match(lines: Iterable[Line], host: str, port: str, database: str | None, user: str) -> Line | None:
    """Rule 4: the line libpq takes for this connection (values as ``connection()`` gives them), or None."""
    if database == "" or not user:  # rule 5: libpq looks nothing up without them
        return None
    return next((ln for ln in lines if ln.matches(host, port, database, user)), None)


class Index:
    """A file's lines looked up by connection: the first match of many targets in a long file without comparing
    every pair (lines without a wildcard in host, port or user are found by those three)."""

    def __init__(self, lines: Sequence[Line]) -> None:
        self._exact: dict[tuple[str, str, str], list[Line]] = {}
        self._wild: list[Line] = []
        for ln in lines:
            if ln.host.wildcard or ln.port.wildcard or ln.user.wildcard:
                self._wild.append(ln)
            else:
                self._exact.setdefault((ln.host.value, ln.port.value, ln.user.value), []).append(ln)

    def first_match(self, host: str, port: str, database: str | None, user: str) -> Line | None:
        candidates = [*self._exact.get((host, port, user), []), *self._wild]
        return first_match(sorted(candidates, key=lambda ln: ln.number), host, port, database, user)


def target_line(t: Target) -> Line:
    """The line tokend's block holds for ``t`` (password left out): the target as libpq will match it."""
    parsed = parse_line(":".join(escape(f) for f in (t.host, str(t.port), t.database, t.user)) + ":")
    assert parsed is not None
    return parsed


def target_for(
    config: Config,
    host: str | None,
    port: str | int | None,
    user: str | None,
    database: str | None = None,
    resolve: Callable[[Target], str | None] | None = None,
) -> Target:
    """The target whose line in tokend's block libpq would match for this connection (rules 2 and 5). ``user``
    may arrive identifier-quoted, as pgAdmin's %USERNAME% does (``"DBA Group"``). No ``database``: any target of
    that host, port and user. UsageError when none matches, or several that would hand out different tokens.
    The port is read as a number ("05432" is 5432), where libpq would compare the text. A ``user = "@principal"``
    target's line names the user its token resolves to: ``resolve(target)`` says it (asked only for such targets
    whose host, port and database match; without ``resolve`` they match no user)."""
    if not host or not user:
        raise UsageError("give at least --host and --user (and --port unless it is 5432)")
    if len(user) >= 2 and user.startswith('"') and user.endswith('"'):
        user = user[1:-1].replace('""', '"')
    try:
        want_port = int(port) if port not in (None, "") else int(DEFAULT_PORT)
    except ValueError:
        raise UsageError(f"--port must be a number, got {port!r}") from None
    want_host, want = connection(host, want_port)
    found = []
    for t in config.targets.values():
        if follows(t):
            if resolve is None or not target_line(replace(t, user=user)).matches(
                want_host, want, database or None, user
            ):
                continue
            t = replace(t, user=resolve(t) or PRINCIPAL)
        if target_line(t).matches(want_host, want, database or None, user):
            found.append(t)
    if not found:
        raise UsageError(
            f"no target in {config.path} for {user}@{host}:{want_port}"
            f"{'/' + database if database else ''}; add a [targets.NAME] table with exactly these "
            "host, port and user (case-sensitive)"
        )
    if len({t.identity for t in found}) > 1:
        raise UsageError(
            f"several targets match {user}@{host}:{want_port} with different identities "
            f"({', '.join(t.name for t in found)}); name one: tokend token TARGET"
        )
    return found[0]


def libpq_finding(name: str, major: int, evidence: str) -> Finding:
    """Whether a libpq of this ``major`` version can use tokend's lines: before 13 it cut pgpass lines at 320
    bytes without a word (PostgreSQL 13 release notes), and a token is longer."""
    if major >= MIN_LIBPQ_MAJOR:
        return Finding(name, "ok", evidence)
    return Finding(
        name,
        "fail",
        f"{evidence}: libpq before 13 silently truncates pgpass lines over 320 bytes, so a token never works",
        "install a current PostgreSQL client (13 or newer)",
    )


def ignored_because(st_mode: int) -> str | None:
    """Rule 6: why libpq ignores a pgpass file with this ``st_mode`` (of the file a symlink leads to), or None."""
    if system.WINDOWS:  # pragma: no cover - libpq checks nothing there
        return None
    if not stat.S_ISREG(st_mode):
        return "is not a plain file"
    if st_mode & 0o077:
        return "has group or world access"
    return None


class PgpassSink(block.BlockSink):
    kind = "pgpass"
    default_path = staticmethod(default_path)

    def lines(self, entries: Sequence[Entry]) -> list[str]:
        return [line_for(e) for e in entries]

    def unread(self) -> str | None:
        """Rule 6: the file exists but libpq ignores it (group or world access, not a plain file)."""
        try:
            st_mode = self.path.stat().st_mode
        except OSError:
            return None
        if ignored_because(st_mode) is None:
            return None
        finding = _mode(self.path, st_mode)
        return f"{finding.evidence}; {finding.fix}"

    def read_back(self, targets: Sequence[Target]) -> dict[str, str]:
        """The passwords in this owner's block, by the target whose line it is (the four fields as written)."""
        text = atomic.read_back_text(self.path)
        ours = block.owned_lines(text, self.owner)
        by_fields = {ln.fields(): ln.password for ln in read(text) if ln.number in ours}
        return {t.name: by_fields[f] for t in targets if (f := target_line(t).fields()) in by_fields}

    def diagnose(self, targets: Sequence[Target], reported: Mapping[str, Mapping[str, Any]] | None) -> list[Finding]:
        """The file exists; libpq will read it (plain, 0600, no BOM on line 1); tokend's block comes first; and
        for each target tokend's line is the first match (a line of the user's above it would win)."""
        if not self.path.exists():
            return [_missing(self.path, targets, reported)]
        data = self.path.read_bytes()
        text = data.decode("utf-8", "replace")
        out = [_mode(self.path, self.path.stat().st_mode)]
        if data.startswith(block.BOM) and not data[len(block.BOM) :].startswith(b"#"):
            out.append(
                Finding(
                    "pgpass encoding",
                    "fail",
                    f"{self.path} starts with a UTF-8 BOM: libpq cannot read line 1",
                    "save the file without a BOM",
                )
            )
        ours = block.owned_lines(text, self.owner)
        lines = read(text)
        if ours and lines and lines[0].number < min(ours):  # lines are in file order
            out.append(
                Finding(
                    "pgpass order",
                    "warn",
                    f"user lines above tokend's block in {self.path}",
                    "restart the daemon (it puts its block first) or move those lines below it",
                )
            )
        if targets:
            out.append(_shadowing(self.path, targets, Index(lines), ours, daemon=reported is not None))
        return out


def _missing(path: Path, targets: Sequence[Target], reported: Mapping[str, Mapping[str, Any]] | None) -> Finding:
    if not targets:
        return Finding("pgpass", "ok", f"{path} does not exist (no target uses it)")
    if reported is None:
        return Finding("pgpass", "fail", f"{path} does not exist", "start the daemon; it writes the file")
    said = [
        f"target {name}: {s['state']}" + (f" ({s['last_error']})" if s.get("last_error") else "")
        for name, s in reported.items()
    ]
    return Finding(
        "pgpass",
        "fail",
        f"{path} does not exist; the daemon says: {'; '.join(said[:5]) or '-'}",
        "see `tokend status`: the sink's error names the fix",
    )


def _mode(path: Path, st_mode: int) -> Finding:
    mode = stat.S_IMODE(st_mode)
    why = ignored_because(st_mode)
    if why is None:
        return Finding("pgpass mode", "ok", f"{path} is {mode:04o}")
    if not stat.S_ISREG(st_mode):
        return Finding("pgpass mode", "fail", f"{path} {why}: libpq ignores it", f"make {path} a plain file")
    return Finding(
        "pgpass mode",
        "fail",
        f"{path} is {mode:04o}: libpq ignores a pgpass that others can read",
        advice.fix(advice.Failure.PGPASS_MODE, path=str(path)),
    )


def _shadowing(path: Path, targets: Sequence[Target], index: Index, ours: set[int], daemon: bool = True) -> Finding:
    """Whether tokend's line is the first match for each target. With no daemon (``daemon`` False) a target that
    nothing matches yet is waiting for one: that is the fix, not the lines of others."""
    problems = []
    for t in targets:
        host, port = connection(t.host, t.port)
        first = index.first_match(host, port, None if t.database == WILDCARD else t.database, t.user)
        if first is None:
            problems.append(f"target {t.name}: no line matches yet")
        elif first.number not in ours:
            problems.append(
                f"target {t.name}: line {first.number} ({first.fields()}) comes first and wins over tokend's"
            )
    if problems and not daemon and all(p.endswith("no line matches yet") for p in problems):
        return Finding(
            "pgpass shadowing", "fail", "; ".join(problems), advice.fix(advice.Failure.NO_DAEMON) + " (it writes them)"
        )
    if problems:
        fix = f"delete or move those lines below tokend's block in {path}"
        return Finding("pgpass shadowing", "fail", "; ".join(problems), fix)
    counted = f"{len(targets)} target" + "s" * (len(targets) != 1)
    return Finding("pgpass shadowing", "ok", f"tokend's line is the first match for {counted}")
