"""Values tests build again and again: targets and sink entries, and the config texts the end-to-end tests write."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokend.config import Target
from tokend.sinks import Entry
from tokend.token import Token

from support.net import PROXY_PORT

if TYPE_CHECKING:
    from tokend.emulator.postgres import Postgres

    from support.tenant import Tenant

RESOURCE = "https://ossrdbms-aad.database.windows.net"
GROUP = "DBA Group"
SECRET = "emulator-secret-value-1"  # the test app's client secret (test data, not a real secret)
SECRET_ENV = "TOKEND_TEST_SECRET"  # the variable the configs below name; the write_config fixture sets it


def target(
    name: str = "db",
    host: str = "h.example",
    port: int = 5432,
    database: str = "*",
    user: str = GROUP,
    identity: str = "me",
    sinks: tuple[str, ...] = ("pgpass",),
) -> Target:
    return Target(name, host, port, database, user, identity, sinks)


def entry(
    name: str = "db",
    value: str = "tok-1",
    host: str = "h.example",
    *,
    port: int = 5432,
    database: str = "*",
    user: str = GROUP,
    sinks: tuple[str, ...] = ("pgpass",),
    expires: float = 2e9,
) -> Entry:
    """A sink entry: the target ``name`` (``target()``'s other fields) holding the token ``value``."""
    return Entry(target(name, host, port, database, user, "me", sinks), Token(value, expires, 0.0))


def sp_identity(t: Tenant, name: str = "sp") -> str:
    """A service-principal identity of the emulator's test app, its secret named by SECRET_ENV."""
    return (
        f'[identities.{name}]\nsource = "service-principal"\ntenant_id = "{t.tenant_id}"\n'
        f'client_id = "{t.app.client_id}"\nclient_secret_env = "{SECRET_ENV}"\nauthority = "{t.url}"\n'
    )


def sp_config(t: Tenant, pg_port: int, *, extra: str = "", targets: str | None = None, source: str = "sp") -> str:
    """A config with a service-principal identity and one target (the group on the test PostgreSQL)."""
    identities = {"sp": sp_identity(t)}
    targets = (
        targets
        if targets is not None
        else (
            f'[targets.db]\nhost = "127.0.0.1"\nport = {pg_port}\ndatabase = "appdb"\nuser = "{GROUP}"\n'
            f'identity = "{source}"\n'
        )
    )
    return identities.get(source, "") + "\n" + targets + "\n" + extra


def device_identity(name: str, em_url: str, tenant_id: str) -> str:
    return (
        f'[identities.{name}]\nsource = "device-code"\ntenant_id = "{tenant_id}"\nauthority = "{em_url}"\n'
        "allow_unencrypted_cache = true\n"
    )


def proxy_config(em: Tenant, pg: Postgres, listen: str | None = None, user: str = GROUP, extra: str = "") -> str:
    """A proxy-only target (no sinks) for the group on ``pg``: a Unix socket on 6432 and loopback TCP on
    PROXY_PORT unless ``listen`` says otherwise; the server verified with its own CA."""
    listen = listen or f'["unix:6432", "127.0.0.1:{PROXY_PORT}"]'
    return sp_config(
        em,
        pg.port,
        targets=(
            f'[targets.db]\nhost = "127.0.0.1"\nport = {pg.port}\ndatabase = "appdb"\nuser = "{user}"\n'
            f'identity = "sp"\nsinks = []\nlisten = {listen}\nsslrootcert = "{pg.ca_cert}"\n{extra}'
        ),
    )
