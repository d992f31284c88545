"""The plug-in tables: every identity source and every sink kind, with the config keys each takes, and every GUI
client `tokend clients` sets up.

One table per kind of plug-in, and everything that lists them derives from it: config validation, the registries
that build them, ``tokend init``'s choices and help, shell completion, and the README's tables (a test compares).
Module paths are strings, so reading this table imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceKind:
    """One ``source = "…"`` of an ``[identities.NAME]`` table."""

    name: str
    module: str  # the tokend.identities module whose credential(config) builds it
    keys: frozenset[str]  # keys it accepts beyond COMMON_IDENTITY_KEYS
    required: frozenset[str]  # keys it cannot do without
    person: bool  # a person signs in (az login / tokend login), so it can need a person again
    uses: str  # what it signs in with, for people (README, help)


# principal_name: the role name of an app or managed identity for targets with user = "@principal" (tokend.principal)
COMMON_IDENTITY_KEYS = frozenset(
    {"source", "tenant_id", "client_id", "cloud", "authority", "resource", "principal_name"}
)

SOURCES: dict[str, SourceKind] = {
    s.name: s
    for s in (
        SourceKind(
            "azure-cli",
            "tokend.identities.azure_cli",
            frozenset(),
            frozenset(),
            True,
            "your `az login` (`az account get-access-token`)",
        ),
        SourceKind(
            "device-code",
            "tokend.identities.interactive",
            frozenset({"allow_unencrypted_cache", "ca_bundle"}),
            frozenset(),
            True,
            "a one-time `tokend login` with a code shown in your terminal",
        ),
        SourceKind(
            "browser",
            "tokend.identities.interactive",
            frozenset({"allow_unencrypted_cache", "ca_bundle"}),
            frozenset(),
            True,
            "a one-time `tokend login` in your browser",
        ),
        SourceKind(
            "service-principal",
            "tokend.identities.service_principal",
            frozenset({"client_secret_env", "client_secret_file", "client_secret", "certificate_path", "ca_bundle"}),
            frozenset({"tenant_id", "client_id"}),
            False,
            "an app registration's secret (an environment variable, a mounted file or the keychain) or certificate",
        ),
        SourceKind(
            "managed-identity",
            "tokend.identities.managed_identity",
            frozenset({"ca_bundle"}),
            frozenset(),
            False,
            "the Azure host's identity; `client_id` for a user-assigned one",
        ),
        SourceKind(
            "workload-identity",
            "tokend.identities.workload_identity",
            frozenset({"token_file", "ca_bundle"}),
            frozenset(),
            False,
            "a federated token file (Kubernetes workload identity, CI OIDC)",
        ),
        SourceKind(
            "default",
            "tokend.identities.default",
            frozenset({"ca_bundle"}),
            frozenset(),
            False,
            "azure-identity's DefaultAzureCredential, never interactive",
        ),
    )
}


@dataclass(frozen=True)
class SinkKind:
    """One name in a target's ``sinks = […]``, configured under ``[sinks.NAME]``."""

    name: str
    factory: str  # "module:Class" of its Sink
    keys: frozenset[str]  # keys of its [sinks.NAME] table
    serves: str  # who reads it, for people


SINKS: dict[str, SinkKind] = {
    s.name: s
    for s in (
        SinkKind(
            "pgpass",
            "tokend.sinks.pgpass:PgpassSink",
            frozenset({"path"}),
            "libpq (psql, psycopg, pgAdmin, DBeaver, DataGrip), pgjdbc, Npgsql, asyncpg",
        ),
        SinkKind(
            "pg_service",
            "tokend.sinks.pg_service:PgServiceSink",
            frozenset({"path"}),
            "`psql service=TARGET` and every libpq client that takes a service name",
        ),
        SinkKind(
            "keychain",
            "tokend.sinks.keychain:KeychainSink",
            frozenset(),
            "scripts and tools that read the OS keychain (Keychain, Credential Manager, Secret Service)",
        ),
        SinkKind(
            "pgbouncer",
            "tokend.sinks.pgbouncer:PgbouncerSink",
            frozenset({"path", "pidfile"}),
            "PgBouncer's logins to the server: an included [databases] file, then RELOAD",
        ),
    )
}


@dataclass(frozen=True)
class ClientKind:
    """One ``tokend clients NAME``: its module's ``setup(request)`` and ``undo(request)`` return lines for people
    (or the document to print) and never print; ``places()`` lists the folders that show it is installed and
    ``set_up(owner)`` says whether tokend's entries are there (None: cannot tell)."""

    name: str
    module: str  # the tokend.clients module that sets it up
    edits_in_place: bool  # edits the client's own settings file, where the client reads it
    needs_output: bool  # writes only where --output says (a servers.json, a project folder); without it, prints
    serves: str  # how tokend serves it, for people (the README's Clients table)
    label: str  # the client's own name, for `tokend clients`' listing
    program: str  # its executable, looked for on PATH (besides the module's ``places()``)
    how: str  # the one command (or step) that sets it up
    output: str = ""  # what --output names, for people (clients that need one)


CLIENTS: dict[str, ClientKind] = {
    c.name: c
    for c in (
        ClientKind(
            "vscode",
            "tokend.clients.vscode",
            True,
            False,
            'a "No Password" profile for the target\'s local proxy, as the group',
            "VS Code PostgreSQL",
            "code",
            "tokend clients vscode",
        ),
        ClientKind(
            "dbeaver",
            "tokend.clients.dbeaver",
            True,
            False,
            'connections with "PostgreSQL pgpass" authentication',
            "DBeaver",
            "dbeaver",
            "tokend clients dbeaver",
        ),
        ClientKind(
            "datagrip",
            "tokend.clients.datagrip",
            False,
            True,
            "data sources with pgpass authentication",
            "DataGrip",
            "datagrip",
            "tokend clients datagrip --output PROJECT_FOLDER",
            "project folder",
        ),
        ClientKind(
            "pgadmin",
            "tokend.clients.pgadmin",
            False,
            True,
            "servers.json whose password command is `tokend token`",
            "pgAdmin 4",
            "pgadmin4",
            "tokend clients pgadmin --shared-command --output servers.json, then import it",
            "servers.json file",
        ),
        ClientKind(
            "ads",
            "tokend.clients.ads",
            True,
            False,
            "profiles that take the password from pgpass",
            "Azure Data Studio (retired)",
            "azuredatastudio",
            "tokend clients ads",
        ),
    )
}


def person_sources() -> tuple[str, ...]:
    """Sources a person signs in to: the ones `tokend login` / `az login` concern."""
    return tuple(s.name for s in SOURCES.values() if s.person)
