"""pgAdmin 4: a servers.json for Tools → Import/Export Servers, one server per target, whose password comes from
``PasswordExecCommand``.

Per target (every pgAdmin): the absolute ``tokend token TARGET --config …`` command. Shared (pgAdmin 8.14+, whose
command takes the placeholders %HOSTNAME%, %PORT% and %USERNAME%): one command for every server,
``tokend token --host %HOSTNAME% --port %PORT% --user %USERNAME% --config …``, which picks the target libpq would
match. pgAdmin runs it through a shell after replacing %USERNAME% with the identifier-quoted name (``"DBA Group"``,
quotes included), so the placeholders go in unquoted: pgAdmin's quotes keep a name with spaces in one argument
(names with ``$`` or backquotes would be expanded by the shell: use the per-target form for those).
``PasswordExecExpiration`` (seconds pgAdmin reuses the command's answer) is kept below the shortest life a token
handed out by tokend has left: tokend replaces tokens 4 minutes before they expire, so 180 s.
pgAdmin keeps imported servers in its own database; tokend does not edit it.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokend import system
from tokend.config import Target

EXPIRATION = 180  # seconds
GROUP = "tokend"


def _quote(arg: object) -> str:
    text = str(arg)
    if system.WINDOWS:  # pragma: no cover - cmd.exe's quoting
        return f'"{text}"' if " " in text else text
    return shlex.quote(text)


def command(tokend: Path, config: Path, target: Target | None) -> str:
    """The PasswordExecCommand: for ``target``, or (None) the shared one with pgAdmin's placeholders."""
    base = [_quote(tokend), "token"]
    if target is not None:
        base.append(_quote(target.name))
    else:
        base += ["--host", "%HOSTNAME%", "--port", "%PORT%", "--user", "%USERNAME%"]
    return " ".join([*base, "--config", _quote(config.absolute())])


def servers_json(targets: Iterable[Target], tokend: Path, config: Path, shared: bool = False) -> str:
    servers: dict[str, Any] = {}
    for i, t in enumerate(targets, 1):
        servers[str(i)] = {
            "Name": t.name, "Group": GROUP, "Host": t.host, "Port": t.port,
            "MaintenanceDB": "postgres" if t.database == "*" else t.database, "Username": t.user,
            "SSLMode": "require", "ConnectionParameters": {"sslmode": "require", "connect_timeout": 10},
            "PasswordExecCommand": command(tokend, config, None if shared else t),
            "PasswordExecExpiration": EXPIRATION,
        }
    return json.dumps({"Servers": servers}, indent=2) + "\n"


def set_up() -> bool | None:
    """Whether pgAdmin's own database (desktop mode) has a server whose password command is tokend's; None when
    there is no such database here."""
    import sqlite3

    db = Path.home() / ".pgadmin" / "pgadmin4.db"
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as conn:
            rows = conn.execute("SELECT passexec_cmd FROM server WHERE passexec_cmd LIKE '%tokend%'").fetchall()
    except sqlite3.Error:
        return None
    return bool(rows)
