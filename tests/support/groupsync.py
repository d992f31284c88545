"""A server with Azure's group sync for a test: a database with the emulator's pgaadauth stand-in, an Entra group
of unique name whose members are the test app (an Entra administrator) and a person (dana), a schema ``reports``
with one table, and a config whose ``admin`` target logs in as the app. Roles are the cluster's, so everything made
is dropped after."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tokend.emulator.directory import User
from tokend.emulator.postgres import Postgres

from support.builders import RESOURCE, device_identity, sp_identity
from support.product import tokend
from support.tenant import Tenant

SETTING = "pgaadauth.enable_group_sync"


@dataclass
class Server:
    em: Tenant
    pg: Postgres
    db: str
    group: str  # the Entra group's display name; the app and dana are members
    dana: User
    cfg: Path  # identities: sp (the app) and me (a device-code sign-in); targets: admin (the app), plus the caller's
    base: str  # the config's text before ``configure``

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        return tokend("admin", *args, "--target", "admin", "--config", str(self.cfg))

    def login(self, user: str, token: str | None, sql: str = "select current_user") -> subprocess.CompletedProcess[str]:
        """Real psql over TLS with ``token`` as the password (in the environment, never argv); None: no password,
        so libpq looks in pgpass."""
        env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
        env["PGUSER"] = user
        if token is not None:
            env["PGPASSWORD"] = token
        return subprocess.run(
            ["psql", f"host=127.0.0.1 port={self.pg.port} dbname={self.db} sslmode=require", "-w", "-Atc", sql],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )

    def token(self, user: User) -> str:
        return self.em.emulator.directory.mint(RESOURCE, user=user)[0]

    def roles(self) -> set[str]:
        return set(self.pg.sql("SELECT rolname FROM pg_roles").split("\n")) - {""}

    def target(self, name: str, user: str, identity: str = "me", extra: str = "") -> str:
        """A ``[targets.NAME]`` table for this server's database."""
        return (
            f'[targets.{name}]\nhost = "127.0.0.1"\nport = {self.pg.port}\ndatabase = "{self.db}"\n'
            f'user = "{user}"\nidentity = "{identity}"\nsslrootcert = "{self.pg.ca_cert}"\n{extra}'
        )

    def configure(self, *tables: str) -> Path:
        """The config with these ``target()`` tables added after the admin target."""
        self.cfg.write_text(self.base + "".join(tables))
        return self.cfg

    def add_group(self, *extra: str) -> None:
        """``tokend admin add-group`` for the group: read rights on ``reports``."""
        r = self.admin("add-group", self.group, "--schema", "reports", "--apply", *extra)
        assert r.returncode == 0, r.stderr


@contextlib.contextmanager
def server(em: Tenant, postgres: Postgres, write_config: Callable[[str], Path], tmp_path: Path) -> Iterator[Server]:
    """The server for one test (``Server.configure`` adds its targets)."""
    n = abs(hash(tmp_path)) % 100000
    db, group = f"syncdb{n}", f"Sync Team {n}"
    d = em.emulator.directory
    dana = d.add_user(f"dana{n}@contoso.example", "Dana Example")
    d.add_group(group, em.app.oid, dana.oid)
    before = set(postgres.sql("SELECT rolname FROM pg_roles").split("\n"))
    postgres.sql(f'CREATE DATABASE "{db}" OWNER "{em.app.name}"')
    postgres.sql(f'ALTER ROLE "{em.app.name}" CREATEROLE')
    postgres.install_pgaadauth(db, d, admins=[em.app.name])
    postgres.sql(
        f'SET ROLE "{em.app.name}"; CREATE SCHEMA reports; CREATE TABLE reports.t (x int); INSERT INTO reports.t '
        "VALUES (1)",
        db,
    )
    admin = (
        f'[targets.admin]\nhost = "127.0.0.1"\nport = {postgres.port}\ndatabase = "{db}"\nidentity = "sp"\n'
        f'user = "{em.app.name}"\nsinks = []\nsslrootcert = "{postgres.ca_cert}"\n'
    )
    text = sp_identity(em) + device_identity("me", em.url, em.tenant_id) + admin
    try:
        yield Server(em, postgres, db, group, dana, write_config(text), text)
    finally:
        postgres.set_parameter(SETTING, "off")
        postgres.forget_pgaadauth(db)
        postgres.sql(f'DROP DATABASE "{db}" WITH (FORCE)')
        for role in set(postgres.sql("SELECT rolname FROM pg_roles").split("\n")) - before:
            postgres.sql('DROP ROLE "' + role.replace('"', '""') + '"')
        with d.lock:
            for name in [g.name for g in d.groups.values() if g.name == group or group in g.former_names]:
                del d.groups[name]
            d.users = {k: u for k, u in d.users.items() if not k.endswith(f"{n}@contoso.example")}
        d.changed()
