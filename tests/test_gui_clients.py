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
import xml.etree.ElementTree as ET
from pathlib import Path

import psycopg

from tokend.clients import jsonc
from tokend.emulator.postgres import Postgres

from conftest import GROUP, Tenant, sp_config, tokend, wait_for
from test_proxy import PORT_TCP

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


def config(em: Tenant, pg: Postgres, listen: bool = True) -> str:
    return sp_config(em, pg.port, targets=(
        f'[targets.db]\nhost = "127.0.0.1"\nport = {pg.port}\ndatabase = "appdb"\nuser = "{GROUP}"\n'
        f'identity = "sp"\nsinks = ["pgpass"]\nsslrootcert = "{pg.ca_cert}"\n'
        + (f'listen = ["127.0.0.1:{PORT_TCP}"]\n' if listen else "")))


def ok(*args: str) -> subprocess.CompletedProcess[str]:
    r = tokend(*args)
    assert r.returncode == 0, r.stderr
    return r


def test_vscode_profiles_go_through_the_proxy(em: Tenant, postgres: Postgres, write_config, daemon, home: Path,
                                              tmp_path: Path, monkeypatch) -> None:
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
    for mine in ('"editor.fontSize":   14,   // big', "/* a server I added by hand */",
                 '"id": "mine-1",  "profileName": "local", "server": "localhost", "port": "5432", "user": "me"',
                 '"files.autoSave": "afterDelay",'):
        assert mine in text  # the user's own bytes, spacing and comments as they were
    data = jsonc.loads(text)
    ours = [c for c in data["pgsql.connections"] if c["id"] != "mine-1"]
    assert len(ours) == 1 and [g["name"] for g in data["pgsql.serverGroups"]] == ["tokend"]
    # connect the way the extension reads the profile: server, port, database, user, no password, sslmode
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    p = ours[0]
    assert p["authenticationType"] == "None" and p["password"] == "" and p["user"] == GROUP
    with psycopg.connect(host=p["server"], port=int(p["port"]), dbname=p["database"], user=p["user"],
                         sslmode=p["sslmode"]) as c:
        assert c.execute("select current_user").fetchone() == (GROUP,)
    assert "set up" in ok("clients", "--config", str(cfg)).stdout
    listed = json.loads(ok("clients", "--json", "--config", str(cfg)).stdout)
    assert next(c for c in listed if c["key"] == "vscode")["set_up"] is True
    r = ok("clients", "remove", "vscode", "--config", str(cfg))
    assert "restored" in r.stdout and settings.read_text() == VSCODE_SETTINGS
    assert not settings.with_name("settings.json.tokend-backup").exists()


def test_dbeaver_connections_use_pgpass(em: Tenant, postgres: Postgres, write_config, home: Path, pgpass: Path,
                                        tmp_path: Path) -> None:
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
    # DBeaver's meaning: host/port/database/user from the configuration, the password from pgpass, sslMode
    with psycopg.connect(host=conf["host"], port=int(conf["port"]), dbname=conf["database"], user=conf["user"],
                         sslmode=conf["handlers"]["postgre_ssl"]["properties"]["sslMode"],
                         passfile=str(pgpass)) as c:
        assert c.execute("select current_user").fetchone() == (GROUP,)
    assert credentials.read_bytes() == b"\x8a\x11encrypted-by-dbeaver"  # DBeaver's own credentials untouched
    ok("clients", "remove", "dbeaver", "--config", str(cfg))
    assert sources.read_text() == DBEAVER_SOURCES


def test_dbeaver_remove_after_the_person_changed_the_file_keeps_their_change(em: Tenant, postgres: Postgres,
                                                                             write_config, home: Path) -> None:
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


def test_datagrip_definitions(em: Tenant, postgres: Postgres, write_config, tmp_path: Path, pgpass: Path) -> None:
    cfg = write_config(config(em, postgres, listen=False))
    out = ok("clients", "datagrip", "--config", str(cfg)).stdout
    assert "<!-- .idea/dataSources.xml -->" in out and "<!-- .idea/dataSources.local.xml -->" in out
    project = tmp_path / "project"
    ok("clients", "datagrip", "--output", str(project), "--config", str(cfg))
    shared = ET.parse(project / ".idea" / "dataSources.xml").getroot().find(".//data-source")
    local = ET.parse(project / ".idea" / "dataSources.local.xml").getroot().find(".//data-source")
    assert shared is not None and local is not None and shared.get("uuid") == local.get("uuid")
    assert local.findtext("auth-provider") == "pgpass" and local.findtext("user-name") == GROUP
    url = shared.findtext("jdbc-url") or ""
    assert url == f"jdbc:postgresql://127.0.0.1:{postgres.port}/appdb?sslmode=require"
    ok("run", "--once", "--config", str(cfg))
    host_port, db = url.removeprefix("jdbc:postgresql://").split("?")[0].split("/")
    host, port = host_port.split(":")
    with psycopg.connect(host=host, port=int(port), dbname=db, user=local.findtext("user-name"),
                         sslmode="require", passfile=str(pgpass)) as c:
        assert c.execute("select current_user").fetchone() == (GROUP,)
    r = tokend("clients", "datagrip", "--output", str(project), "--config", str(cfg))
    assert r.returncode == 2 and "already exist" in r.stderr


def pgadmin_fill(command: str, host: str, port: int, user: str) -> str:
    """What pgAdmin 8.14+ does with a PasswordExecCommand: placeholders replaced, %USERNAME% identifier-quoted."""
    quoted = user if user.isidentifier() and user.islower() else '"' + user.replace('"', '""') + '"'
    return command.replace("%HOSTNAME%", host).replace("%PORT%", str(port)).replace("%USERNAME%", quoted)


def test_pgadmin_shared_password_command(em: Tenant, postgres: Postgres, write_config, daemon) -> None:
    cfg = write_config(config(em, postgres, listen=False))
    d = daemon(cfg)
    d.wait_ready()
    servers = json.loads(ok("clients", "pgadmin", "--shared-command", "--config", str(cfg)).stdout)["Servers"]
    command = servers["1"]["PasswordExecCommand"]
    assert "%HOSTNAME%" in command and "%USERNAME%" in command and servers["1"]["PasswordExecExpiration"] < 240
    filled = pgadmin_fill(command, "127.0.0.1", postgres.port, GROUP)
    token = subprocess.run(filled, shell=True, capture_output=True, text=True, timeout=60)  # as pgAdmin runs it
    assert token.returncode == 0, token.stderr
    login = subprocess.run(["psql", f"host=127.0.0.1 port={postgres.port} dbname=appdb user='{GROUP}' "
                            "sslmode=require", "-w", "-Atc", "select current_user"], capture_output=True,
                           text=True, env={**os.environ, "PGPASSWORD": token.stdout.strip()})
    assert login.stdout.strip() == GROUP, login.stderr
    nobody = subprocess.run(pgadmin_fill(command, "other.example", 5432, GROUP), shell=True, capture_output=True,
                            text=True, timeout=60)
    assert nobody.returncode == 2 and len(nobody.stderr.strip().splitlines()) == 1
    assert "no target" in nobody.stderr and "other.example" in nobody.stderr


def test_jsonc_member_edits_keep_every_other_byte() -> None:
    text = '{\n  // c\n  "a": [ {"x": 1},  /* k */ {"x": 2} ],\n  "b": {"k": 1, "tokend-1": {"y": 2}}\n}\n'
    added = jsonc.edit_members(text, "a", lambda _k, v: v.get("x") == 2, [(None, {"x": 3})])
    assert jsonc.loads(added)["a"] == [{"x": 1}, {"x": 3}] and added.startswith('{\n  // c\n  "a": [ {"x": 1}')
    cut = jsonc.edit_members(text, "b", lambda k, _v: k == "tokend-1", [])
    assert jsonc.loads(cut)["b"] == {"k": 1} and '"a": [ {"x": 1},  /* k */ {"x": 2} ]' in cut
    first = jsonc.edit_members(text, "a", lambda _k, v: v.get("x") == 1, [])
    assert jsonc.loads(first)["a"] == [{"x": 2}]
    made = jsonc.edit_members("{}", "new", lambda _k, _v: False, [("id", {"z": 1})])
    assert jsonc.loads(made) == {"new": {"id": {"z": 1}}}

