"""VS Code's PostgreSQL extension (ms-ossdata.vscode-pgsql, Azure Data Studio's successor): connection profiles for
the targets' local proxy.

The extension can log in as an Entra group itself since its 1.5.0 (its issue #30; the "no valid oid claim" error for
group tokens, #183, fixed in 1.13.0), but a blank password does not reach pgpass in it (#275, #89) and a pasted token
breaks when its connection pool opens a new connection after expiry. So the route is the proxy, whose value here is a
fresh token for every pooled connection: a profile for the target's loopback listener with no password
(authentication "None", "No Password" since 1.7.0) and the target's user.
Profiles live in the user settings (``pgsql.connections``, in the group ``pgsql.serverGroups`` "tokend"); the
rest of the file — other profiles, comments, spacing — is kept byte for byte (``jsonc.edit_members``). Profile ids
are UUIDs, as the extension makes them (one that is not may be dropped when it starts): a UUID 5 of the config and
the target's name, so the same target always gets the same id and an update finds its profile again.
"""

from __future__ import annotations

import uuid
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
IDS = uuid.UUID(GROUP_ID)  # the namespace of the profiles' UUID 5 ids
SUFFIX = " (tokend)"  # after the target's name in profileName
SHAPE = {CONNECTIONS: list, GROUPS: list}  # what the extension keeps there


def settings_path() -> Path:
    """VS Code's user settings on this OS."""
    return paths.app_config_dir("Code") / "User" / "settings.json"


def profile_id(owner: str, name: str) -> str:
    """The profile's id: the same UUID for the same config and target name, every time."""
    return str(uuid.uuid5(IDS, f"{owner}/{name}"))


def _legacy_id(owner: str, name: str) -> str:
    """The id tokend wrote before it wrote UUIDs: still recognised, so an update replaces it and remove takes it."""
    return f"tokend-{owner}-{name}"


def profile(owner: str, t: Target) -> dict[str, Any]:
    """The profile for ``t``'s loopback proxy listener; UsageError naming the config line when it has none."""
    tcp = next((a for a in t.listen if not a.unix), None)
    if tcp is None:
        raise UsageError(
            f"target {t.name} has no local proxy on loopback TCP, which the VS Code PostgreSQL extension "
            f'needs: add listen = ["127.0.0.1:6432"] (a free port) under [targets.{t.name}]'
        )
    return {
        "id": profile_id(owner, t.name),
        "groupId": GROUP_ID,
        "profileName": f"{t.name}{SUFFIX}",
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


def _target_name(owner: str, value: Any) -> str | None:
    """The target a profile of this config's was written for, or None when it is not one of this config's (the
    person's own, another config's)."""
    if not isinstance(value, dict):
        return None
    pid = str(value.get("id", ""))
    if pid.startswith(f"tokend-{owner}-"):
        return pid.removeprefix(f"tokend-{owner}-")
    name = str(value.get("profileName", "")).removesuffix(SUFFIX)
    return name if value.get("groupId") == GROUP_ID and pid == profile_id(owner, name) else None


def _ours(owner: str, _key: str | None, value: Any) -> bool:
    return _target_name(owner, value) is not None


def update(text: str, owner: str, targets: Sequence[Target]) -> str:
    profiles = [profile(owner, t) for t in targets]
    data = jsonc.settings(text, SHAPE)
    mine = {p["id"] for p in profiles} | {_legacy_id(owner, t.name) for t in targets}
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
        name = _target_name(owner, v)
        return name is not None and (names is None or name in names)

    text = jsonc.edit_members(text, CONNECTIONS, drop, [])
    left = jsonc.settings(text, SHAPE).get(CONNECTIONS, [])
    if not any(
        isinstance(c, dict) and (c.get("groupId") == GROUP_ID or str(c.get("id", "")).startswith("tokend-"))
        for c in left
    ):
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
