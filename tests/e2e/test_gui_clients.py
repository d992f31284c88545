"""The GUI clients of 2026, set up by one command each: VS Code's PostgreSQL extension (through the local proxy),
DBeaver and DataGrip (pgpass authentication), pgAdmin (one shared password command). Each client's file is a
realistic fixture with other entries, comments and odd spacing; only tokend's entries change, `clients remove`
restores the original bytes, and the profiles — read by a small script applying the client's own field meanings —
log in as the group through libpq (psycopg)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import psycopg
import pytest

from tokend.clients import jsonc
from tokend.emulator.postgres import Postgres

from support.builders import GROUP, sp_config
from support.clients import psql_at
from support.net import PROXY_PORT
from support.product import tokend
from support.tenant import Tenant
from support.waits import wait_for

# VS Code user settings with a hand-added profile of the PostgreSQL extension's. Its source is not public: the field
# meanings come from the profiles it writes and microsoft/vscode-pgsql CHANGELOG.md ("pgsql.connections" profiles
# whose "id" is a UUID it makes, one that is not may be dropped at start; "server"/"port"/"database"/"user" what it
# connects to; "authenticationType" "None" with "password" "" is "No Password", 1.7.0+; "groupId" an entry of
# "pgsql.serverGroups")
VSCODE_SETTINGS = """// my VS Code settings
{
  "editor.fontSize":   14,   // big
  "pgsql.connections": [
    /* a server I added by hand */
    {
      "id": "mine-1",  "profileName": "local", "server": "localhost", "port": "5432", "user": "me"
    }
  ],
  "files.autoSave": "afterDelay",
}
"""

# DBeaver's workspace data-sources.json, as dbeaver/dbeaver plugins/org.jkiss.dbeaver.registry/.../registry/
# DataSourceSerializerModern.java reads and writes it (keys in RegistryConstants.java): "connections" by id, each
# with "folder" (a key of "folders"), "save-password" (ATTR_SAVE_PASSWORD; the pgpass page,
# plugins/org.jkiss.dbeaver.ext.postgresql.ui/.../PostgreAuthPgPassConfigurator.java saveSettings, always sets it
# true) and "configuration" whose "auth-model" picks the authentication ("postgres_pgpass":
# plugins/org.jkiss.dbeaver.ext.postgresql/.../model/AuthModelPgPass.java reads the password from PGPASSFILE, else
# ~/.pgpass under Java's user.home, at every connect)
DBEAVER_SOURCES = """{
\t"folders": {
\t\t"Prod": {}
\t},
\t"connections": {
\t\t"postgres-jdbc-18c1a2b3c4d-5e6f": {
\t\t\t"provider": "postgresql",
\t\t\t"driver": "postgres-jdbc",
\t\t\t"name": "reporting",
\t\t\t"folder": "Prod",
\t\t\t"configuration": {"host": "reports.example", "port": "5432", "database": "reports", "auth-model": "native"}
\t\t}
\t},
\t"connection-types": {"prod": {"name": "Production", "color": "247,159,129", "auto-commit": false}}
}
"""

# a DataGrip project of one's own (DataGrip 2024.3's format): a data source with its introspection settings. DataGrip's
# source is not public: the field meanings come from the files it writes and JetBrains' DataGrip documentation
# ("Data sources and drivers": dataSources.xml is shared, with the JDBC URL's host, port, database and sslmode;
# dataSources.local.xml is per user, with the user name and the authentication, "pgpass" for PostgreSQL; the two
# are tied by the data source's uuid)
DATAGRIP_SHARED = """<?xml version="1.0" encoding="UTF-8"?>
<project version="4">
  <component name="DataSourceManagerImpl" format="xml" multifile-model="true">
    <data-source source="LOCAL" name="postgres@localhost" uuid="0b1f8a5e-2a8c-4b8e-9c1e-6d1f0a3b2c4d">
      <driver-ref>postgresql</driver-ref>
      <synchronize>true</synchronize>
      <jdbc-driver>org.postgresql.Driver</jdbc-driver>
      <jdbc-url>jdbc:postgresql://localhost:5432/postgres</jdbc-url>
      <working-dir>$ProjectFileDir$</working-dir>
    </data-source>
  </component>
</project>
"""
DATAGRIP_LOCAL = """<?xml version="1.0" encoding="UTF-8"?>
<project version="4">
  <component name="dataSourceStorageLocal" created-in="DB-243.21565.122">
    <data-source name="postgres@localhost" uuid="0b1f8a5e-2a8c-4b8e-9c1e-6d1f0a3b2c4d">
      <database-info product="PostgreSQL" version="16.4" jdbc-version="4.2" driver-name="PostgreSQL JDBC Driver" \
driver-version="42.7.3" dbms="POSTGRES" exact-version="16.4" exact-driver-version="42.7">
        <identifier-quote-string>&quot;</identifier-quote-string>
      </database-info>
      <case-sensitivity plain-identifiers="lower" quoted-identifiers="exact" />
      <secret-storage>master_key</secret-storage>
      <user-name>postgres</user-name>
      <schema-mapping>
        <introspection-scope>
          <node kind="database" qname="@">
            <node kind="schema" qname="@" />
          </node>
        </introspection-scope>
      </schema-mapping>
    </data-source>
  </component>
</project>
"""

# what pgAdmin's Tools → Import/Export Servers writes (pgadmin-org/pgadmin4 web/pgadmin/utils/__init__.py,
# dump_database_servers: json.dump, indent 4; "Servers" by key, each with Name, Group, Host, Port, MaintenanceDB,
# Username; load_database_servers reads the same fields back, PasswordExecCommand/PasswordExecExpiration included)
PGADMIN_EXPORT = """{
    "Servers": {
        "1": {
            "Name": "local",
            "Group": "Servers",
            "Host": "localhost",
            "Port": 5432,
            "MaintenanceDB": "postgres",
            "Username": "postgres",
            "KerberosAuthentication": false,
            "ConnectionParameters": {
                "sslmode": "prefer",
                "connect_timeout": 10
            }
        }
    }
}"""


def config(em: Tenant, pg: Postgres, listen: bool = True) -> str:
    return sp_config(
        em,
        pg.port,
        targets=(
            f'[targets.db]\nhost = "127.0.0.1"\nport = {pg.port}\ndatabase = "appdb"\nuser = "{GROUP}"\n'
            f'identity = "sp"\nsinks = ["pgpass"]\nsslrootcert = "{pg.ca_cert}"\n'
            + (f'listen = ["127.0.0.1:{PROXY_PORT}"]\n' if listen else "")
        ),
    )


def ok(*args: str) -> subprocess.CompletedProcess[str]:
    r = tokend(*args)
    assert r.returncode == 0, r.stderr
    return r


def test_vscode_profiles_go_through_the_proxy(
    em: Tenant, postgres: Postgres, write_config, daemon, home: Path, tmp_path: Path, monkeypatch
) -> None:
    settings = home / ".config" / "Code" / "User" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(VSCODE_SETTINGS)
    cfg = write_config(config(em, postgres, listen=False))
    r = tokend("clients", "vscode", "--config", str(cfg))
    assert r.returncode == 2 and 'listen = ["127.0.0.1:6432"]' in r.stderr and "[targets.db]" in r.stderr
    assert settings.read_text() == VSCODE_SETTINGS  # nothing written
    cfg.write_text(config(em, postgres))
    d = daemon(cfg)
    d.wait_ready()
    wait_for(lambda: d.status()["targets"][0]["proxy"], what="proxy")
    ok("clients", "vscode", "--config", str(cfg))
    ok("clients", "vscode", "--config", str(cfg))  # again: updated in place, not duplicated
    text = settings.read_text()
    for mine in (
        '"editor.fontSize":   14,   // big',
        "/* a server I added by hand */",
        '"id": "mine-1",  "profileName": "local", "server": "localhost", "port": "5432", "user": "me"',
        '"files.autoSave": "afterDelay",',
    ):
        assert mine in text  # the user's own bytes, spacing and comments as they were
    data = jsonc.loads(text)
    ours = [c for c in data["pgsql.connections"] if c["id"] != "mine-1"]
    assert len(ours) == 1 and [g["name"] for g in data["pgsql.serverGroups"]] == ["tokend"]
    # connect the way the extension reads the profile: server, port, database, user, no password, sslmode
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    p = ours[0]
    assert p["authenticationType"] == "None" and p["password"] == "" and p["user"] == GROUP
    assert uuid.UUID(p["id"]).version == 5 and p["groupId"] == data["pgsql.serverGroups"][0]["id"]
    ok("clients", "vscode", "--config", str(cfg))
    assert [c["id"] for c in jsonc.loads(settings.read_text())["pgsql.connections"]] == ["mine-1", p["id"]]  # stable
    with psycopg.connect(
        host=p["server"], port=int(p["port"]), dbname=p["database"], user=p["user"], sslmode=p["sslmode"]
    ) as c:
        assert c.execute("select current_user").fetchone() == (GROUP,)
    assert "set up" in ok("clients", "--config", str(cfg)).stdout
    listed = json.loads(ok("clients", "--json", "--config", str(cfg)).stdout)
    assert next(c for c in listed if c["key"] == "vscode")["set_up"] is True
    r = ok("clients", "remove", "vscode", "--config", str(cfg))
    assert "restored" in r.stdout and settings.read_text() == VSCODE_SETTINGS
    assert not settings.with_name("settings.json.tokend-backup").exists()


def test_dbeaver_connections_use_pgpass(
    em: Tenant, postgres: Postgres, write_config, home: Path, pgpass: Path, tmp_path: Path
) -> None:
    folder = home / ".local" / "share" / "DBeaverData" / "workspace6" / "General" / ".dbeaver"
    folder.mkdir(parents=True)
    sources = folder / "data-sources.json"
    sources.write_text(DBEAVER_SOURCES)
    credentials = folder / "credentials-config.json"
    credentials.write_bytes(b"\x8a\x11encrypted-by-dbeaver")
    cfg = write_config(config(em, postgres, listen=False))
    ok("run", "--once", "--config", str(cfg))  # the token in pgpass, where DBeaver's pgpass auth reads it
    fake = tmp_path / "dbeaver"  # a process called dbeaver: DBeaver runs, and would overwrite our change
    shutil.copy("/bin/sleep", fake)
    running = subprocess.Popen([str(fake), "60"])
    try:
        wait_for(lambda: Path(f"/proc/{running.pid}/cmdline").read_bytes().startswith(str(fake).encode()))
        r = tokend("clients", "dbeaver", "--config", str(cfg))
        assert r.returncode == 1 and "dbeaver is running: close it" in r.stderr
    finally:
        running.kill()
        running.wait()
    assert sources.read_text() == DBEAVER_SOURCES
    ok("clients", "dbeaver", "--config", str(cfg))
    data = json.loads(sources.read_text())  # DBeaver reads strict JSON
    assert "postgres-jdbc-18c1a2b3c4d-5e6f" in data["connections"] and set(data["folders"]) == {"Prod", "tokend"}
    assert data["connection-types"]["prod"]["name"] == "Production"
    (ours,) = [c for k, c in data["connections"].items() if k.startswith("tokend-")]
    conf = ours["configuration"]
    assert conf["auth-model"] == "postgres_pgpass" and ours["folder"] == "tokend"
    assert ours["save-password"] is True  # false: DBeaver asks for credentials on every connect
    # DBeaver's meaning: host/port/database/user from the configuration, the password from pgpass, sslMode
    with psycopg.connect(
        host=conf["host"],
        port=int(conf["port"]),
        dbname=conf["database"],
        user=conf["user"],
        sslmode=conf["handlers"]["postgre_ssl"]["properties"]["sslMode"],
        passfile=str(pgpass),
    ) as c:
        assert c.execute("select current_user").fetchone() == (GROUP,)
    assert credentials.read_bytes() == b"\x8a\x11encrypted-by-dbeaver"  # DBeaver's own credentials untouched
    ok("clients", "remove", "dbeaver", "--config", str(cfg))
    assert sources.read_text() == DBEAVER_SOURCES


def test_dbeaver_remove_after_the_person_changed_the_file_keeps_their_change(
    em: Tenant, postgres: Postgres, write_config, home: Path
) -> None:
    folder = home / ".local" / "share" / "DBeaverData" / "workspace6" / "General" / ".dbeaver"
    folder.mkdir(parents=True)
    sources = folder / "data-sources.json"
    sources.write_text(DBEAVER_SOURCES)
    cfg = write_config(config(em, postgres, listen=False))
    ok("clients", "dbeaver", "--config", str(cfg))
    sources.write_text(sources.read_text().replace('"name": "reporting"', '"name": "reporting (renamed)"'))
    r = ok("clients", "remove", "dbeaver", "--config", str(cfg))
    assert "your own changes included, kept" in r.stdout
    data = json.loads(sources.read_text())
    assert list(data["connections"]) == ["postgres-jdbc-18c1a2b3c4d-5e6f"] and list(data["folders"]) == ["Prod"]
    assert data["connections"]["postgres-jdbc-18c1a2b3c4d-5e6f"]["name"] == "reporting (renamed)"


def test_datagrip_data_sources_added_to_a_project(
    em: Tenant, postgres: Postgres, write_config, tmp_path: Path, pgpass: Path
) -> None:
    cfg = write_config(config(em, postgres, listen=False))
    out = ok("clients", "datagrip", "--config", str(cfg)).stdout
    assert "<!-- .idea/dataSources.xml -->" in out and "<!-- .idea/dataSources.local.xml -->" in out
    idea = tmp_path / "project" / ".idea"
    idea.mkdir(parents=True)
    files = {idea / "dataSources.xml": DATAGRIP_SHARED, idea / "dataSources.local.xml": DATAGRIP_LOCAL}
    for path, text in files.items():
        path.write_text(text)
    ok("clients", "datagrip", "--output", str(idea.parent), "--config", str(cfg))
    once = {path: path.read_bytes() for path in files}
    ok("clients", "datagrip", "--output", str(idea.parent), "--config", str(cfg))  # again: the same bytes
    assert {path: path.read_bytes() for path in files} == once
    shared_root, local_root = ET.parse(idea / "dataSources.xml").getroot(), ET.parse(idea / "dataSources.local.xml")
    assert [d.get("name") for d in shared_root.iter("data-source")] == ["postgres@localhost", "db (tokend)"]
    mine, ours = local_root.findall(".//data-source")
    assert mine.findtext("user-name") == "postgres" and mine.find("schema-mapping") is not None
    shared = shared_root.findall(".//data-source")[1]
    assert shared.get("uuid") == ours.get("uuid")
    # DataGrip's meaning: the JDBC URL gives host, port, database and SSL mode; the local file the authentication
    assert ours.findtext("auth-provider") == "pgpass" and ours.findtext("user-name") == GROUP
    url = shared.findtext("jdbc-url") or ""
    assert url == f"jdbc:postgresql://127.0.0.1:{postgres.port}/appdb?sslmode=require"
    ok("run", "--once", "--config", str(cfg))
    address, query = url.removeprefix("jdbc:postgresql://").split("?")
    host_port, db = address.split("/")
    host, port = host_port.split(":")
    with psycopg.connect(
        host=host,
        port=int(port),
        dbname=db,
        user=ours.findtext("user-name"),
        sslmode=query.removeprefix("sslmode="),
        passfile=str(pgpass),
    ) as c:
        assert c.execute("select current_user").fetchone() == (GROUP,)
    r = tokend("clients", "remove", "datagrip", "--config", str(cfg))
    assert r.returncode == 2 and "--output" in r.stderr
    ok("clients", "remove", "datagrip", "--output", str(idea.parent), "--config", str(cfg))
    assert {path: path.read_text() for path in files} == files
    fresh = tmp_path / "fresh"  # files tokend made go again with `remove`
    ok("clients", "datagrip", "--output", str(fresh), "--config", str(cfg))
    assert sorted(p.name for p in (fresh / ".idea").iterdir()) == ["dataSources.local.xml", "dataSources.xml"]
    ok("clients", "remove", "datagrip", "--output", str(fresh), "--config", str(cfg))
    assert list((fresh / ".idea").iterdir()) == []


def test_pgadmin_servers_added_to_an_export(em: Tenant, postgres: Postgres, write_config, tmp_path: Path) -> None:
    cfg = write_config(config(em, postgres, listen=False))
    export = tmp_path / "servers.json"
    export.write_text(PGADMIN_EXPORT)
    ok("clients", "pgadmin", "--shared-command", "--output", str(export), "--config", str(cfg))
    servers = json.loads(export.read_text())["Servers"]
    assert servers["1"] == json.loads(PGADMIN_EXPORT)["Servers"]["1"]
    [(key, ours)] = [(k, v) for k, v in servers.items() if k != "1"]
    assert "_" not in key and ours["Group"] == "tokend" and "%HOSTNAME%" in ours["PasswordExecCommand"]
    r = ok("clients", "remove", "pgadmin", "--output", str(export), "--config", str(cfg))
    assert export.read_text() == PGADMIN_EXPORT and "restored" in r.stdout and "pgAdmin keeps" in r.stdout


def pgadmin_fill(command: str, host: str, port: int, user: str) -> str:
    """What pgAdmin 8.14+ does with a PasswordExecCommand: placeholders replaced, %USERNAME% identifier-quoted."""
    quoted = user if user.isidentifier() and user.islower() else '"' + user.replace('"', '""') + '"'
    return command.replace("%HOSTNAME%", host).replace("%PORT%", str(port)).replace("%USERNAME%", quoted)


def test_pgadmin_shared_password_command(em: Tenant, postgres: Postgres, write_config, daemon) -> None:
    cfg = write_config(config(em, postgres, listen=False))
    d = daemon(cfg)
    d.wait_ready()
    servers = json.loads(ok("clients", "pgadmin", "--shared-command", "--config", str(cfg)).stdout)["Servers"]
    [server] = servers.values()
    command = server["PasswordExecCommand"]
    assert "%HOSTNAME%" in command and "%USERNAME%" in command and server["PasswordExecExpiration"] < 240
    filled = pgadmin_fill(command, "127.0.0.1", postgres.port, GROUP)
    token = subprocess.run(filled, shell=True, capture_output=True, text=True, timeout=60)  # as pgAdmin runs it
    assert token.returncode == 0, token.stderr
    login = psql_at(
        f"host=127.0.0.1 port={postgres.port} dbname=appdb user='{GROUP}' sslmode=require",
        env={**os.environ, "PGPASSWORD": token.stdout.strip()},
    )
    assert login.stdout.strip() == GROUP, login.stderr
    nobody = subprocess.run(
        pgadmin_fill(command, "other.example", 5432, GROUP), shell=True, capture_output=True, text=True, timeout=60
    )
    assert nobody.returncode == 2 and len(nobody.stderr.strip().splitlines()) == 1
    assert "no target" in nobody.stderr and "other.example" in nobody.stderr


# -- malformed settings files: one line naming the file, exit 2, nothing written --------------------------------
NESTED = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
HUGE = b'{"x": []' + b" " * (30 << 20) + b"}"  # 30 MB, valid JSON
NOT_UTF8 = b'{"name": "caf\xe9"}'
VSCODE = ".config/Code/User/settings.json"
DBEAVER = ".local/share/DBeaverData/workspace6/General/.dbeaver/data-sources.json"
ADS = ".config/azuredatastudio/User/settings.json"
MALFORMED = [
    ("vscode", VSCODE, NESTED, "nested more than 64 levels"),
    ("vscode", VSCODE, b'{"pgsql.connections": {"a": 1}}', '"pgsql.connections" holds an object'),
    ("vscode", VSCODE, b'[{"pgsql.connections": []}]', "holds a list"),
    ("vscode", VSCODE, HUGE, "over 4 MiB"),
    ("vscode", VSCODE, NOT_UTF8, "not UTF-8"),
    ("vscode", VSCODE, b'{"pgsql.connections": [}', "not valid JSON at line 1, column 24"),
    ("dbeaver", DBEAVER, b'{"connections": []}', '"connections" holds a list'),
    ("dbeaver", DBEAVER, b'{"folders": "tokend"}', '"folders" holds a string'),
    ("dbeaver", DBEAVER, NESTED, "nested more than"),
    ("dbeaver", DBEAVER, b"17", "holds a number"),
    ("ads", ADS, b'{"datasource.connections": "x"}', '"datasource.connections" holds a string'),
    ("ads", ADS, b'{"datasource.connectionGroups": {}}', "holds an object"),
    ("ads", ADS, b'{\n  "unterminated: 1\n}', "a string that never ends at line 2, column 3"),
    ("pgadmin", "exports/servers.json", b'{"Servers": []}', '"Servers" holds a list'),
    ("pgadmin", "exports/servers.json", b"[]", "holds a list"),
    ("pgadmin", "exports/servers.json", NOT_UTF8, "not UTF-8"),
    ("pgadmin", "exports/servers.json", HUGE, "over 4 MiB"),
    ("datagrip", "project/.idea/dataSources.local.xml", b"<project>\xff</project>", "not UTF-8"),
    ("datagrip", "project/.idea/dataSources.xml", HUGE, "over 4 MiB"),
]


@pytest.mark.parametrize(("client", "where", "data", "why"), MALFORMED, ids=[f"{c}-{w}" for c, _, _, w in MALFORMED])
def test_a_malformed_settings_file_is_one_line_and_nothing_is_written(
    em: Tenant, postgres: Postgres, write_config, home: Path, client: str, where: str, data: bytes, why: str
) -> None:
    cfg = write_config(config(em, postgres))
    path = home / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    output = {"pgadmin": ["--output", str(path)], "datagrip": ["--output", str(home / "project")]}.get(client, [])
    for args in ([client, *output], ["remove", client, *output]):
        r = tokend("clients", *args, "--config", str(cfg))
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"tokend: {path}: ") and why in lines[0], r.stderr
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr
        assert path.read_bytes() == data  # nothing written: not the file, not a backup, not a record
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
        assert not (home / ".local/state/tokend/clients.json").exists()
    if client in ("vscode", "dbeaver", "ads"):  # the listing still lists every client, and names the file
        r = tokend("clients", "--config", str(cfg))
        assert r.returncode == 2 and len(r.stdout.splitlines()) == 7, r.stdout + r.stderr
        assert "unreadable" in r.stdout and r.stderr.strip().splitlines() == lines
        listed = json.loads(tokend("clients", "--json", "--config", str(cfg)).stdout)
        assert [c["problem"] for c in listed if c["problem"]] == [lines[0].removeprefix("tokend: ")]
