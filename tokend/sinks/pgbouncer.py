"""PgBouncer: an include file of ``[databases]`` entries whose ``password=`` is the token, and a RELOAD after each
change, so PgBouncer's new server connections log in with a current token while open ones run on.

The file (``[sinks.pgbouncer] path``) belongs wholly to tokend — PgBouncer's own config includes it with
``%include`` and is never touched — and is written 0600 through the atomic writer; run PgBouncer as the same user.
After a change tokend sends SIGHUP to the pid in ``[sinks.pgbouncer] pidfile`` (PgBouncer's RELOAD) — only when the
pidfile is safely the user's (``atomic.read``: a regular file of theirs, through their own links only, in a folder
nobody else could have put it in) and names a pid above 1 of a process of the user's called pgbouncer (Linux:
/proc/PID/status and comm or exe, and the signal sent through a pidfd, so a pid reused meanwhile is never hit;
elsewhere ``ps``). Anything else is a sink error saying what, where and the fix: a pidfile of "-1" would otherwise
hang up every process of the user's. One entry per target: ``TARGET = host=… port=… dbname=… user='…'
password=TOKEN``; TLS to the server is PgBouncer's own ``server_tls_sslmode`` / ``server_tls_ca_file``.

Every PgBouncer release from 1.18 (Debian 12) to 1.25 cuts a ``password=`` value at 2,047 bytes (MAX_PASSWORD), and
Entra tokens can be longer: such a token is refused with the fix, never written cut. The route that always works is
PgBouncer → tokend's local proxy on its Unix socket, with no password at all (README, "PgBouncer").
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokend import system
from tokend.config import Target
from tokend.errors import SinkError
from tokend.sinks import Entry, Sink, atomic, lock_dir
from tokend.sinks.atomic import check_writable, place, rewrite

MAX_PASSWORD = 2047  # bytes: PgBouncer's MAX_PASSWORD is 2048 with the terminating NUL
_HEADER = "; managed by tokend (config {owner}): rewritten on every refresh; edits here are lost\n"
PROGRAM = "pgbouncer"
_PID = re.compile(rb"\s*([0-9]{1,10})\s*(?:\n|$)")  # the pidfile's first line: PgBouncer writes "PID\n"


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
    return _line_start(t) + entry.token.value


def _line_start(t: Target) -> str:
    """A target's entry up to its password: what tells it, however its token reads."""
    return f"{t.name} = host={_quote(t.host)} port={t.port} dbname={_quote(t.database)} user={_quote(t.user)} password="


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
        header = self._header()
        text = header + "[databases]\n" + "".join(line_for(e) + "\n" for e in entries)

        def transform(old: bytes | None) -> bytes | None:
            if old and not old.startswith(header.encode()) and old.strip():
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

    def read_back(self, targets: Sequence[Target]) -> dict[str, str]:
        """The tokens in the include file, when it is this owner's, by the target whose entry (as written) holds one:
        so a restart that cannot get a token at once keeps PgBouncer's new server logins working (tokend.adopt)."""
        text = atomic.read_back_text(self.path)
        if not text.startswith(self._header()):
            return {}
        lines = text.splitlines()
        found = {}
        for t in targets:
            start = _line_start(t)
            token = next((ln[len(start) :] for ln in lines if ln.startswith(start)), "")
            if token:
                found[t.name] = token
        return found

    def _header(self) -> str:
        """The first line of the file: whose it is (a file of another config, or the user's, is never replaced)."""
        return _HEADER.format(owner=self.owner)

    def purge(self) -> str | None:
        """The include file emptied of this config's databases (and PgBouncer told); None when no path is set or
        there is no file: nothing of tokend's was there."""
        if self.path is None or not self.path.exists():
            return None
        self.sync([])
        return f"removed this config's entries from {self.path}"

    def _reload(self) -> None:
        """SIGHUP to PgBouncer (its RELOAD): it re-reads its config and the include file."""
        assert self.pidfile is not None
        pid = pidfile_pid(self.pidfile)
        hang_up(pid, self.pidfile)


def pidfile_pid(pidfile: Path) -> int:
    """The pid PgBouncer's pidfile names, read only when the file is safely the user's; above 1 (0, 1 and -1 would
    reach a process group, init, or every process). SinkError with the fix otherwise."""
    fix = f"fix [sinks.pgbouncer] pidfile ({pidfile})"
    try:
        data = atomic.read(pidfile, 64)
    except SinkError as e:
        raise SinkError(f"PgBouncer's pidfile is not safely yours, so tokend signals nothing: {e}") from None
    if data is None:
        raise SinkError(f"no PgBouncer pidfile at {pidfile}: start PgBouncer with pidfile = {pidfile}, or {fix}")
    m = _PID.match(data)
    pid = int(m[1]) if m else 0
    if pid <= 1 or pid >= 1 << 31:
        shown = data.split(b"\n", 1)[0][:20].decode("ascii", "replace")
        raise SinkError(f"{pidfile} holds {shown!r}, not PgBouncer's pid (a number above 1): {fix}")
    return pid


def hang_up(pid: int, pidfile: Path) -> None:
    """SIGHUP to ``pid`` when it is a pgbouncer process of this user's; SinkError saying why not otherwise."""
    if system.WINDOWS:  # pragma: no cover - no SIGHUP there
        raise SinkError("the pgbouncer sink's RELOAD is a signal, which Windows has not: use the proxy route")
    fd = None
    if system.LINUX:
        try:  # the process itself, from now on: a pid reused after the checks below is never signalled
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise _not_running(pid, pidfile) from None
        except OSError:  # an old kernel, a sandbox: the checks below, then kill()
            fd = None
    try:
        uid, name = _owner_and_name(pid)
        if uid is None:
            raise _not_running(pid, pidfile)
        if uid < 0:
            raise SinkError(
                f"pid {pid} (from {pidfile}): tokend cannot tell whose process it is, so it signals nothing; "
                "restart PgBouncer as you, or fix [sinks.pgbouncer] pidfile"
            )
        if uid != os.getuid():
            raise SinkError(
                f"pid {pid} (from {pidfile}) is a process of another user (uid {uid}), not yours: tokend signals "
                "only your own PgBouncer; run PgBouncer as you, or fix [sinks.pgbouncer] pidfile"
            )
        if not name.startswith(PROGRAM):
            raise SinkError(
                f"pid {pid} (from {pidfile}) is {name or 'a process'!r}, not PgBouncer (a stale pidfile?): "
                "restart PgBouncer, or fix [sinks.pgbouncer] pidfile"
            )
        if fd is not None:
            signal.pidfd_send_signal(fd, signal.SIGHUP)
        else:
            os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise _not_running(pid, pidfile) from None
    except PermissionError:
        raise SinkError(f"cannot signal PgBouncer (pid {pid}): run tokend as PgBouncer's user") from None
    finally:
        if fd is not None:
            os.close(fd)


def _not_running(pid: int, pidfile: Path) -> SinkError:
    return SinkError(
        f"PgBouncer (pid {pid} from {pidfile}) is not running; start PgBouncer (it writes its new pid there)"
    )


def _owner_and_name(pid: int) -> tuple[int | None, str]:
    """(its uid — real and effective, when they agree; -1 when they differ or cannot be read — and its program's
    name) of ``pid``; (None, "") when there is no such process."""
    if system.LINUX:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except FileNotFoundError:
            return None, ""
        except OSError:
            return -1, ""
        uids = next((ln.split()[1:3] for ln in status.splitlines() if ln.startswith("Uid:")), [])
        exe = ""
        with contextlib.suppress(OSError):
            exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        name = comm if comm.startswith(PROGRAM) else exe or comm
        return (int(uids[0]) if len(set(uids)) == 1 else -1) if uids else -1, name
    try:
        r = subprocess.run(["ps", "-o", "uid=,ruid=,comm=", "-p", str(pid)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return -1, ""
    fields = r.stdout.split(None, 2)
    if r.returncode != 0 or len(fields) < 3:
        return None, ""
    return (int(fields[0]) if fields[0] == fields[1] else -1), os.path.basename(fields[2].strip())
