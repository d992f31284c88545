"""Changing another program's settings file safely, and undoing it exactly.

Every change is atomic (``sinks.atomic.rewrite``: the same safety rules as pgpass), refused while the program runs
where that matters and the OS can tell, and keeps the file's original bytes beside it the first time
(``NAME.tokend-backup``). What tokend wrote last is recorded (a hash, in its state folder, and whether tokend
created the file): ``undo`` puts the backup's bytes back (or removes a file tokend created) when the file is still
exactly that, and otherwise removes only tokend's entries, so a change the person made since is never lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from tokend import paths, system
from tokend.errors import TokendError
from tokend.sinks import lock_dir
from tokend.sinks.atomic import rewrite, write_private

BACKUP_SUFFIX = ".tokend-backup"


def _records() -> Path:
    return paths.state_dir() / "clients.json"


def _load() -> dict[str, str]:
    """path → the SHA-256 of what tokend wrote last, prefixed with CREATED when the file did not exist before."""
    try:
        data = json.loads(_records().read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


CREATED = "created:"


def _save(records: dict[str, str]) -> None:
    paths.private_dir(_records().parent)
    write_private(_records(), json.dumps(records, indent=1))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def change(path: Path, edit: Callable[[str], str], program: str | None = None) -> bool:
    """Apply ``edit`` to the text of ``path`` (missing: ""). Returns True when the file changed. ``program``: refuse
    while a process of that name runs (it would overwrite the change, or not see it)."""
    if program and running(program):
        raise TokendError(
            f"{program} is running: close it, then run the command again (it keeps its own copy of "
            f"{path.name} and would not see the change, or overwrite it)"
        )
    if not path.parent.exists():
        paths.private_dir(path.parent)
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    records = _load()
    prior = records.get(str(path), "")
    if not path.exists():
        created = True
    elif prior.startswith(CREATED):  # made by tokend: still only tokend's, or the person wrote into it (no backup:
        created = prior == CREATED + _digest(path.read_bytes())  # it would hold tokend's entries; undo removes them)
    else:
        created = False
        if not backup.exists():
            shutil.copy2(path, backup)
    changed = rewrite(path, lambda old: edit((old or b"").decode("utf-8-sig")).encode(), lock_dir())
    records[str(path)] = (CREATED if created else "") + _digest(path.read_bytes())
    _save(records)
    return changed


def undo(path: Path, remove: Callable[[str], str], everything: bool = True, program: str | None = None) -> str:
    """Take tokend's entries out of ``path`` (all of them, or some with ``everything=False``): its original bytes
    back when all of tokend's entries go and nothing else changed since tokend wrote it, else just those entries
    removed. Returns what was done, for people."""
    if program and running(program):
        raise TokendError(f"{program} is running: close it, then run the command again")
    if not path.exists():
        return f"{path} does not exist: nothing to remove"
    records = _load()
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    written = records.get(str(path), "")
    unchanged = written.removeprefix(CREATED) == _digest(path.read_bytes())
    if everything and unchanged and written.startswith(CREATED):
        path.unlink()
        done = f"{path}: removed (tokend created it, and it holds only what tokend wrote)"
    elif everything and unchanged and backup.exists():
        original = backup.read_bytes()
        rewrite(path, lambda _old: original, lock_dir())
        done = f"{path}: restored as it was before tokend changed it"
    else:
        rewrite(path, lambda old: remove((old or b"").decode("utf-8-sig")).encode(), lock_dir())
        done = f"{path}: removed tokend's entries (the rest, your own changes included, kept)"
    if everything:
        with contextlib.suppress(FileNotFoundError):
            backup.unlink()
        records.pop(str(path), None)
    else:
        records[str(path)] = (CREATED if written.startswith(CREATED) and unchanged else "") + _digest(path.read_bytes())
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
