"""`tokend admin`: the Entra administrator's half — give an Entra group a role on the server with least privilege,
list who can log in, and say why a group's login would fail.

``add-group`` builds the SQL an administrator otherwise types by hand (the seed write-up's steps): the principal
(Azure's ``pgaadauth_create_principal``, or ``…_with_oid`` with ``--object-id``), CONNECT on the database, USAGE on
each schema, table (and, read-write, sequence) rights, and ``ALTER DEFAULT PRIVILEGES`` so tables the administrator
creates later are covered too. Printed and nothing else by default; with ``--apply`` run in one transaction, logged
in as the target's user (an Entra administrator) with tokend's token. It can run twice: nothing changes the second
time. Identifiers are quoted exactly (Entra names are case-sensitive; spaces and quotes kept); the public schema is
refused unless ``--allow-public`` says so too.

What is printed is meant for psql, so no name can end its quotes or reach psql as a meta-command: names are refused
with a control character (NUL, CR, LF, …: no Entra display name holds one, and a line break is where psql starts
reading a new command); string literals mean the same whatever standard_conforming_strings says
(``pg.connection.literal``); there is no dollar quoting (the principal is made by a ``SELECT … WHERE NOT EXISTS``,
not a ``DO`` block whose closing tag a name could hold); and the command lines ``check`` suggests are quoted for the
shell (``shlex.quote``).
"""

from __future__ import annotations

import shlex
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokend.config import Target
from tokend.errors import TokendError, UsageError
from tokend.pg.connection import Connection, ServerError, ident, literal

KINDS = ("group", "service", "user")  # objectType of pgaadauth_create_principal_with_oid
READ = "SELECT"
WRITE = "SELECT, INSERT, UPDATE, DELETE"
_SYSTEM = "n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'"


def checked(what: str, name: str) -> str:
    """``name`` when it may go into SQL and command lines tokend prints: UsageError (``what`` says which argument)
    when it holds a control character or a line or paragraph separator."""
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        raise UsageError(
            f"{what} {name!r} holds the control character U+{ord(bad):04X}, which no Entra name holds and which would "
            "break the SQL printed for psql: give the name exactly as Entra shows it"
        )
    if not name:
        raise UsageError(f"{what} is empty: give the name exactly as Entra shows it")
    return name


def _names(group: str, database: str, schemas: Sequence[str]) -> None:
    checked("the group", group)
    checked("--database", database)
    for schema in schemas:
        checked("--schema", schema)


def add_group_sql(
    group: str,
    database: str,
    schemas: Sequence[str],
    write: bool = False,
    object_id: str | None = None,
    kind: str = "group",
    allow_public: bool = False,
) -> str:
    """The SQL that gives ``group`` CONNECT on ``database`` and table rights in ``schemas``; stable text."""
    if not schemas:
        raise UsageError("name at least one schema with --schema (the group gets rights there only)")
    if "public" in schemas and not allow_public:
        raise UsageError(
            "the public schema is every role's: granting there reaches every table anyone puts in it; "
            "use a schema of its own, or add --allow-public if you really mean public"
        )
    if kind not in KINDS:
        raise UsageError(f"--type must be one of: {', '.join(KINDS)}")
    _names(group, database, schemas)
    if object_id is not None:
        try:
            uuid.UUID(object_id)
        except ValueError:
            raise UsageError(
                f"--object-id {object_id!r} is not an Entra object id (a GUID such as "
                "6a5c9f5e-3b1d-4c59-9c3e-1f2e3d4c5b6a): copy it from the group's Overview page"
            ) from None
    role, name = ident(group), literal(group)
    create = (
        f"pgaadauth_create_principal_with_oid({name}, {literal(object_id)}, {literal(kind)}, false, false)"
        if object_id
        else f"pgaadauth_create_principal({name}, false, false)"
    )
    rights = WRITE if write else READ
    lines = [
        f"-- tokend admin add-group: {'read-write' if write else 'read-only'} access for the Entra {kind} "
        f"{role} to database {ident(database)}, schemas {', '.join(ident(s) for s in schemas)}",
        "BEGIN;",
        f"SELECT {create}",
        f"  WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {name});",
        f"GRANT CONNECT ON DATABASE {ident(database)} TO {role};",
    ]
    for s in schemas:
        schema = ident(s)
        lines += [
            f"GRANT USAGE ON SCHEMA {schema} TO {role};",
            f"GRANT {rights} ON ALL TABLES IN SCHEMA {schema} TO {role};",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT {rights} ON TABLES TO {role};",
        ]
        if write:
            lines += [
                f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role};",
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role};",
            ]
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


def explain(e: ServerError, target: Target) -> TokendError:
    """A server's refusal as one line with the fix."""
    if e.code == "42883" and "pgaadauth" in str(e):
        return TokendError(
            f"{target.host} has no pgaadauth functions: it is not Azure Database for PostgreSQL "
            "Flexible Server with Microsoft Entra authentication enabled (Security → Authentication)"
        )
    if e.code == "42501" or "permission denied" in str(e):
        return TokendError(
            f"{target.host} refused ({e}): log in as an Entra administrator of the server (Security → "
            "Authentication → Microsoft Entra admins); a member of an admin group cannot create "
            f"principals: use an individual administrator for target {target.name}"
        )
    return TokendError(f"{target.host}: {e} (SQLSTATE {e.code})")


def apply(conn: Connection, sql: str) -> list[str]:
    try:
        results = conn.query(sql)
    except ServerError as e:
        conn.query("ROLLBACK")
        raise explain(e, conn.target) from None
    return [r.command for r in results if r.command]


@dataclass(frozen=True)
class Principal:
    role: str
    type: str
    object_id: str
    admin: bool
    can_login: bool
    member_of: list[str]
    schemas: dict[str, str]  # schema → "USAGE; SELECT 3/3, INSERT 0/3, …"


def principals(conn: Connection) -> list[Principal]:
    try:
        listed = conn.rows(
            "SELECT * FROM pgaadauth_list_principals(false) UNION ALL SELECT * FROM pgaadauth_list_principals(true)"
        )
    except ServerError as e:
        raise explain(e, conn.target) from None
    out = []
    for row in listed:
        role, kind, oid, _tenant, _mfa, admin = (row + [None] * 6)[:6]
        assert role is not None
        facts = conn.rows(
            f"SELECT r.rolcanlogin, coalesce((SELECT string_agg(b.rolname, ', ' ORDER BY b.rolname) FROM "
            f"pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid), '') "
            f"FROM pg_catalog.pg_roles r WHERE r.rolname = {literal(role)}"
        )
        can_login, member_of = facts[0] if facts else ["f", ""]
        out.append(
            Principal(
                role,
                kind or "?",
                oid or "",
                admin in ("t", "true", "1"),
                can_login == "t",
                [m for m in (member_of or "").split(", ") if m],
                _schemas(conn, role),
            )
        )
    return out


def _schemas(conn: Connection, role: str) -> dict[str, str]:
    r = literal(role)
    rows = conn.rows(
        f"SELECT n.nspname, has_schema_privilege({r}, n.oid, 'USAGE'), count(c.oid), "
        + ", ".join(
            f"count(c.oid) FILTER (WHERE has_table_privilege({r}, c.oid, '{p}'))"
            for p in ("SELECT", "INSERT", "UPDATE", "DELETE")
        )
        + f" FROM pg_catalog.pg_namespace n LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND "
        f"c.relkind IN ('r', 'p', 'v', 'm', 'f') WHERE {_SYSTEM} GROUP BY n.nspname, n.oid ORDER BY n.nspname"
    )
    out = {}
    for name, usage, total, *counts in rows:
        rights = [
            f"{p} {n}/{total}"
            for p, n in zip(("SELECT", "INSERT", "UPDATE", "DELETE"), counts, strict=True)
            if n not in (None, "0")
        ]
        if usage == "t" or rights:
            out[str(name)] = "; ".join(["USAGE" if usage == "t" else "no USAGE", *rights])
    return out


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""


def check(conn: Connection, group: str, database: str, schemas: Sequence[str], fix_command: str) -> list[Finding]:
    """Why a login as ``group`` would fail (or not), in the order a login meets them."""
    _names(group, database, schemas)
    g = literal(group)
    found = conn.rows(f"SELECT rolname, rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = {g}")
    if not found:
        other = conn.rows(f"SELECT rolname FROM pg_catalog.pg_roles WHERE lower(rolname) = lower({g})")
        if other:
            return [
                Finding(
                    False,
                    f"no role {group!r}, but {other[0][0]!r}: the name's case differs (Entra "
                    "display names are case-sensitive)",
                    f"log in as user {other[0][0]!r}, or create the role with the group's exact name: {fix_command}",
                )
            ]
        return [Finding(False, f"no role {group!r} on the server", fix_command)]
    out = [Finding(True, f"role {group!r} exists")]
    if found[0][1] != "t":
        out.append(Finding(False, f"role {group!r} cannot log in", f"ALTER ROLE {ident(group)} LOGIN;"))
    try:
        entra = conn.rows(
            f"SELECT 1 FROM pgaadauth_list_principals(false) WHERE rolname = {g} UNION ALL "
            f"SELECT 1 FROM pgaadauth_list_principals(true) WHERE rolname = {g}"
        )
    except ServerError as e:
        raise explain(e, conn.target) from None
    if not entra:
        out.append(
            Finding(
                False,
                f"role {group!r} is not an Entra principal (made with CREATE ROLE): tokens never log in as it",
                f"DROP ROLE {ident(group)}; then {fix_command}",
            )
        )
    if conn.rows(f"SELECT has_database_privilege({g}, {literal(database)}, 'CONNECT')")[0][0] != "t":
        out.append(
            Finding(
                False,
                f"no CONNECT on database {database!r}",
                f"GRANT CONNECT ON DATABASE {ident(database)} TO {ident(group)};",
            )
        )
    else:
        out.append(Finding(True, f"CONNECT on database {database!r}"))
    for s in schemas:
        usage = conn.rows(f"SELECT has_schema_privilege({g}, {literal(s)}, 'USAGE')")[0][0] == "t"
        if not usage:
            out.append(
                Finding(False, f"no USAGE on schema {s!r}", f"GRANT USAGE ON SCHEMA {ident(s)} TO {ident(group)};")
            )
            continue
        tables = conn.rows(
            f"SELECT count(*), count(*) FILTER (WHERE has_table_privilege({g}, c.oid, 'SELECT')) "
            f"FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE n.nspname = {literal(s)} AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
        )[0]
        if tables[0] != "0" and tables[1] == "0":
            out.append(
                Finding(
                    False,
                    f"USAGE on schema {s!r} but no rights on any of its {tables[0]} tables",
                    f"GRANT SELECT ON ALL TABLES IN SCHEMA {ident(s)} TO {ident(group)};",
                )
            )
        else:
            out.append(Finding(True, f"schema {s!r}: USAGE, SELECT on {tables[1]}/{tables[0]} tables"))
    return out


def connect(target: Target, token: str, database: str | None) -> Connection:
    try:
        return Connection(target, token, database)
    except ServerError as e:
        raise explain(e, target) from None


def render_principals(found: Sequence[Principal], as_json: bool) -> str:
    if as_json:
        import json

        return json.dumps([asdict(p) for p in found], indent=2)
    from tokend.status import table

    rows = [
        [
            p.role,
            p.type + (" (admin)" if p.admin else ""),
            "yes" if p.can_login else "NO",
            ", ".join(p.member_of) or "-",
            " | ".join(f"{s}: {r}" for s, r in p.schemas.items()) or "-",
        ]
        for p in found
    ]
    return "\n".join(table(rows, ["ROLE", "TYPE", "LOGIN", "MEMBER OF", "RIGHTS PER SCHEMA"]))


def render_findings(found: Sequence[Finding], paint: Callable[[str, str], str]) -> str:
    lines = []
    for f in found:
        lines.append(f"{paint('✓', '32') if f.ok else paint('✗', '31')} {f.what}")
        if f.fix and not f.ok:
            lines.append(f"  fix: {f.fix}")
    return "\n".join(lines)


def as_dict(found: Sequence[Finding]) -> list[dict[str, Any]]:
    return [asdict(f) for f in found]


def command(args: Any, config_path: Path, token_for: Callable[[str], str]) -> int:
    """``tokend admin add-group|list|check`` (``args``: the parsed command line); prints, returns the exit code."""
    import json
    import sys

    from tokend import config, status

    target = config.load(config_path).target(args.target)
    database = args.database or (target.database if target.database != "*" else "postgres")
    if args.action != "list":
        _names(args.group, database, args.schema)  # before anything is printed or a connection made
    if args.action == "add-group":
        sql = add_group_sql(
            args.group, database, args.schema, args.read_write, args.object_id, args.type, args.allow_public
        )
        if not args.apply:
            sys.stdout.write(sql)
            return 0
    with connect(target, token_for(target.name), database) as conn:
        if args.action == "add-group":
            print(f"applied in one transaction: {', '.join(apply(conn, sql))}")
            return 0
        if args.action == "list":
            print(render_principals(principals(conn), args.json))
            return 0
        fix = shlex.join(
            [
                *("tokend", "admin", "add-group", checked("the group", args.group)),
                *("--target", target.name, "--database", checked("--database", database)),
                *(a for sc in args.schema for a in ("--schema", checked("--schema", sc))),
                "--apply",
            ]
        )
        found = check(conn, args.group, database, args.schema, fix)
        print(json.dumps(as_dict(found), indent=2) if args.json else render_findings(found, status.painter()))
        return 0 if all(f.ok for f in found) else 1
