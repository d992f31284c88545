"""VS Code's PostgreSQL extension (ms-ossdata.vscode-pgsql, Azure Data Studio's successor): connection profiles for
the targets' local proxy.

A blank password does not reach pgpass in this extension (its issues #275, #89) and a pasted token breaks when its
connection pool opens a new connection after expiry, so the route is the proxy: a profile for the target's
loopback listener with no password (authentication "None", "No Password" since 1.7.0) and the target's user. Each
new connection the extension opens gets the daemon's current token from the proxy.
Profiles live in the user settings (``pgsql.connections``, in the group ``pgsql.serverGroups`` "tokend"); the
rest of the file — other profiles, comments, spacing — is kept byte for byte (``jsonc.edit_members``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokend import paths
from tokend.clients import edits, jsonc
from tokend.clients.base import Request
from tokend.config import Target
from tokend.errors import UsageError

CONNECTIONS, GROUPS = "pgsql.connections", "pgsql.serverGroups"
GROUP_ID = "7f0b6a8e-7c1d-4f55-9c6e-70c3e5d0cafe"  # tokend's server group (fixed, so updates find it)
SHAPE = {CONNECTIONS: list, GROUPS: list}  # what the extension keeps there


def settings_path() -> Path:
    """VS Code's user settings on this OS."""
    return paths.app_config_dir("Code") / "User" / "settings.json"


def profile_id(owner: str, t: Target) -> str:
    return f"tokend-{owner}-{t.name}"


def profile(owner: str, t: Target) -> dict[str, Any]:
    """The profile for ``t``'s loopback proxy listener; UsageError naming the config line when it has none."""
    tcp = next((a for a in t.listen if not a.unix), None)
    if tcp is None:
        raise UsageError(
            f"target {t.name} has no local proxy on loopback TCP, which the VS Code PostgreSQL extension "
            f'needs: add listen = ["127.0.0.1:6432"] (a free port) under [targets.{t.name}]'
        )
    return {
        "id": profile_id(owner, t),
        "groupId": GROUP_ID,
        "profileName": f"{t.name} (tokend)",
        "server": tcp.host,
        "port": str(tcp.port),
        "database": t.database if t.database != "*" else "postgres",
        "user": t.user,
        "password": "",
        "savePassword": False,
        "emptyPasswordInput": True,
        "authenticationType": "None",
        "sslmode": "prefer",
    }


def _ours(owner: str, _key: str | None, value: Any) -> bool:
    return isinstance(value, dict) and str(value.get("id", "")).startswith(f"tokend-{owner}-")


def update(text: str, owner: str, targets: Sequence[Target]) -> str:
    profiles = [profile(owner, t) for t in targets]
    data = jsonc.settings(text, SHAPE)
    mine = {p["id"] for p in profiles}
    text = jsonc.edit_members(
        text, CONNECTIONS, lambda _k, v: isinstance(v, dict) and v.get("id") in mine, [(None, p) for p in profiles]
    )
    if not any(isinstance(g, dict) and g.get("id") == GROUP_ID for g in data.get(GROUPS, [])):
        text = jsonc.edit_members(
            text,
            GROUPS,
            lambda _k, _v: False,
            [
                (
                    None,
                    {
                        "name": "tokend",
                        "id": GROUP_ID,
                        "color": "#0078D4",
                        "description": "Entra logins through tokend's local proxy",
                    },
                )
            ],
        )
    return text


def remove(text: str, owner: str, names: Sequence[str] | None = None) -> str:
    """``text`` without this config's profiles (those of ``names`` only, when given), and without tokend's group
    once no tokend profile is left."""

    def drop(_k: str | None, v: Any) -> bool:
        return _ours(owner, _k, v) and (names is None or v.get("id") in {f"tokend-{owner}-{n}" for n in names})

    text = jsonc.edit_members(text, CONNECTIONS, drop, [])
    left = jsonc.settings(text, SHAPE).get(CONNECTIONS, [])
    if not any(isinstance(c, dict) and str(c.get("id", "")).startswith("tokend-") for c in left):
        text = jsonc.edit_members(text, GROUPS, lambda _k, v: isinstance(v, dict) and v.get("id") == GROUP_ID, [])
    return text


def install(owner: str, targets: Sequence[Target]) -> list[str]:
    for t in targets:
        profile(owner, t)  # every target checked before anything is written
    path = settings_path()
    edits.change(path, lambda text: update(text, owner, targets))
    return [
        f'{path}: VS Code PostgreSQL profiles {", ".join(t.name for t in targets)} (group "tokend") through '
        "tokend's local proxy, no password; open the PostgreSQL view and connect"
    ]


def uninstall(owner: str, names: Sequence[str] | None) -> list[str]:
    return [edits.undo(settings_path(), lambda text: remove(text, owner, names), everything=not names)]


def set_up(owner: str) -> bool:
    """Whether this config's profiles are there; UsageError or SinkError naming the file when it cannot be read."""
    return any(_ours(owner, None, c) for c in edits.settings(settings_path(), SHAPE).get(CONNECTIONS, []))


def places() -> list[Path]:
    """Folders whose presence shows VS Code is installed here."""
    return [settings_path().parent]


def setup(request: Request) -> list[str]:
    return install(request.owner, request.targets)


def undo(request: Request) -> list[str]:
    return uninstall(request.owner, request.names)
