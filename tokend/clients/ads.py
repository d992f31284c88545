"""Azure Data Studio: targets as PostgreSQL connection profiles that take the password from pgpass.

A profile in ADS's user settings (``datasource.connections``, provider PGSQL) with ``savePassword: true`` and no
stored credential makes ADS connect without prompting and send an empty password; its PostgreSQL backend
(pgtoolsservice → psycopg → libpq) treats empty as none and reads pgpass, so every connect gets the fresh token.
A stale saved password for the profile would win, so it is removed, wherever this ADS keeps it
(see ``credential_stores``). The rest of the settings file is kept byte for byte, comments included.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tokend import paths, system
from tokend.clients import edits, jsonc
from tokend.clients.base import Request
from tokend.config import Target
from tokend.errors import TokendError

ROOT_GROUP_ID = "C777F06B-202E-4480-B475-FA416154D458"  # ADS's root connection group
GROUP_ID = "tokend-0000-4000-8000-000000000001"
GROUP_NAME = "tokend"


def user_dir() -> Path:
    """ADS's User folder on this OS."""
    return paths.app_config_dir("azuredatastudio") / "User"


def dbname(t: Target) -> str:
    return "postgres" if t.database == "*" else t.database


def profile_id(owner: str, t: Target) -> str:
    return f"tokend-{owner}-{t.name}"


def profile(owner: str, t: Target) -> dict[str, Any]:
    options = {
        "connectionName": f"{t.name} (tokend)",
        "host": t.host,
        "hostaddr": "",
        "port": str(t.port),
        "dbname": dbname(t),
        "user": t.user,
        "password": "",
        "authenticationType": "SqlLogin",
        "sslmode": "require",
        "groupId": GROUP_ID,
        "databaseDisplayName": dbname(t),
    }
    return {
        "options": options,
        "groupId": GROUP_ID,
        "providerName": "PGSQL",
        "savePassword": True,
        "id": profile_id(owner, t),
    }


def credential_id(t: Target) -> str:
    """The id under which ADS keeps a saved password for this profile (option names sorted, values raw)."""
    return (
        "Microsoft.SqlTools|itemtype:Profile|id:providerName:PGSQL|applicationName:azdata|"
        f"authenticationType:SqlLogin|dbname:{dbname(t)}|host:{t.host}|hostaddr:|port:{t.port}|user:{t.user}"
    )


class CredentialStore(Protocol):
    """One place ADS may keep saved passwords."""

    name: str

    def delete(self, credential_id: str) -> bool:
        """Remove the saved password with this id; True when there was one."""


@dataclass
class SecretServiceStore:
    """Linux before ADS 1.48 (keytar over libsecret): service = the credential id."""

    name: str = "Secret Service"

    def delete(self, credential_id: str) -> bool:
        import secretstorage  # start-up time (~0.3 s, D-Bus): Linux ADS before 1.48 only

        with contextlib.closing(secretstorage.dbus_init()) as conn:
            found = False
            for collection in secretstorage.get_all_collections(conn):
                for item in collection.search_items({"service": credential_id}):
                    item.delete()
                    found = True
            return found


@dataclass
class VscdbStore:
    """Linux ADS 1.48+: an encrypted row in globalStorage/state.vscdb. Only safe to change while ADS is closed."""

    path: Path
    name: str = "state.vscdb"

    def delete(self, credential_id: str) -> bool:
        if not self.path.exists():
            return False
        if edits.running("azuredatastudio"):
            raise TokendError(
                "Azure Data Studio is running: close it, then run `tokend clients ads` again "
                "(its saved-password store can only be changed while it is closed)"
            )
        with contextlib.closing(sqlite3.connect(self.path, timeout=5)) as db, db:
            cur = db.execute("DELETE FROM ItemTable WHERE instr(key, ?) > 0", (credential_id,))
            return cur.rowcount > 0


@dataclass
class MacKeychainStore:  # pragma: no cover - macOS only
    """macOS: a Keychain generic password, service = the credential id, empty account."""

    name: str = "Keychain"

    def delete(self, credential_id: str) -> bool:
        r = subprocess.run(["security", "delete-generic-password", "-s", credential_id, "-a", ""], capture_output=True)
        return r.returncode == 0


@dataclass
class WindowsCredentialStore:  # pragma: no cover - Windows only
    """Windows: Credential Manager, target name = the credential id (sqltoolsservice's Win32Credential)."""

    name: str = "Credential Manager"

    def delete(self, credential_id: str) -> bool:
        from keyring.backends.Windows import WinVaultKeyring  # Windows only; keyring loads its backends
        from keyring.errors import PasswordDeleteError  # (start-up time)

        try:
            WinVaultKeyring().delete_password(credential_id, "")
        except PasswordDeleteError:
            return False
        return True


def credential_stores() -> list[CredentialStore]:
    if system.WINDOWS:  # pragma: no cover
        return [WindowsCredentialStore()]
    if system.MACOS:  # pragma: no cover
        return [MacKeychainStore()]
    stores: list[CredentialStore] = [VscdbStore(user_dir() / "globalStorage" / "state.vscdb")]
    if os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        stores.append(SecretServiceStore())
    return stores


CONNECTIONS, GROUPS = "datasource.connections", "datasource.connectionGroups"
SHAPE = {CONNECTIONS: list, GROUPS: list}  # what ADS keeps there


def update_settings(text: str, owner: str, targets: Sequence[Target]) -> str:
    """ADS settings text with tokend's profiles for ``targets`` (and its group) added or updated; every other byte
    of the file as it was."""
    data = jsonc.settings(text, SHAPE)
    mine = {profile_id(owner, t) for t in targets}
    text = jsonc.edit_members(
        text,
        CONNECTIONS,
        lambda _k, v: isinstance(v, dict) and v.get("id") in mine,
        [(None, profile(owner, t)) for t in targets],
    )
    groups = [g for g in data.get(GROUPS, []) if isinstance(g, dict)]
    add = []
    root = next((g for g in groups if g.get("name") == "ROOT"), None)
    if root is None:
        root = {"name": "ROOT", "id": ROOT_GROUP_ID}
        add.append((None, root))
    if not any(g.get("id") == GROUP_ID for g in groups):
        add.append(
            (
                None,
                {
                    "name": GROUP_NAME,
                    "id": GROUP_ID,
                    "parentId": root["id"],
                    "color": "#0078D4",
                    "description": "Entra logins kept fresh by tokend",
                },
            )
        )
    return jsonc.edit_members(text, GROUPS, lambda _k, _v: False, add) if add else text


def remove_settings(text: str, owner: str, names: Sequence[str] | None = None) -> str:
    jsonc.settings(text, SHAPE)
    ids = None if names is None else {f"tokend-{owner}-{n}" for n in names}
    text = jsonc.edit_members(
        text,
        CONNECTIONS,
        lambda _k, v: (
            isinstance(v, dict)
            and str(v.get("id", "")).startswith(f"tokend-{owner}-")
            and (ids is None or v.get("id") in ids)
        ),
        [],
    )
    left = jsonc.settings(text, SHAPE).get(CONNECTIONS, [])
    if not any(isinstance(c, dict) and c.get("groupId") == GROUP_ID for c in left):
        text = jsonc.edit_members(text, GROUPS, lambda _k, v: isinstance(v, dict) and v.get("id") == GROUP_ID, [])
    return text


def settings_path() -> Path:
    return user_dir() / "settings.json"


def install(owner: str, targets: Iterable[Target], stores: Sequence[CredentialStore] | None = None) -> list[str]:
    """Add or update the profiles and remove stale saved passwords. Returns what was done."""
    targets = list(targets)
    edits.change(settings_path(), lambda text: update_settings(text, owner, targets))
    done = [f"{settings_path()}: profiles {', '.join(t.name for t in targets)} (group {GROUP_NAME!r})"]
    for t in targets:
        for store in stores if stores is not None else credential_stores():
            if store.delete(credential_id(t)):
                done.append(f"removed a stale saved password for {t.name} from {store.name}")
    return done


def uninstall(owner: str, names: Sequence[str] | None) -> list[str]:
    return [edits.undo(settings_path(), lambda text: remove_settings(text, owner, names), everything=not names)]


def set_up(owner: str) -> bool:
    """Whether this config's profiles are there; UsageError or SinkError naming the file when it cannot be read."""
    data = edits.settings(settings_path(), SHAPE)
    return any(
        isinstance(c, dict) and str(c.get("id", "")).startswith(f"tokend-{owner}-") for c in data.get(CONNECTIONS, [])
    )


def places() -> list[Path]:
    """Folders whose presence shows Azure Data Studio is installed here."""
    return [user_dir().parent]


def setup(request: Request) -> list[str]:
    return install(request.owner, request.targets)


def undo(request: Request) -> list[str]:
    return uninstall(request.owner, request.names)
