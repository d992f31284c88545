"""tokend admin against the token-checking PostgreSQL with the emulator's stand-in for Azure's pgaadauth functions.

The stand-in (tokend/emulator/pgaadauth.py, installed by ``Postgres.install_pgaadauth``) has Azure's names and
argument lists — pgaadauth_create_principal(roleName, isAdmin, isMfa), pgaadauth_create_principal_with_oid(roleName,
objectId, objectType, isAdmin, isMfa), pgaadauth_list_principals(isAdminValue) returning (rolename, principalType,
objectId, tenantId, isMfa, isAdmin), pgaadauth_sync_roles_for_group_members() — and creates a LOGIN role as Azure
does. Only Azure's own functions can vouch for Entra principals; these stand in for them here, where the emulator's
token check plays the Entra side. Group sync's own tests are in test_admin_groups.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg import sql as q

from tokend.admin import add_group_sql
from tokend.emulator.postgres import ADMIN, Postgres
from tokend.errors import UsageError

from support.builders import GROUP, sp_config
from support.product import REPO, tokend
from support.tenant import Tenant

READERS = "Report Readers"


@pytest.fixture
def server(em: Tenant, postgres: Postgres, write_config, tmp_path: Path):
    """A database of the administrator's (the CI app, an Entra administrator here) with two schemas, the
    stand-in installed, the emulator's "Report Readers" group (the app is a member), and a config whose target
    `admin` logs in as the administrator."""
    db = f"admindb{abs(hash(tmp_path)) % 100000}"
    admin_role = em.app.name
    em.emulator.directory.add_group(READERS, em.app.oid)
    postgres.sql(f'CREATE DATABASE "{db}" OWNER "{admin_role}"')
    postgres.sql(f'REVOKE CONNECT ON DATABASE "{db}" FROM PUBLIC')
    postgres.sql(f'ALTER ROLE "{admin_role}" CREATEROLE')
    postgres.install_pgaadauth(db, em.emulator.directory, admins=[admin_role])
    for schema in ("reports", "other"):
        postgres.sql(
            f'CREATE SCHEMA {schema} AUTHORIZATION "{admin_role}"; '
            f'SET ROLE "{admin_role}"; CREATE TABLE {schema}.t (x int); INSERT INTO {schema}.t VALUES (1)',
            db,
        )
    cfg = write_config(
        sp_config(
            em,
            postgres.port,
            targets=(
                f'[targets.admin]\nhost = "127.0.0.1"\nport = {postgres.port}\ndatabase = "{db}"\n'
                f'user = "{admin_role}"\n'
                f'identity = "sp"\nsinks = []\nsslrootcert = "{postgres.ca_cert}"\n'
                f'[targets.readers]\nhost = "127.0.0.1"\nport = {postgres.port}\ndatabase = "{db}"\n'
                f'user = "{READERS}"\n'
                f'identity = "sp"\n'
            ),
        )
    )
    yield cfg, db
    postgres.forget_pgaadauth(db)
    postgres.sql(f'DROP DATABASE "{db}" WITH (FORCE)')
    for role in (READERS, "audit group", "Nologin Group", "Plain Role"):
        postgres.sql(f'DROP ROLE IF EXISTS "{role}"')


def as_readers(pg: Postgres, db: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", f"host=127.0.0.1 port={pg.port} dbname={db} user='{READERS}' sslmode=require", "-w", "-Atc", sql],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_add_group_prints_stable_sql_and_applies_it_once(em: Tenant, postgres: Postgres, server) -> None:
    cfg, db = server
    args = ("admin", "add-group", READERS, "--target", "admin", "--schema", "reports", "--config", str(cfg))
    dry = tokend(*args)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == tokend(*args).stdout  # stable
    assert f"SELECT pgaadauth_create_principal('{READERS}', false, false)\n  WHERE NOT EXISTS" in dry.stdout
    assert f'GRANT CONNECT ON DATABASE "{db}" TO "{READERS}";' in dry.stdout
    assert 'ALTER DEFAULT PRIVILEGES IN SCHEMA "reports" GRANT SELECT ON TABLES TO "Report Readers";' in dry.stdout
    assert postgres.sql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{READERS}'").strip() == "0"  # nothing ran
    assert tokend("run", "--once", "--config", str(cfg)).returncode == 0  # the group's token in pgpass
    assert as_readers(postgres, db, "select 1").returncode != 0  # no role yet
    applied = tokend(*args, "--apply")
    assert applied.returncode == 0, applied.stderr
    listing = tokend("admin", "list", "--target", "admin", "--json", "--config", str(cfg))
    assert tokend(*args, "--apply").returncode == 0  # again: nothing changes
    assert tokend("admin", "list", "--target", "admin", "--json", "--config", str(cfg)).stdout == listing.stdout
    readers = next(p for p in json.loads(listing.stdout) if p["role"] == READERS)
    assert readers["can_login"] and readers["schemas"]["reports"].startswith("USAGE; SELECT 1/1")
    assert "other" not in readers["schemas"]
    r = as_readers(postgres, db, "select current_user, x from reports.t")
    assert r.stdout.strip() == f"{READERS}|1", r.stderr
    r = as_readers(postgres, db, "select x from other.t")
    assert r.returncode != 0 and "permission denied" in r.stderr
    postgres.sql(
        f'SET ROLE "{em.app.name}"; CREATE TABLE reports.later (y int); INSERT INTO reports.later VALUES (2)', db
    )
    assert as_readers(postgres, db, "select y from reports.later").stdout.strip() == "2"  # default privileges
    human = tokend("admin", "list", "--target", "admin", "--config", str(cfg))
    assert READERS in human.stdout and "RIGHTS PER SCHEMA" in human.stdout


def test_the_public_schema_needs_asking_twice_and_identifiers_are_quoted(server) -> None:
    cfg, _db = server
    r = tokend("admin", "add-group", READERS, "--target", "admin", "--schema", "public", "--config", str(cfg))
    assert r.returncode == 2 and "--allow-public" in r.stderr
    r = tokend(
        "admin",
        "add-group",
        'Odd "Quoted" Group',
        "--target",
        "admin",
        "--schema",
        "My Schema",
        "--schema",
        "public",
        "--allow-public",
        "--read-write",
        "--config",
        str(cfg),
    )
    assert r.returncode == 0
    assert (
        """GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "My Schema" TO "Odd ""Quoted"" Group";"""
        in r.stdout
    )
    assert "pgaadauth_create_principal('Odd \"Quoted\" Group', false, false)" in r.stdout


def test_check_finds_each_reason_a_login_fails(em: Tenant, postgres: Postgres, server) -> None:
    cfg, db = server

    def check(group: str, *schemas: str) -> tuple[int, list[dict]]:
        r = tokend(
            "admin",
            "check",
            group,
            "--target",
            "admin",
            *(a for s in schemas for a in ("--schema", s)),
            "--json",
            "--config",
            str(cfg),
        )
        return r.returncode, json.loads(r.stdout)

    code, found = check("Nobody Group", "reports")
    assert code == 1 and "no role 'Nobody Group'" in found[0]["what"] and "add-group" in found[0]["fix"]
    postgres.sql("SELECT pgaadauth_create_principal('audit group', false, false)", db)
    code, found = check("Audit Group")
    assert code == 1 and "case differs" in found[0]["what"]
    # the fix is the role the server has, never creating the wrongly cased one (issue 22)
    assert 'user = "audit group"' in found[0]["fix"] and "add-group" not in found[0]["fix"], found[0]
    postgres.sql("SELECT pgaadauth_create_principal('Nologin Group', false, false)", db)
    postgres.sql('ALTER ROLE "Nologin Group" NOLOGIN')
    code, found = check("Nologin Group", "reports")
    whats = [f["what"] for f in found if not f["ok"]]
    assert any("cannot log in" in w for w in whats) and any("no CONNECT" in w for w in whats)
    assert any("no USAGE on schema 'reports'" in w for w in whats)
    postgres.sql('CREATE ROLE "Plain Role" LOGIN')
    code, found = check("Plain Role")
    assert any("not an Entra principal" in f["what"] for f in found if not f["ok"])
    postgres.sql(f'GRANT CONNECT ON DATABASE "{db}" TO "Nologin Group"; ALTER ROLE "Nologin Group" LOGIN')
    postgres.sql(f'SET ROLE "{em.app.name}"; GRANT USAGE ON SCHEMA reports TO "Nologin Group"', db)
    code, found = check("Nologin Group", "reports")
    assert code == 1 and [f["what"] for f in found if not f["ok"]] == [
        "USAGE on schema 'reports' but no rights on any of its 1 tables"
    ]
    human = tokend("admin", "check", "Nologin Group", "--target", "admin", "--schema", "reports", "--config", str(cfg))
    assert "fix: GRANT SELECT ON ALL TABLES IN SCHEMA" in human.stdout


def test_server_errors_are_one_line_with_the_fix(em: Tenant, postgres: Postgres, write_config) -> None:
    """A server that is not Azure (no pgaadauth functions): one line saying so."""
    cfg = write_config(
        sp_config(
            em,
            postgres.port,
            targets=(
                f'[targets.plain]\nhost = "127.0.0.1"\nport = {postgres.port}\ndatabase = "appdb"\nuser = "{GROUP}"\n'
                f'identity = "sp"\nsslrootcert = "{postgres.ca_cert}"\n'
            ),
        )
    )
    r = tokend("admin", "list", "--target", "plain", "--config", str(cfg))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "no pgaadauth functions" in lines[0], r.stderr


# -- names that try to leave their quotes ----------------------------------------------------------------------
HOSTILE = [
    "$tokend$\\r \\\\ CREATE TABLE pwned_c (x int); COMMIT; --",  # the reported one: \r and \\ are psql's
    "$tokend$\\! touch pwned #",
    "O'Brien Group",
    'Odd "Quoted" Group',
    "back\\slash group",
    "ends in a backslash\\",
    "x\\'); CREATE TABLE pwned_a (x int); --",  # a backslash before a quote: an escape while scs is off
    "x'); CREATE TABLE pwned_b (x int); --",
    "dollar $$ group",
    "$tokend$",
    "\\! touch pwned",
    ":'evil' :evil :\"evil\"",  # psql variables, set below
    "$(touch pwned) `touch pwned`",  # for the shell that runs check's fix line
    "Grüße 🚀 Gruppe 中文",
]
REFUSED = ["line\nbreak", "carriage\rreturn", "tab\there", "escape\x1b[31m", "next\x85line", "para\u2029graph"]


def run_psql(pg: Postgres, db: str, sql: str, cwd: Path, stop: bool, scs: str) -> subprocess.CompletedProcess[str]:
    """The printed SQL run the way the README says, with real psql (as the server's superuser, the strongest)."""
    return subprocess.run(
        [str(pg.bindir / "psql"), "-X", "-h", str(pg.sockdir), "-p", str(pg.port), "-U", ADMIN, "-d", db]
        + (["-v", "ON_ERROR_STOP=1"] if stop else [])
        + ["-v", "evil=oops", "-f", "-"],
        input=sql,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PGOPTIONS": f"-c standard_conforming_strings={scs}"},
    )


def test_hostile_group_names_stay_names_in_psql_and_the_shell(
    em: Tenant, postgres: Postgres, server, tmp_path: Path
) -> None:
    cfg, db = server
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    conn = psycopg.connect(host=str(postgres.sockdir), port=postgres.port, user=ADMIN, dbname=db, autocommit=True)
    try:
        for name in HOSTILE:
            base = ("--target", "admin", "--schema", "reports", "--config", str(cfg))
            check = tokend("admin", "check", name, *base, "--json")
            assert check.returncode == 1, check.stderr
            fix = json.loads(check.stdout)[0]["fix"]
            # the fix line through a real shell, with `tokend` a function that prints its arguments
            argv = subprocess.run(
                ["sh", "-c", "tokend() { printf '%s\\0' \"$@\"; }; " + fix], capture_output=True, cwd=cwd
            )
            assert argv.stdout.decode().split("\0")[:-1] == [
                *("admin", "add-group", name, "--target", "admin", "--database", db),
                *("--schema", "reports", "--apply"),
            ], (name, fix)
            printed = tokend("admin", "add-group", name, *base)
            assert printed.returncode == 0, printed.stderr
            for stop in (True, False):
                for scs in ("on", "off"):
                    r = run_psql(postgres, db, printed.stdout, cwd, stop, scs)
                    assert r.returncode == 0 and "ERROR" not in r.stderr, (name, scs, r.stderr)
                    assert "invalid command" not in r.stderr, (name, r.stderr)
                    assert list(cwd.iterdir()) == [], name  # no shell command ran
                    pwned = conn.execute("SELECT relname FROM pg_catalog.pg_class WHERE relname LIKE 'pwned%'")
                    assert pwned.fetchall() == [], name  # no statement of the name's ran
            role = conn.execute(
                "SELECT rolname, rolcanlogin, has_schema_privilege(rolname, 'reports', 'USAGE') "
                "FROM pg_catalog.pg_roles WHERE rolname = %s",
                (name,),
            ).fetchall()
            assert role == [(name, True, True)], name  # exactly that role, with its rights
            again = tokend("admin", "check", name, *base, "--json")
            assert again.returncode == 0, again.stdout
    finally:
        for name in HOSTILE:
            if conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (name,)).fetchall():
                conn.execute(q.SQL("DROP OWNED BY {}").format(q.Identifier(name)))
                conn.execute(q.SQL("DROP ROLE {}").format(q.Identifier(name)))
        conn.close()


def test_names_with_control_characters_are_refused_in_one_line(server) -> None:
    cfg, _db = server
    for name in REFUSED:
        for action in ("add-group", "check"):
            r = tokend("admin", action, name, "--target", "admin", "--schema", "reports", "--config", str(cfg))
            lines = r.stderr.strip().splitlines()
            assert r.returncode == 2 and len(lines) == 1 and "control character" in lines[0], (name, r.stderr)
            assert r.stdout == ""
        r = tokend("admin", "add-group", "ok", "--target", "admin", "--schema", name, "--config", str(cfg))
        assert r.returncode == 2 and "--schema" in r.stderr and "control character" in r.stderr
    with pytest.raises(UsageError, match="U\\+0000"):
        add_group_sql("nul\0here", "appdb", ["reports"])  # argv cannot carry a NUL; the function refuses it too
    r = tokend(
        *("admin", "add-group", "ok", "--object-id", "x'); DROP TABLE t; --"),
        *("--target", "admin", "--schema", "reports", "--config", str(cfg)),
    )
    assert r.returncode == 2 and "not an Entra object id" in r.stderr


def test_the_readme_shows_what_add_group_prints(server) -> None:
    cfg, _db = server
    readme = (REPO / "README.md").read_text()
    rest = readme[readme.index('`tokend admin add-group "DBA Group" --target admin --database appdb') :]
    shown = rest[rest.index("```sql\n") + len("```sql\n") : rest.index("```\n", rest.index("```sql\n") + 7)]
    r = tokend(
        *("admin", "add-group", "DBA Group", "--target", "admin", "--database", "appdb", "--schema", "sales"),
        *("--config", str(cfg)),
    )
    assert r.returncode == 0 and r.stdout == shown
