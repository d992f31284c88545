"""DBeaver (Community and the paid editions): the targets as connections with PostgreSQL's pgpass authentication.

The workspace's ``data-sources.json`` (project "General") gets one connection per target in the folder "tokend":
host, port, database and user exactly as the pgpass block writes them (DBeaver's own pgpass parser matches them,
case-insensitively), authentication "PostgreSQL pgpass" (``postgres_pgpass``), SSL mode require. DBeaver reads
pgpass at every connect, so each new connection gets the current token. ``"save-password": true``, as DBeaver's own
pgpass page saves it (``PostgreAuthPgPassConfigurator.saveSettings`` calls ``setSavePassword(true)``): with false,
DBeaver opens its credentials dialog on every connect; nothing secret is stored either way, since the password is
read from pgpass (``AuthModelPgPass.loadPasswordFromPgPass``) and DBeaver's credentials file gets none.
Existing connections and folders stay as they were; DBeaver's credentials file is never touched. DBeaver keeps its
own copy while it runs: close it first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokend import paths, system
from tokend.clients import edits, jsonc
from tokend.clients.base import Request
from tokend.config import Target
from tokend.errors import UsageError

PROGRAM = "dbeaver"
FOLDER = "tokend"
SHAPE = {"folders": dict, "connections": dict}  # what DBeaver keeps there


def workspace() -> Path:
    """DBeaver's default workspace on this OS (on macOS in ~/Library itself, not in Application Support)."""
    if system.MACOS:  # pragma: no cover
        return Path.home() / "Library" / "DBeaverData" / "workspace6"
    return paths.app_data_dir("DBeaverData") / "workspace6"


def data_sources() -> Path:
    return workspace() / "General" / ".dbeaver" / "data-sources.json"


def connection_id(owner: str, t: Target) -> str:
    return f"tokend-{owner}-{t.name}"


def connection(t: Target) -> dict[str, Any]:
    if "pgpass" not in t.sinks:
        raise UsageError(f'DBeaver reads the token from pgpass: add "pgpass" to sinks under [targets.{t.name}]')
    db = t.database if t.database != "*" else "postgres"
    return {
        "provider": "postgresql",
        "driver": "postgres-jdbc",
        "name": f"{t.name} (tokend)",
        "folder": FOLDER,
        "save-password": True,  # what DBeaver's pgpass page saves; false: a dialog on every connect
        "configuration": {
            "host": t.host,
            "port": str(t.port),
            "database": db,
            "url": f"jdbc:postgresql://{t.host}:{t.port}/{db}",
            "configurationType": "MANUAL",
            "type": "prod",
            "auth-model": "postgres_pgpass",
            "user": t.user,
            "handlers": {"postgre_ssl": {"type": "CONFIG", "enabled": True, "properties": {"sslMode": "require"}}},
        },
    }


def update(text: str, owner: str, targets: Sequence[Target]) -> str:
    mine = {connection_id(owner, t) for t in targets}
    data = jsonc.settings(text, SHAPE)
    if not text.strip():
        text = "{\n}\n"
    if FOLDER not in data.get("folders", {}):
        text = jsonc.edit_members(text, "folders", lambda _k, _v: False, [(FOLDER, {})])
    return jsonc.edit_members(
        text, "connections", lambda k, _v: k in mine, [(connection_id(owner, t), connection(t)) for t in targets]
    )


def remove(text: str, owner: str, names: Sequence[str] | None = None) -> str:
    jsonc.settings(text, SHAPE)
    ids = None if names is None else {f"tokend-{owner}-{n}" for n in names}
    text = jsonc.edit_members(
        text, "connections", lambda k, _v: str(k).startswith(f"tokend-{owner}-") and (ids is None or k in ids), []
    )
    left = jsonc.settings(text, SHAPE).get("connections", {})
    if not any(v.get("folder") == FOLDER for v in left.values() if isinstance(v, dict)):
        text = jsonc.edit_members(text, "folders", lambda k, _v: k == FOLDER, [])
    return text


def install(owner: str, targets: Sequence[Target]) -> list[str]:
    for t in targets:
        connection(t)
    path = data_sources()
    edits.change(path, lambda text: update(text, owner, targets), program=PROGRAM)
    return [
        f"{path}: DBeaver connections {', '.join(t.name for t in targets)} in folder {FOLDER!r}, "
        "authentication PostgreSQL pgpass"
    ]


def uninstall(owner: str, names: Sequence[str] | None) -> list[str]:
    return [edits.undo(data_sources(), lambda text: remove(text, owner, names), everything=not names, program=PROGRAM)]


def set_up(owner: str) -> bool:
    """Whether this config's connections are there; UsageError or SinkError naming the file when it cannot be read."""
    return any(
        str(k).startswith(f"tokend-{owner}-") for k in edits.settings(data_sources(), SHAPE).get("connections", {})
    )


def places() -> list[Path]:
    """Folders whose presence shows DBeaver is installed here."""
    return [workspace()]


def setup(request: Request) -> list[str]:
    return install(request.owner, request.targets)


def undo(request: Request) -> list[str]:
    return uninstall(request.owner, request.names)
