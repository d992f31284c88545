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

Group sync (Azure, 2026): with the server parameter ``pgaadauth.enable_group_sync`` ON the server makes a role for
every member of each group principal (a user's UPN, a service principal's or managed identity's display name) every
30 minutes, or at once with ``pgaadauth_sync_roles_for_group_members()`` (``sync``). Members then log in as
themselves; ``add-group --members-only`` makes the group role NOLOGIN so they must (refused while sync is off: nobody
could log in). ``principals`` says which memberships came from a sync: those granted by the owner of the sync
function (Azure's own superuser), not by an administrator.
"""

from __future__ import annotations

import json
import shlex
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokend import advice, config, principal
from tokend.config import Target
from tokend.errors import TokendError, UsageError
from tokend.pg.connection import Connection, ServerError, ident, literal
from tokend.status import table
from tokend.token import display_claims

KINDS = ("group", "service", "user")  # objectType of pgaadauth_create_principal_with_oid
SYNC_SETTING = "pgaadauth.enable_group_sync"
SYNC_FUNCTION = "pgaadauth_sync_roles_for_group_members"
SYNC_ON = ("on", "true", "yes", "1")
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
    members_only: bool = False,
) -> str:
    """The SQL that gives ``group`` CONNECT on ``database`` and table rights in ``schemas``; stable text. With
    ``members_only`` the group role is also made NOLOGIN: with group sync on, members log in as themselves (their
    own roles get the group's rights through membership) and nobody logs in as the group."""
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
    if members_only:
        lines += [
            "-- group sync is on: members log in as themselves (their UPN or display name), not as the group",
            f"ALTER ROLE {role} NOLOGIN;",
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
    if e.code == "28P01" or advice.classify_login_error(str(e)) is not None:
        fix = advice.for_login_error(
            str(e) if e.code != "28P01" else "password authentication failed", target.name, target.host, target.user
        )
        return TokendError(f"{target.host} refused the login as {target.user!r}: {e}; fix: {fix}")
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
    synced_into: list[str]  # the group roles whose membership a group sync granted (the rest of member_of: by hand)
    group_sync: str | None  # a group principal's: the server's group sync, "on", "off" or "unknown"; else None


@dataclass(frozen=True)
class Listed:
    """One principal as ``pgaadauth_list_principals`` gives it, its columns read by position: Microsoft documents
    the first as ``rolename``, while scripts in the wild filter on ``rolname``; tokend depends on neither."""

    role: str
    type: str
    object_id: str
    admin: bool


def unique_principals(rows: Sequence[Sequence[str | None]]) -> list[Listed]:
    """Each role once, in the order first seen, from the rows of ``pgaadauth_list_principals(false)`` followed by
    those of ``(true)``: ``false`` returns every Entra principal, administrators included (Microsoft's "Manage
    Microsoft Entra roles"), so an administrator comes twice; an administrator only ``true`` lists still counts."""
    seen: dict[str, Listed] = {}
    for row in rows:
        role, kind, oid, _tenant, _mfa, admin = (list(row) + [None] * 6)[:6]
        if role is None:
            continue
        is_admin = str(admin).lower() in ("t", "true", "1")
        before = seen.get(role)
        if before is None:
            seen[role] = Listed(role, kind or "?", oid or "", is_admin)
        elif is_admin and not before.admin:
            seen[role] = Listed(before.role, before.type, before.object_id, True)
    return list(seen.values())


def _listed(conn: Connection) -> list[Listed]:
    try:
        return unique_principals(
            conn.rows("SELECT * FROM pgaadauth_list_principals(false)")
            + conn.rows("SELECT * FROM pgaadauth_list_principals(true)")
        )
    except ServerError as e:
        raise explain(e, conn.target) from None


def readable_principals(conn: Connection) -> list[Listed] | None:
    """The server's Entra principals as ``principals`` lists them, or None when this login may not read them
    (Azure may keep ``pgaadauth_list_principals`` to administrators): the caller says it cannot tell."""
    try:
        return unique_principals(
            conn.rows("SELECT * FROM pgaadauth_list_principals(false)")
            + conn.rows("SELECT * FROM pgaadauth_list_principals(true)")
        )
    except ServerError:
        return None


def roles(conn: Connection) -> dict[str, bool]:
    """Every role on the server and whether it may log in (``pg_roles``: readable by every role)."""
    return {str(name): can == "t" for name, can in conn.rows("SELECT rolname, rolcanlogin FROM pg_catalog.pg_roles")}


def sync_state(value: str | None) -> str:
    """``pgaadauth.enable_group_sync`` as the server reports it → "on", "off" or "unknown" (not an Azure server
    that has the parameter)."""
    if value is None or not value.strip():
        return "unknown"
    return "on" if value.strip().lower() in SYNC_ON else "off"


def group_sync(conn: Connection) -> str:
    """The server's group sync setting: "on", "off" or "unknown"."""
    return sync_state(conn.rows(f"SELECT current_setting({literal(SYNC_SETTING)}, true)")[0][0])


def synced_memberships(conn: Connection) -> list[tuple[str, str]]:
    """``(group role, member role)`` for each membership granted by the owner of the sync function: the ones a
    group sync made (an administrator's own grants name the administrator as grantor)."""
    rows = conn.rows(
        "SELECT g.rolname, r.rolname FROM pg_catalog.pg_auth_members m "
        "JOIN pg_catalog.pg_roles g ON g.oid = m.roleid JOIN pg_catalog.pg_roles r ON r.oid = m.member "
        f"WHERE m.grantor IN (SELECT p.proowner FROM pg_catalog.pg_proc p WHERE p.proname = {literal(SYNC_FUNCTION)}) "
        "ORDER BY 1, 2"
    )
    return [(str(g), str(r)) for g, r in rows]


def principals(conn: Connection) -> list[Principal]:
    listed = _listed(conn)
    groups = {p.role for p in listed if p.type == "group"}
    synced = [(g, m) for g, m in synced_memberships(conn) if g in groups]
    sync = group_sync(conn) if groups else None
    out = []
    for p in listed:
        role = p.role
        facts = conn.rows(
            f"SELECT r.rolcanlogin, coalesce((SELECT string_agg(b.rolname, ', ' ORDER BY b.rolname) FROM "
            f"pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid), '') "
            f"FROM pg_catalog.pg_roles r WHERE r.rolname = {literal(role)}"
        )
        can_login, member_of = facts[0] if facts else ["f", ""]
        out.append(
            Principal(
                role,
                p.type,
                p.object_id,
                p.admin,
                can_login == "t",
                [m for m in (member_of or "").split(", ") if m],
                _schemas(conn, role),
                [g for g, m in synced if m == role],
                sync if p.type == "group" else None,
            )
        )
    return out


@dataclass(frozen=True)
class Synced:
    """One change a group sync made: ``action`` (``created``, ``granted``, ``revoked``, …) for ``member`` in
    ``group``; the whole row as the server gave it when its shape is another."""

    group: str
    member: str
    action: str


def sync(conn: Connection) -> list[Synced]:
    """Run the server's group sync now (``pgaadauth_sync_roles_for_group_members()``); TokendError saying how to
    turn it on while ``pgaadauth.enable_group_sync`` is off."""
    state = group_sync(conn)
    if state == "off":
        raise TokendError(
            f"group sync is off on {conn.target.host}: set the server parameter {SYNC_SETTING} to ON (portal: "
            f"Server parameters; or az postgres flexible-server parameter set --name {SYNC_SETTING} --value ON "
            "--resource-group RG --server-name SERVER), then run tokend admin sync again"
        )
    try:
        rows = conn.rows(f"SELECT * FROM {SYNC_FUNCTION}()")
    except ServerError as e:
        if e.code == "42883":
            raise TokendError(
                f"{conn.target.host} has no {SYNC_FUNCTION}(): it is not an Azure Database for PostgreSQL "
                "Flexible Server with group sync (Microsoft Entra authentication, 2026 or later)"
            ) from None
        raise explain(e, conn.target) from None
    out = []
    for row in rows:
        cells = ["" if c is None else c for c in row]
        out.append(Synced(*cells) if len(cells) == 3 else Synced("", "", " | ".join(cells)))
    return out


def render_synced(found: Sequence[Synced], host: str) -> str:
    if not found:
        return f"group sync ran on {host}: every member already had their role and membership"
    lines = [f"group sync ran on {host}:"]
    for s in found:
        if s.group or s.member:
            lines.append(f"  {s.action}: {s.member or '-'} in {s.group!r}")
        else:
            lines.append(f"  {s.action}")
    return "\n".join(lines)


def require_group_sync(conn: Connection, group: str) -> None:
    """UsageError unless group sync is on: a NOLOGIN group role with sync off locks every member out (they have
    no roles of their own)."""
    state = group_sync(conn)
    if state != "on":
        raise UsageError(
            f"--members-only makes {group!r} NOLOGIN, but group sync is {state} on {conn.target.host}: its members "
            f"would have no role to log in as; set the server parameter {SYNC_SETTING} to ON, run tokend admin "
            "sync, then try again"
        )


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


def fold(name: str) -> str:
    """A name with case and every space dropped: two names that fold alike differ only in case or spaces."""
    return "".join(name.split()).casefold()


def near_miss(group: str, roles: Sequence[str]) -> str | None:
    """The role in ``roles`` that differs from ``group`` only in case or spaces (an exact match is not one)."""
    want = fold(group)
    return next((r for r in sorted(roles) if r != group and fold(r) == want), None)


def _how_differs(group: str, real: str) -> str:
    if group.casefold() == real.casefold():
        return "the name's case differs"
    if "".join(group.split()) == "".join(real.split()):
        return "the name's spaces differ"
    return "the name's case differs and its spaces too"


def check(conn: Connection, group: str, database: str, schemas: Sequence[str], fix_command: str) -> list[Finding]:
    """Why a login as ``group`` would fail (or not), in the order a login meets them."""
    _names(group, database, schemas)
    g = literal(group)
    found = conn.rows(f"SELECT rolname, rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = {g}")
    if not found:
        real = near_miss(group, [str(r[0]) for r in conn.rows("SELECT rolname FROM pg_catalog.pg_roles")])
        if real is not None:
            return [
                Finding(
                    False,
                    f"no role {group!r}, but {real!r}: {_how_differs(group, real)} (Entra display names are "
                    "case-sensitive, and spaces count)",
                    f"log in as the role the server has: user = {json.dumps(real, ensure_ascii=False)} in the target "
                    f"(PGUSER={shlex.quote(real)}); tokend admin check {shlex.quote(real)} checks that one",
                )
            ]
        return [Finding(False, f"no role {group!r} on the server", fix_command)]
    out = [Finding(True, f"role {group!r} exists")]
    listed = {p.role: p for p in _listed(conn)}
    entra = listed.get(group)
    state = group_sync(conn) if entra is None or entra.type == "group" else "unknown"
    if found[0][1] != "t":
        if state == "on":
            out.append(
                Finding(
                    False,
                    f"role {group!r} cannot log in (NOLOGIN) and group sync is on: its members log in as "
                    "themselves, not as the group",
                    "log in with your own name as the user — your UPN; a service principal or managed identity: "
                    f"its display name — or allow group logins again: ALTER ROLE {ident(group)} LOGIN;",
                )
            )
        elif state == "off":
            out.append(
                Finding(
                    False,
                    f"role {group!r} cannot log in (NOLOGIN), and group sync is off, so its members have no roles "
                    "of their own either: nobody can log in through it",
                    f"ALTER ROLE {ident(group)} LOGIN; (or turn {SYNC_SETTING} ON and run tokend admin sync, so "
                    "members log in as themselves)",
                )
            )
        else:
            out.append(Finding(False, f"role {group!r} cannot log in", f"ALTER ROLE {ident(group)} LOGIN;"))
    if entra is None:
        out.append(
            Finding(
                False,
                f"role {group!r} is not an Entra principal (made with CREATE ROLE): tokens never log in as it",
                f"DROP ROLE {ident(group)}; then {fix_command}",
            )
        )
    elif entra.type == "group" and state == "on":
        members = sum(1 for grp, _m in synced_memberships(conn) if grp == group)
        out.append(
            Finding(
                True,
                f"group sync is on: {members} member role(s) of {group!r} come from a sync; members may log in as "
                "themselves (a new member: after the next sync, every 30 minutes, or tokend admin sync)",
            )
        )
    elif entra.type == "group" and state == "off":
        out.append(
            Finding(
                True,
                f"group sync is off ({SYNC_SETTING}): members log in as {group!r} with their own token; they "
                "have no roles of their own",
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
    """The administrator's connection; a failure to reach or trust the server carries the fix every part of tokend
    gives for it (``advice``)."""
    try:
        return Connection(target, token, database)
    except ServerError as e:
        raise explain(e, target) from None
    except TokendError as e:
        if advice.classify_login_error(str(e)) is None:
            raise
        fix = advice.for_login_error(str(e), target.name, target.host, target.user)
        raise TokendError(f"{e}; fix: {fix}") from None


def render_principals(found: Sequence[Principal], as_json: bool) -> str:
    """The principals as a table (group sync's state first, memberships a sync made marked ``(sync)``), or JSON:
    a list with one object per principal."""
    if as_json:
        return json.dumps([asdict(p) for p in found], indent=2)
    rows = [
        [
            p.role,
            p.type + (" (admin)" if p.admin else ""),
            "yes" if p.can_login else "NO",
            ", ".join(m + (" (sync)" if m in p.synced_into else "") for m in p.member_of) or "-",
            " | ".join(f"{s}: {r}" for s, r in p.schemas.items()) or "-",
        ]
        for p in found
    ]
    sync = next((p.group_sync for p in found if p.group_sync is not None), None)
    head = [] if sync is None else [f"group sync ({SYNC_SETTING}): {sync}"]
    return "\n".join(head + table(rows, ["ROLE", "TYPE", "LOGIN", "MEMBER OF", "RIGHTS PER SCHEMA"]))


def render_findings(found: Sequence[Finding], paint: Callable[[str, str], str]) -> str:
    lines = []
    for f in found:
        lines.append(f"{paint('✓', '32') if f.ok else paint('✗', '31')} {f.what}")
        if f.fix and not f.ok:
            lines.append(f"  fix: {f.fix}")
    return "\n".join(lines)


def as_dict(found: Sequence[Finding]) -> list[dict[str, Any]]:
    return [asdict(f) for f in found]


ACTIONS = ("add-group", "list", "check", "sync")


@dataclass(frozen=True)
class Request:
    """``tokend admin ACTION``: log in as ``target`` (an Entra administrator) to ``database`` (None: the target's,
    or ``postgres`` for a target of any database). ``group``/``schemas``: add-group and check; the rest add-group."""

    action: str  # one of ACTIONS
    config: Path
    target: str
    database: str | None = None
    group: str = ""
    schemas: tuple[str, ...] = ()
    read_write: bool = False
    object_id: str | None = None
    kind: str = "group"  # one of KINDS, with object_id
    allow_public: bool = False
    apply: bool = False
    members_only: bool = False  # add-group with group sync on: the group role NOLOGIN, members log in as themselves


@dataclass(frozen=True)
class Outcome:
    """What an admin action found or did, for the CLI to show: ``sql`` (add-group, not applied), ``applied``
    (add-group --apply: the statements' tags), ``principals`` (list), ``synced`` (sync: what it did, as text) or
    ``findings`` (check; ``ok`` when all passed)."""

    sql: str = ""
    synced: str | None = None
    applied: tuple[str, ...] | None = None
    principals: tuple[Principal, ...] | None = None
    findings: tuple[Finding, ...] | None = None

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings or ())


def command(request: Request, token_for: Callable[[str], str]) -> Outcome:
    """``tokend admin add-group|list|check|sync``; ``token_for(target name)`` gives the administrator's token."""
    r = request
    target = config.load(r.config).target(r.target)
    database = r.database or (target.database if target.database != "*" else "postgres")
    if r.action not in ("list", "sync"):
        _names(r.group, database, r.schemas)  # before anything is shown or a connection made
    members_only = r.action == "add-group" and r.members_only
    if r.action == "add-group":
        sql = add_group_sql(
            r.group,
            database,
            list(r.schemas),
            r.read_write,
            r.object_id,
            r.kind,
            r.allow_public,
            members_only=members_only,
        )
        if not r.apply and not members_only:
            return Outcome(sql=sql)
    token = token_for(target.name)
    target = principal.resolve(target, display_claims(token))  # user = "@principal": the administrator's own name
    with connect(target, token, database) as conn:
        if r.action == "add-group":
            if members_only:
                require_group_sync(conn, r.group)  # the server decides, so even the dry run asks it
                if not r.apply:
                    return Outcome(sql=sql)
            return Outcome(applied=tuple(apply(conn, sql)))
        if r.action == "list":
            return Outcome(principals=tuple(principals(conn)))
        if r.action == "sync":
            return Outcome(synced=render_synced(sync(conn), target.host))
        fix = shlex.join(
            [
                *("tokend", "admin", "add-group", checked("the group", r.group)),
                *("--target", target.name, "--database", checked("--database", database)),
                *(a for sc in r.schemas for a in ("--schema", checked("--schema", sc))),
                "--apply",
            ]
        )
        return Outcome(findings=tuple(check(conn, r.group, database, list(r.schemas), fix)))
