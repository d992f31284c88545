"""Changing another program's settings file safely, and undoing it exactly.

Every change goes through tokend's one safe writer (``sinks.atomic``: the same rules as pgpass — no link of another
user's followed, no file of another user's or in a folder others could swap it in taken over, 0600, atomic), is
refused while the program runs where that matters and the OS can tell, and keeps the file's original bytes beside it
the first time (``NAME.tokend-backup``, written by the same writer). Nothing is written until the whole edit has
worked in memory: a file tokend cannot read (not UTF-8, over ``MAX_BYTES``, malformed) is one line naming it, exit 2.
What tokend wrote last is recorded (a hash, in its state folder, and whether tokend created the file): ``undo`` puts
the backup's bytes back (or removes a file tokend created) when the file is still exactly that and the backup is
safely the user's, and otherwise removes only tokend's entries, so a change the person made since is never lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tokend import paths, system
from tokend.clients import jsonc
from tokend.errors import SinkError, TokendError, UsageError
from tokend.sinks import atomic, lock_dir

BACKUP_SUFFIX = ".tokend-backup"
MAX_BYTES = 4 << 20  # a client's settings file is kilobytes: one over 4 MiB is not one tokend should edit
Edit = Callable[[str], str]


def _records() -> Path:
    return paths.state_dir() / "clients.json"


def _load() -> dict[str, str]:
    """path → the SHA-256 of what tokend wrote last, prefixed with CREATED when the file did not exist before."""
    try:
        data = json.loads(atomic.read(_records()) or b"{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


CREATED = "created:"
MODE = ":mode"  # a record key's suffix: the file's permission bits before tokend first changed it (restored by undo)


def _save(records: dict[str, str]) -> None:
    paths.private_dir(_records().parent)
    atomic.write(_records(), json.dumps(records, indent=1).encode())


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def backup_of(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def read_text(path: Path) -> str | None:
    """The text of a settings file tokend edits or inspects, read only when it is safely the user's (``atomic.read``:
    SinkError otherwise); None when there is none. UsageError naming the file when it is over ``MAX_BYTES`` or not
    UTF-8."""
    return _text(path, atomic.read(path, MAX_BYTES + 1))


def settings(path: Path, shape: Mapping[str, type]) -> dict[str, Any]:
    """A JSONC settings file's top-level object, checked against ``shape`` (``jsonc.settings``); empty when there is
    no file. UsageError (or SinkError) naming the file when it cannot be read."""
    try:
        return jsonc.settings(read_text(path) or "", shape)
    except ValueError as e:
        raise _malformed(path, e) from None


def _malformed(path: Path, e: ValueError) -> UsageError:
    return UsageError(f"{path}: {e}; fix it (or move it away) and run the command again")


def _text(path: Path, data: bytes | None) -> str | None:
    if data is None:
        return None
    if len(data) > MAX_BYTES:
        raise UsageError(
            f"{path}: over {MAX_BYTES >> 20} MiB, which no settings file tokend edits is; "
            "check that it is the right file, or move it away"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 (byte {e.start}); save it as UTF-8, or move it away") from None


def _edited(path: Path, edit: Edit, data: bytes | None) -> bytes:
    """``edit`` applied to the file's bytes (missing: ""); UsageError naming the file when tokend cannot read it."""
    try:
        return edit(_text(path, data) or "").encode()
    except ValueError as e:  # what the parsers say (jsonc.JsoncError): the file is malformed
        raise _malformed(path, e) from None


def check(path: Path, edit: Edit) -> bytes | None:
    """What ``change`` refuses, found without writing anything: an unsafe or unreadable file, an edit that fails.
    Returns the file's bytes (None: no file)."""
    original = atomic.read(path, MAX_BYTES + 1)
    _edited(path, edit, original)
    return original


def change(path: Path, edit: Edit, program: str | None = None) -> bool:
    """Apply ``edit`` to the text of ``path`` (missing: ""). Returns True when the file changed. ``program``: refuse
    while a process of that name runs (it would overwrite the change, or not see it)."""
    if program and running(program):
        raise TokendError(
            f"{program} is running: close it, then run the command again (it keeps its own copy of "
            f"{path.name} and would not see the change, or overwrite it)"
        )
    if not path.parent.exists():
        paths.private_dir(path.parent)
    original = check(path, edit)
    records = _load()
    prior = records.get(str(path), "")
    if original is None:
        created = True
    elif prior.startswith(CREATED):  # made by tokend: still only tokend's, or the person wrote into it (no backup:
        created = prior == CREATED + _digest(original)  # it would hold tokend's entries; undo removes them)
    else:
        created = False
        backup = backup_of(path)
        if atomic.read(backup, 0) is None:  # something unsafe there (another user's link, say): SinkError
            atomic.write(backup, original)  # 0600 like every file tokend writes; the original's mode is recorded
            records[str(path) + MODE] = oct(stat.S_IMODE(os.stat(path).st_mode))
    written: list[bytes] = []

    def transform(old: bytes | None) -> bytes:
        written.append(_edited(path, edit, old))
        return written[-1]

    changed = atomic.rewrite(path, transform, lock_dir())
    records[str(path)] = (CREATED if created else "") + _digest(written[-1])
    _save(records)
    return changed


def _give_back_mode(path: Path, recorded: str | None) -> None:
    """Give the restored ``path`` the permission bits it had before tokend changed it (``recorded``, from the
    records; the writer makes every file, the backup included, 0600). Never write access for others (a file others
    could change would be trusted again), so read access is all that comes back."""
    if system.WINDOWS or recorded is None:  # no POSIX modes there; a record from before modes were kept
        return
    try:
        bits = int(recorded, 8) & 0o644
    except ValueError:
        return
    os.chmod(path, bits | 0o600)


def _original(backup: Path) -> tuple[bytes | None, str]:
    """The backup's bytes when it is safely the user's, else (None, why not); (None, "") when there is none."""
    try:
        return atomic.read(backup), ""
    except SinkError as e:
        return None, str(e)


def undo(path: Path, remove: Edit, everything: bool = True, program: str | None = None) -> str:
    """Take tokend's entries out of ``path`` (all of them, or some with ``everything=False``): its original bytes
    back when all of tokend's entries go, nothing else changed since tokend wrote it and the backup is safely the
    user's, else just those entries removed. Returns what was done, for people."""
    if program and running(program):
        raise TokendError(f"{program} is running: close it, then run the command again")
    current = atomic.read(path, MAX_BYTES + 1)
    if current is None:
        return f"{path} does not exist: nothing to remove"
    _edited(path, remove, current)  # a file tokend cannot read: refused before anything changes
    records = _load()
    backup = backup_of(path)
    written = records.get(str(path), "")
    unchanged = written.removeprefix(CREATED) == _digest(current)
    original, unsafe = _original(backup)
    stored: list[bytes] = []
    if everything and unchanged and written.startswith(CREATED):
        os.unlink(path)
        done = f"{path}: removed (tokend created it, and it holds only what tokend wrote)"
    elif everything and unchanged and original is not None:
        atomic.rewrite(path, lambda _old: original, lock_dir())
        _give_back_mode(path, records.get(str(path) + MODE))
        done = f"{path}: restored as it was before tokend changed it"
    else:

        def transform(old: bytes | None) -> bytes:
            stored.append(_edited(path, remove, old))
            return stored[-1]

        atomic.rewrite(path, transform, lock_dir())
        if everything and original is not None:  # none of tokend's left: the file's own mode back, as on restore
            _give_back_mode(path, records.get(str(path) + MODE))
        done = f"{path}: removed tokend's entries (the rest, your own changes included, kept)"
        if unsafe:
            done += f"; its backup was not used ({unsafe})"
    if everything:
        if original is not None:
            os.unlink(backup)
        records.pop(str(path), None)
        records.pop(str(path) + MODE, None)
    else:
        records[str(path)] = (CREATED if written.startswith(CREATED) and unchanged else "") + _digest(stored[-1])
    _save(records)
    return done


def running(program: str) -> bool:
    """Whether a process of that name runs for any user (Linux: /proc; macOS: ps; Windows: tasklist)."""
    name = program.lower()
    if system.LINUX:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                first = cmdline.read_bytes().split(b"\0", 1)[0].decode(errors="replace").lower()
                if os.path.basename(first) == name or os.path.basename(first).startswith(name + "."):
                    return True
        return False
    cmd = ["tasklist", "/FO", "CSV", "/NH"] if system.WINDOWS else ["ps", "-A", "-o", "comm="]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.lower()
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(os.path.basename(line.strip().strip('"').split('","')[0]).startswith(name) for line in out.splitlines())
