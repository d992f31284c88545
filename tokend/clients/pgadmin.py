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
With ``--output FILE`` the servers go into that file: made, or added to an existing one (an export of your own
servers, say) with every other byte kept, under keys tokend knows again (``clients remove pgadmin --output FILE``
takes out exactly those). pgAdmin keeps imported servers in its own database; tokend does not edit it.
"""

from __future__ import annotations

import json
import shlex
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokend import system
from tokend.clients import edits, jsonc
from tokend.clients.base import Request
from tokend.config import Target
from tokend.service import tokend_executable

EXPIRATION = 180  # seconds
GROUP = "tokend"
SHAPE = {"Servers": dict}


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


def key(owner: str, name: str) -> str:
    """The server's key in servers.json. pgAdmin's import dialog cuts keys at the first "_" (it appends "_N" to
    make tree ids unique, then splits them), so a target name's "_" becomes "~", which names cannot hold."""
    return f"tokend-{owner}-{name.replace('_', '~')}"


def servers(owner: str, targets: Sequence[Target], tokend: Path, config: Path, shared: bool) -> dict[str, Any]:
    return {
        key(owner, t.name): {
            "Name": t.name,
            "Group": GROUP,
            "Host": t.host,
            "Port": t.port,
            "MaintenanceDB": "postgres" if t.database == "*" else t.database,
            "Username": t.user,
            "SSLMode": "require",
            "ConnectionParameters": {"sslmode": "require", "connect_timeout": 10},
            "PasswordExecCommand": command(tokend, config, None if shared else t),
            "PasswordExecExpiration": EXPIRATION,
        }
        for t in targets
    }


def update(text: str, entries: dict[str, Any]) -> str:
    """``text`` (a servers.json; empty: a new one) with ``entries`` in "Servers", replacing their older copies."""
    jsonc.settings(text, SHAPE)
    if not text.strip():
        return json.dumps({"Servers": entries}, indent=2) + "\n"
    return jsonc.edit_members(text, "Servers", lambda k, _v: k in entries, list(entries.items()))


def remove(text: str, owner: str, names: Sequence[str] | None = None) -> str:
    """``text`` without this config's servers (those of ``names`` only, when given)."""
    jsonc.settings(text, SHAPE)
    chosen = None if names is None else {key(owner, n) for n in names}
    return jsonc.edit_members(
        text, "Servers", lambda k, _v: str(k).startswith(f"tokend-{owner}-") and (chosen is None or k in chosen), []
    )


def install(output: Path, entries: dict[str, Any]) -> list[str]:
    edits.change(output, lambda text: update(text, entries))
    return [
        f"{output}: servers {', '.join(v['Name'] for v in entries.values())} in group {GROUP!r}; import it in "
        "pgAdmin with Tools → Import/Export Servers"
    ]


def uninstall(output: Path, owner: str, names: Sequence[str] | None) -> list[str]:
    return [
        edits.undo(output, lambda text: remove(text, owner, names), everything=not names),
        "pgAdmin keeps what you imported in its own storage, which tokend does not edit: delete the servers of "
        f"the group {GROUP!r} there",
    ]


def set_up(owner: str = "") -> bool | None:
    """Whether pgAdmin's own database (desktop mode) has a server whose password command is tokend's (any
    config's: ``owner`` is not in the command); None when there is no such database here."""
    db = Path.home() / ".pgadmin" / "pgadmin4.db"
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as conn:
            rows = conn.execute("SELECT passexec_cmd FROM server WHERE passexec_cmd LIKE '%tokend%'").fetchall()
    except sqlite3.Error:
        return None
    return bool(rows)


def places() -> list[Path]:
    """Folders whose presence shows pgAdmin 4 is installed here."""
    return [Path.home() / ".pgadmin", Path("/usr/pgadmin4")]


def setup(request: Request) -> list[str]:
    """Into ``request.output``, or (none) the new servers.json to print."""
    entries = servers(request.owner, request.targets, tokend_executable(), request.config_path, request.shared)
    if request.output is None:
        return [update("", entries).removesuffix("\n")]
    return install(request.output, entries)


def undo(request: Request) -> list[str]:
    assert request.output is not None  # needs_output: the dispatcher asks for it
    return uninstall(request.output, request.owner, request.names)
