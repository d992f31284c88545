"""pgAdmin 4: a servers.json for Tools → Import/Export Servers (or ``setup.py load-servers``), one server per target,
whose password comes from ``PasswordExecCommand``.

Desktop mode, per target (every pgAdmin): the absolute ``tokend token TARGET --config …`` command. Shared (pgAdmin
8.14+, whose command takes the placeholders %HOSTNAME%, %PORT% and %USERNAME%): one command for every server,
``tokend token --host %HOSTNAME% --port %PORT% --user %USERNAME% --config …``, which picks the target libpq would
match. pgAdmin runs it through ``/bin/sh -c`` (60 s timeout, with pgAdmin's own environment) after replacing
%USERNAME% with the identifier-quoted name (``"DBA Group"``, quotes included), so the placeholders go in unquoted:
pgAdmin's quotes keep a name with spaces in one argument. The shell still expands ``$`` and backquotes inside them:
for names with those, use the per-target form (pgadmin4 ``web/pgadmin/utils/passexec.py``, ``PasswordExec.get``).
A command that fails shows "Command … returned non-zero exit status N" in pgAdmin; its stderr (tokend's one-line
reason) goes only to pgAdmin's LOG_FILE.

Server mode (a team pgAdmin): 9.x runs a free-text command there only with ``ENABLE_SERVER_PASS_EXEC_CMD = True`` in
config_local.py (then import the desktop form). pgAdmin's development branch (migration ``server_passexec_name``,
2026-10-06) runs no free text in server mode at all: the administrator names the allowed commands in
``SERVER_PASSEXEC_COMMANDS = {"name": ["/abs/cmd", "arg", …]}``, servers.json gives the name as PasswordExecCommand,
and pgAdmin runs the list without a shell with ``PGADMIN_PASSEXEC_HOST``, ``_PORT``, ``_USERNAME``, ``_DATABASE``
(the maintenance database), ``_PGADMIN_USER`` and ``_AUTH_SOURCE`` set (``ServerPasswordExec``). ``--server-mode``
writes that form: one entry ``tokend token --from-pgadmin --config …``, which matches the target from those
variables like ``--host/--port/--user``.

``PasswordExecExpiration`` (seconds pgAdmin reuses the command's answer, per session and server; unset: forever, 0:
every connection) follows the refresh margin, well below it (``expiration``): ``tokend token`` never answers with
a token inside its refresh lead while its successor is due, so what pgAdmin reuses has at least the lead left.
With ``--output FILE`` the servers go into that file: made, or added to an existing one (an export of your own
servers, say) with every other byte kept, under keys tokend knows again (``clients remove pgadmin --output FILE``
takes out exactly those). pgAdmin keeps imported servers in its own database; tokend does not edit it.
"""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokend import system
from tokend.clients import edits, jsonc
from tokend.clients.base import Request
from tokend.config import Config, Target
from tokend.errors import UsageError
from tokend.service import tokend_executable
from tokend.sinks import pgpass

MAX_EXPIRATION = 180  # seconds: under the 5 minutes before expiry at which the credentials first give a new token
GROUP = "tokend"
SHAPE = {"Servers": dict}
COMMAND_NAME = "tokend"  # the SERVER_PASSEXEC_COMMANDS entry (server mode)
PASSEXEC_ENV = (
    "PGADMIN_PASSEXEC_HOST",
    "PGADMIN_PASSEXEC_PORT",
    "PGADMIN_PASSEXEC_USERNAME",
    "PGADMIN_PASSEXEC_DATABASE",
)


def expiration(margin: float) -> int:
    """PasswordExecExpiration for a refresh ``margin`` (seconds): a third of it, at most MAX_EXPIRATION. What pgAdmin
    reuses then always has two thirds of the margin left (a token with lifetime under twice the margin is
    refreshed at half its life instead: keep such a margin at most three quarters of the lifetime)."""
    return max(1, min(MAX_EXPIRATION, int(margin // 3)))


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


def server_command(tokend: Path, config: Path) -> list[str]:
    """The SERVER_PASSEXEC_COMMANDS list (server mode): absolute paths, no shell, the target from pgAdmin's
    PGADMIN_PASSEXEC_* variables."""
    return [str(tokend.absolute()), "token", "--from-pgadmin", "--config", str(config.absolute())]


def config_local(tokend: Path, config: Path) -> str:
    """The lines to paste into pgAdmin's config_local.py on the pgAdmin server (server mode)."""
    entry = json.dumps({COMMAND_NAME: server_command(tokend, config)}, indent=4)
    return (
        "# tokend's password command for pgAdmin 4 in server mode: paste into pgAdmin's config_local.py (into the\n"
        "# SERVER_PASSEXEC_COMMANDS there, if it has one). pgAdmin 9.x has no named commands: set\n"
        "# ENABLE_SERVER_PASS_EXEC_CMD = True there and import `tokend clients pgadmin` without --server-mode.\n"
        f"SERVER_PASSEXEC_COMMANDS = {entry}\n"
    )


def servers(
    owner: str,
    targets: Sequence[Target],
    tokend: Path,
    config: Path,
    shared: bool,
    margin: float = 240.0,
    server_mode: bool = False,
) -> dict[str, Any]:
    """The servers.json entries for ``targets``: desktop mode's command (per target, or ``shared``), or the server
    mode command's name; PasswordExecExpiration from the refresh ``margin`` (seconds)."""
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
            "PasswordExecCommand": COMMAND_NAME if server_mode else command(tokend, config, None if shared else t),
            "PasswordExecExpiration": expiration(margin),
        }
        for t in targets
    }


def passexec_target(cfg: Config, environ: Mapping[str, str] = os.environ) -> Target:
    """The target for the server pgAdmin runs its named command for (``tokend token --from-pgadmin``): from
    PGADMIN_PASSEXEC_HOST, _PORT, _USERNAME and _DATABASE, matched like ``--host/--port/--user/--database``."""
    missing = [name for name in PASSEXEC_ENV[:3] if not environ.get(name)]
    if missing:
        raise UsageError(
            f"--from-pgadmin: {', '.join(missing)} not set; pgAdmin sets them when it runs a command named in "
            "SERVER_PASSEXEC_COMMANDS (server mode); elsewhere use --host/--port/--user or a target name"
        )
    host, port, user, database = (environ.get(name) for name in PASSEXEC_ENV)
    return pgpass.target_for(cfg, host, port, user, database or None)


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
    """Into ``request.output``, or (none) the new servers.json to print; in server mode the config_local.py lines
    come first (two documents, as for DataGrip)."""
    r, tokend = request, tokend_executable()
    entries = servers(r.owner, r.targets, tokend, r.config_path, r.shared, r.margin, r.server_mode)
    head = [config_local(tokend, r.config_path).removesuffix("\n")] if r.server_mode else []
    if r.output is None:
        return [*head, (("# servers.json\n" if r.server_mode else "") + update("", entries)).removesuffix("\n")]
    return [*head, *install(r.output, entries)]


def undo(request: Request) -> list[str]:
    assert request.output is not None  # needs_output: the dispatcher asks for it
    return uninstall(request.output, request.owner, request.names)
