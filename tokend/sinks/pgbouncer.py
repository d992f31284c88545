"""PgBouncer: an include file of ``[databases]`` entries whose ``password=`` is the token, and a RELOAD after each
change, so PgBouncer's new server connections log in with a current token while open ones run on.

The file (``[sinks.pgbouncer] path``) belongs wholly to tokend — PgBouncer's own config includes it with
``%include`` and is never touched — and is written 0600 through the atomic writer; run PgBouncer as the same user.
After a change tokend sends SIGHUP to the pid in ``[sinks.pgbouncer] pidfile`` (PgBouncer's RELOAD). One entry per
target: ``TARGET = host=… port=… dbname=… user='…' password=TOKEN``; TLS to the server is PgBouncer's own
``server_tls_sslmode`` / ``server_tls_ca_file``.

Every PgBouncer release from 1.18 (Debian 12) to 1.25 cuts a ``password=`` value at 2,047 bytes (MAX_PASSWORD), and
Entra tokens can be longer: such a token is refused with the fix, never written cut. The route that always works is
PgBouncer → tokend's local proxy on its Unix socket, with no password at all (README, "PgBouncer").
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokend.errors import SinkError
from tokend.sinks import Entry, Sink, lock_dir
from tokend.sinks.atomic import check_writable, place, rewrite

MAX_PASSWORD = 2047  # bytes: PgBouncer's MAX_PASSWORD is 2048 with the terminating NUL
_HEADER = "; managed by tokend (config {owner}): rewritten on every refresh; edits here are lost\n"


def _quote(value: str) -> str:
    """A value in PgBouncer's connection string syntax (libpq's: single quotes, backslash escapes)."""
    if value and all(c.isalnum() or c in "._-@/" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def line_for(entry: Entry) -> str:
    t = entry.target
    if t.database == "*":
        raise SinkError(f"target {t.name}: PgBouncer needs one database; set database under [targets.{t.name}]")
    if len(entry.token.value.encode()) > MAX_PASSWORD:
        raise SinkError(
            f"target {t.name}: the token is {len(entry.token.value.encode())} bytes and every released "
            f"PgBouncer (1.18–1.25) cuts passwords at {MAX_PASSWORD}, so it could not log in with it; "
            "route PgBouncer through tokend's local proxy instead (README, 'PgBouncer')"
        )
    return (
        f"{t.name} = host={_quote(t.host)} port={t.port} dbname={_quote(t.database)} user={_quote(t.user)} "
        f"password={entry.token.value}"
    )


class PgbouncerSink(Sink):
    kind = "pgbouncer"

    def __init__(self, options: Mapping[str, Any], owner: str) -> None:
        super().__init__(options, owner)
        self.path = Path(options["path"]).expanduser() if options.get("path") else None
        self.pidfile = Path(options["pidfile"]).expanduser() if options.get("pidfile") else None
        self._reload_due = False  # written, but PgBouncer not told yet (it was not running, say)

    def location(self) -> str:
        return str(self.path) if self.path else "[sinks.pgbouncer] (no path set)"

    def place(self) -> str:
        return place(self.path) if self.path else self.location()

    def watched(self) -> list[Path]:
        return [self.path] if self.path else []

    def check(self) -> None:
        if self.path is None or self.pidfile is None:
            raise SinkError(
                "set path (the include file PgBouncer's config %includes) and pidfile (PgBouncer's "
                "pidfile, for the RELOAD) under [sinks.pgbouncer]"
            )
        check_writable(self.path, "[sinks.pgbouncer] path")

    def sync(self, entries: Sequence[Entry]) -> None:
        if self.path is None:
            if entries:
                self.check()
            return
        text = _HEADER.format(owner=self.owner) + "[databases]\n" + "".join(line_for(e) + "\n" for e in entries)
        header = _HEADER.format(owner=self.owner).encode()

        def transform(old: bytes | None) -> bytes | None:
            if old and not old.startswith(header) and old.strip():
                raise SinkError(
                    f"{self.path} is not tokend's own file (it would be replaced whole): point "
                    "[sinks.pgbouncer] path at a file of its own and %include it from PgBouncer's config"
                )
            if old is None and not entries:
                return None
            return text.encode()

        if rewrite(self.path, transform, lock_dir()):
            self._reload_due = True
        if self._reload_due:
            self._reload()
            self._reload_due = False

    def _reload(self) -> None:
        """SIGHUP to PgBouncer (its RELOAD): it re-reads its config and the include file."""
        assert self.pidfile is not None
        try:
            pid = int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            raise SinkError(
                f"cannot read PgBouncer's pid from {self.pidfile}; is PgBouncer running with pidfile set to it?"
            ) from None
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            raise SinkError(f"PgBouncer (pid {pid} from {self.pidfile}) is not running") from None
        except PermissionError:
            raise SinkError(f"cannot signal PgBouncer (pid {pid}): run tokend as PgBouncer's user") from None
