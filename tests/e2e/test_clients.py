"""Every client finds its password: keychain (real Secret Service), pg_service, Azure Data Studio, pgAdmin, and the
drivers with their own pgpass readers (psycopg, psycopg2, asyncpg)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tokend import paths
from tokend.clients import ads, jsonc
from tokend.config import Target
from tokend.emulator.postgres import Postgres
from tokend.sinks import Entry, keychain
from tokend.token import Token

from support.builders import GROUP, sp_config
from support.clients import jdbc, psql
from support.product import PRODUCT_PYTHON, tokend
from support.tenant import Tenant
from support.waits import wait_for


def sp_with_sinks(em: Tenant, pg: Postgres, sinks: str, name: str = "db") -> str:
    return sp_config(
        em,
        pg.port,
        targets=(
            f'[targets.{name}]\nhost = "127.0.0.1"\nport = {pg.port}\ndatabase = "appdb"\nuser = "{GROUP}"\n'
            f'identity = "sp"\nsinks = {sinks}\n'
        ),
    )


def keyring_get(name: str) -> str:
    r = subprocess.run([PRODUCT_PYTHON, "-m", "keyring", "get", "tokend", name], capture_output=True, text=True)
    return r.stdout.strip()


def secret_tool(name: str) -> str:
    r = subprocess.run(["secret-tool", "lookup", "service", "tokend", "username", name], capture_output=True, text=True)
    return r.stdout.strip()


def test_keychain_sink_in_a_real_secret_service(
    em: Tenant, postgres: Postgres, write_config, daemon, secret_service: str
) -> None:
    em.emulator.directory.lifetime = 60
    subprocess.run(
        [PRODUCT_PYTHON, "-m", "keyring", "set", "someone-else", "me"], input="theirs\n", text=True, check=True
    )
    cfg = write_config(sp_with_sinks(em, postgres, '["pgpass", "keychain"]'))
    d = daemon(cfg)
    d.wait_ready()
    first = wait_for(lambda: keyring_get("db"), what="token in the keychain")
    assert em.emulator.directory.check(first, GROUP)
    assert secret_tool("db") == first
    wait_for(lambda: d.status()["targets"][0]["sinks"]["keychain"]["state"] == "ok", what="keychain ok")
    # the waits ask secret-tool (a C program, milliseconds) rather than a Python starting keyring each poll
    wait_for(lambda: secret_tool("db") not in ("", first), timeout=60, interval=0.2, what="rotated in the keychain")
    assert keyring_get("db") == secret_tool("db")
    # the target goes: its entry goes; nobody else's entry is touched
    cfg.write_text(sp_with_sinks(em, postgres, '["pgpass"]'))
    wait_for(lambda: secret_tool("db") == "", timeout=20, what="entry of removed target deleted")
    assert (
        keyring_get("someone-else") == ""
        and subprocess.run(
            [PRODUCT_PYTHON, "-m", "keyring", "get", "someone-else", "me"], capture_output=True, text=True
        ).stdout.strip()
        == "theirs"
    )


class WindowsLimitedKeyring:
    """A real keyring backend (the Secret Service one) with Windows Credential Manager's limit enforced: values
    over 2560 bytes of UTF-16 fail as WinError 1783 would. Stands in for Windows, which cannot run here."""

    max_value_chars = keychain.WINDOWS_LIMIT

    def __init__(self) -> None:
        from keyring.backends.SecretService import Keyring  # Linux only: the Secret Service backend

        self.inner = Keyring()
        self.longest = 0

    def set_password(self, service: str, username: str, password: str) -> None:
        size = len(password.encode("utf-16-le"))
        if size > 2560:
            raise OSError(1783, "The stub received bad data")
        self.longest = max(self.longest, size)
        self.inner.set_password(service, username, password)

    def get_password(self, service: str, username: str) -> str | None:
        return self.inner.get_password(service, username)

    def delete_password(self, service: str, username: str) -> None:
        self.inner.delete_password(service, username)


@pytest.mark.parametrize("size", [1024, 2560, 8192])
def test_keychain_chunks_long_tokens_under_windows_limit(size: int, secret_service: str, home: Path) -> None:
    kr = WindowsLimitedKeyring()
    sink = keychain.KeychainSink({}, "owner", kr=kr)
    target = Target("big", "h", 5432, "*", "u", "me", ("keychain",))
    value = ("eyJ" + "x" * size)[:size]
    sink.sync([Entry(target, Token(value, 2e9, 0))])
    assert keychain.read("big", kr) == value
    assert kr.longest <= 2560
    chunks = 0 if size <= keychain.WINDOWS_LIMIT else -(-size // keychain.WINDOWS_LIMIT)
    assert (kr.get_password("tokend", "big#1") is not None) == (chunks > 0)
    sink.sync([Entry(target, Token("short", 2e9, 0))])  # fewer chunks now: the extra ones go
    assert keychain.read("big", kr) == "short" and kr.get_password("tokend", "big#1") is None
    sink.sync([])
    assert kr.get_password("tokend", "big") is None


def test_no_keychain_is_a_sink_state_and_others_carry_on(em: Tenant, postgres: Postgres, write_config, daemon) -> None:
    cfg = write_config(sp_with_sinks(em, postgres, '["pgpass", "keychain"]'))
    d = daemon(cfg)
    d.wait_ready()
    wait_for(lambda: d.status()["targets"][0]["sinks"]["keychain"]["state"] == "failed", what="keychain failed")
    sinks = d.status()["targets"][0]["sinks"]
    assert (
        "no usable keychain" in sinks["keychain"]["last_error"] and "Secret Service" in sinks["keychain"]["last_error"]
    )
    wait_for(lambda: d.status()["targets"][0]["sinks"]["pgpass"]["state"] == "ok", what="pgpass ok")
    assert psql(postgres.port).stdout.strip() == GROUP


def test_token_falls_back_to_the_keychain_without_a_daemon(
    em: Tenant, postgres: Postgres, write_config, daemon, secret_service: str
) -> None:
    cfg = write_config(sp_with_sinks(em, postgres, '["pgpass", "keychain"]'))
    d = daemon(cfg)
    d.wait_ready()
    kept = wait_for(lambda: keyring_get("db"), what="token in the keychain")
    assert d.stop() == 0
    before = len(em.emulator.token_requests())
    r = tokend("token", "--config", str(cfg))
    assert r.returncode == 0 and r.stdout.strip() == kept
    assert len(em.emulator.token_requests()) == before  # no new acquisition


def test_pg_service_section_logs_in_and_keeps_user_sections(
    em: Tenant, postgres: Postgres, write_config, daemon, home: Path
) -> None:
    service_file = home / ".pg_service.conf"
    mine = "# my services\r\n[legacy]\r\nhost=old.example\r\nport=5432\r\n\r\n[db]\r\nhost=shadowed.example\r\n"
    service_file.write_bytes(mine.encode())
    cfg = write_config(sp_with_sinks(em, postgres, '["pgpass", "pg_service"]'))
    d = daemon(cfg)
    d.wait_ready()
    wait_for(lambda: d.status()["targets"][0]["sinks"]["pg_service"]["state"] == "ok", what="pg_service written")
    text = service_file.read_bytes()
    assert text.endswith(mine.encode())
    assert b"eyJ" not in text  # never the token
    r = subprocess.run(
        ["psql", "service=db", "-w", "-Atc", "select current_user, current_database()"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{GROUP}|appdb"


# Azure Data Studio's settings.json (microsoft/azuredatastudio src/sql/platform/connection/common/
# connectionConfig.ts reads and writes "datasource.connections": profiles with "options" — host, user, … as the
# provider's connection options, from microsoft/azuredatastudio-postgresql package.json contributes.connectionProvider
# — "providerName" "PGSQL", "id", "groupId" of "datasource.connectionGroups", and "savePassword")
ADS_SETTINGS = """// Azure Data Studio user settings
{
    "workbench.colorTheme": "Default Dark Azure Data Studio", // my theme
    /* connections I made by hand */
    "datasource.connections": [
        {"options": {"host": "mine.example", "user": "me"}, "providerName": "PGSQL", "id": "mine-1",
         "groupId": "C777F06B-202E-4480-B475-FA416154D458", "savePassword": false}
    ],
    "editor.fontSize": 13,
}
"""


class RecordingStore:
    """Stands in for the macOS Keychain / Windows Credential Manager forms, which cannot run here: same interface."""

    name = "stand-in"

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete(self, credential_id: str) -> bool:
        self.deleted.append(credential_id)
        return True


def test_azure_data_studio_profiles(
    em: Tenant, postgres: Postgres, write_config, home: Path, secret_service: str
) -> None:
    import secretstorage  # Linux only (D-Bus): keytar's saved-password form

    cfg = write_config(sp_with_sinks(em, postgres, '["pgpass"]'))
    target = Target("db", "127.0.0.1", postgres.port, "appdb", GROUP, "sp", ("pgpass",))
    cred_id = ads.credential_id(target)
    assert cred_id == (
        "Microsoft.SqlTools|itemtype:Profile|id:providerName:PGSQL|applicationName:azdata|"
        f"authenticationType:SqlLogin|dbname:appdb|host:127.0.0.1|hostaddr:|port:{postgres.port}|"
        f"user:{GROUP}"
    )
    user = home / ".config" / "azuredatastudio" / "User"
    (user / "globalStorage").mkdir(parents=True)
    (user / "settings.json").write_text(ADS_SETTINGS)
    # stale saved passwords in both Linux forms: keytar's Secret Service item and ADS 1.48+'s state.vscdb row
    with contextlib.closing(secretstorage.dbus_init()) as conn:
        secretstorage.get_default_collection(conn).create_item("stale", {"service": cred_id, "account": ""}, b"old")
    with contextlib.closing(sqlite3.connect(user / "globalStorage" / "state.vscdb")) as db, db:
        db.execute("CREATE TABLE ItemTable (key TEXT UNIQUE ON CONFLICT REPLACE, value BLOB)")
        db.execute(
            "INSERT INTO ItemTable VALUES (?, ?), ('other.setting', 'x')",
            (f'secret://{{"extensionId":"","key":"{cred_id}"}}', b"v10encrypted"),
        )

    r = tokend("clients", "ads", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    text = (user / "settings.json").read_text()
    for kept in (
        "// Azure Data Studio user settings",
        "// my theme",
        "/* connections I made by hand */",
        '"editor.fontSize": 13',
    ):
        assert kept in text
    data = jsonc.loads(text)
    ids = [c["id"] for c in data["datasource.connections"]]
    assert ids == ["mine-1", f"tokend-{paths.config_id(cfg)}-db"]
    ours = data["datasource.connections"][1]
    assert ours["providerName"] == "PGSQL" and ours["savePassword"] is True and ours["options"]["password"] == ""
    assert ours["options"]["user"] == GROUP and ours["options"]["sslmode"] == "require"
    assert {g["name"] for g in data["datasource.connectionGroups"]} == {"ROOT", "tokend"}
    assert "Secret Service" in r.stdout and "state.vscdb" in r.stdout
    with contextlib.closing(secretstorage.dbus_init()) as conn:
        assert not list(secretstorage.get_default_collection(conn).search_items({"service": cred_id}))
    with contextlib.closing(sqlite3.connect(user / "globalStorage" / "state.vscdb")) as db:
        assert [k for (k,) in db.execute("SELECT key FROM ItemTable")] == ["other.setting"]
    # again: idempotent, nothing duplicated; and the other OS forms get the same id through the same interface
    stand_in = RecordingStore()
    ads.install(paths.config_id(cfg), [target], stores=[stand_in])
    assert [c["id"] for c in jsonc.loads((user / "settings.json").read_text())["datasource.connections"]] == ids
    assert stand_in.deleted == [cred_id]


# What pgAdmin's `setup.py load-servers` reads (pgadmin-org/pgadmin4 web/setup.py load_servers, which calls
# web/pgadmin/utils/__init__.py load_database_servers): these per server, and one of Host, HostAddr or Service.
PGADMIN_REQUIRED = {"Name": str, "Group": str, "Port": int, "Username": str, "MaintenanceDB": str}


def test_pgadmin_servers_json_and_password_command(
    em: Tenant, postgres: Postgres, write_config, daemon, tmp_path: Path
) -> None:
    cfg = write_config(sp_with_sinks(em, postgres, '["pgpass"]'))
    d = daemon(cfg)
    d.wait_ready()
    r = tokend("clients", "pgadmin", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    servers = json.loads(r.stdout)["Servers"]
    [(server_key, server)] = servers.items()
    assert "_" not in server_key  # pgAdmin's import dialog cuts keys at "_"
    for key, kind in PGADMIN_REQUIRED.items():
        assert isinstance(server[key], kind), key
    assert server["Host"] == "127.0.0.1" and server["SSLMode"] == "require"
    assert 0 < server["PasswordExecExpiration"] < 240
    command = shlex.split(server["PasswordExecCommand"])
    assert Path(command[0]).is_absolute()
    password = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    login = subprocess.run(
        [
            "psql",
            f"host=127.0.0.1 port={postgres.port} dbname=appdb user='{GROUP}' sslmode=require",
            "-Atc",
            "select current_user",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": password},
    )
    assert login.stdout.strip() == GROUP, login.stderr
    out = tmp_path / "servers.json"
    assert tokend("clients", "pgadmin", "--output", str(out), "--config", str(cfg)).returncode == 0
    assert json.loads(out.read_text())["Servers"][server_key]["Name"] == "db"


def test_drivers_with_their_own_pgpass_readers(
    em: Tenant, postgres: Postgres, write_config, pgpass: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import asyncpg  # the drivers are test tools, imported only by the test that runs them
    import psycopg
    import psycopg2

    cfg = write_config(sp_with_sinks(em, postgres, '["pgpass"]'))
    assert tokend("run", "--once", "--config", str(cfg)).returncode == 0
    kw = {"host": "127.0.0.1", "port": postgres.port, "user": GROUP}
    with psycopg.connect(dbname="appdb", sslmode="require", **kw) as c:  # its bundled libpq
        assert c.execute("select current_user").fetchone() == (GROUP,)
    c2 = psycopg2.connect(dbname="appdb", sslmode="require", **kw)  # its own libpq build
    with contextlib.closing(c2), c2.cursor() as cur:
        cur.execute("select current_user")
        assert cur.fetchone() == (GROUP,)

    async def with_asyncpg() -> str:  # its own pgpass parser, no libpq at all
        conn = await asyncpg.connect(database="appdb", ssl="require", **kw)
        try:
            return await conn.fetchval("select current_user")
        finally:
            await conn.close()

    assert asyncio.run(with_asyncpg()) == GROUP
    # pgjdbc's own parser (42.3+); Java takes the home folder from the passwd entry, not $HOME, so name the file
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    url = f"jdbc:postgresql://127.0.0.1:{postgres.port}/appdb?sslmode=require"
    assert jdbc(url, tmp_path).stdout.strip() == GROUP


def test_clients_lists_what_is_here() -> None:
    r = tokend("clients")
    assert r.returncode == 0
    assert "psql / libpq" in r.stdout and "found: " in r.stdout and "Azure Data Studio" in r.stdout


@pytest.mark.parametrize(
    ("client", "label"), [("vscode", "VS Code"), ("dbeaver", "DBeaver"), ("ads", "Azure Data Studio")]
)
def test_a_client_that_is_not_installed_is_not_set_up_nor_then_found(
    em: Tenant, postgres: Postgres, write_config, home: Path, client: str, label: str
) -> None:
    """Found means its program is on PATH or its own settings folder exists; tokend never makes that folder."""
    program = {"vscode": "code", "dbeaver": "dbeaver", "ads": "azuredatastudio"}[client]
    if shutil.which(program):
        pytest.skip(f"{program} is installed here")
    cfg = write_config(sp_config(em, postgres.port))
    before = sorted(p.relative_to(home) for p in home.rglob("*"))
    r = tokend("clients", client, "--config", str(cfg))
    assert r.returncode == 2 and "is not installed here" in r.stderr and f"`{program}`" in r.stderr, r.stderr
    assert sorted(p.relative_to(home) for p in home.rglob("*")) == before  # not a file, not a folder
    listed = json.loads(tokend("clients", "--json", "--config", str(cfg)).stdout)
    row = next(c for c in listed if c["key"] == client)
    assert label in row["name"] and row["found"] is None and row["set_up"] is False, row
