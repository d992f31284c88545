"""The token-checking PostgreSQL's stand-in for Azure's ``pgaadauth`` extension, group sync included.

Azure Database for PostgreSQL Flexible Server maps roles to Microsoft Entra objects and offers SQL functions for it;
this module installs functions with Azure's names and argument lists (Microsoft's "Manage Microsoft Entra roles in
Azure Database for PostgreSQL" and "Use Microsoft Entra ID authentication in Azure Database for PostgreSQL flexible
server", 2026-07-14) into ``pg_catalog``, where Azure keeps them, so ``pgaadauth_list_principals(false)`` and
``pg_catalog.pgaadauth_list_principals(false)`` both resolve:

- ``pgaadauth_create_principal(roleName, isAdmin, isMfa)`` and ``pgaadauth_create_principal_with_oid(roleName,
  objectId, objectType, isAdmin, isMfa)`` create a LOGIN role (an administrator's with CREATEROLE and CREATEDB) and
  return ``Created role for "name"``; only a Microsoft Entra administrator (or the cluster's superuser) may call them.
- ``pgaadauth_list_principals(isAdminValue)`` returns ``(rolename, principalType, objectId, tenantId, isMfa,
  isAdmin)``: with ``true`` the administrators, with ``false`` every Entra principal, administrators included.
- ``pgaadauth_sync_roles_for_group_members()`` — with the server parameter ``pgaadauth.enable_group_sync`` on (a
  custom setting, off by default) — creates a LOGIN role for every member of each group principal (a user's UPN; a
  service principal's or managed identity's display name) and grants it membership in the group role; members who
  left the group lose the membership a sync gave them. Groups are matched by object id, so a renamed group keeps its
  old role name (Azure does not sync group metadata); a dropped group role is no longer synced; a member added to
  the group has no role of their own until the next sync (Azure: every 30 minutes; here ``GroupSync``, on a
  configurable interval, or on demand).

Where Microsoft's pages are silent the stand-in does what Azure most plausibly does, and says so here:
- the sync raises an error while group sync is off (the page says the parameter "must be ON");
- the sync returns one row per change, ``(groupName, memberName, action)``, action one of ``created``, ``granted``,
  ``revoked``, ``skipped: …`` (Azure's result shape is not documented);
- direct members only (users and service principals; nested groups are not expanded);
- the memberships a sync grants are granted by the function's owner (Azure: its internal superuser), which is how
  ``tokend admin list`` tells them from memberships an administrator granted by hand;
- a role a sync creates for a member is kept when they leave (it may own objects; Azure drops no roles).
``pgaadauth_create_principal`` resolves the name in the emulator's directory (a user by UPN, anything else by
display name); a name the directory does not know still gets a role, as a group (Azure would refuse it; the tests
use such names freely).

The emulator's directory reaches PostgreSQL as two tables in the ``pgaadauth`` schema (``entra_objects``,
``entra_members``), rewritten by ``publish_sql`` whenever the directory changes (``Postgres.install_pgaadauth``
subscribes to it). Only the superuser can read them; the functions are SECURITY DEFINER.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from tokend.emulator.directory import Directory

SETTING = "pgaadauth.enable_group_sync"
AZURE_INTERVAL = 30 * 60.0  # seconds between Azure's automatic group syncs

INSTALL = r"""
CREATE SCHEMA pgaadauth;
REVOKE ALL ON SCHEMA pgaadauth FROM PUBLIC;
CREATE TABLE pgaadauth.principals (rolename name PRIMARY KEY, principaltype text NOT NULL, objectid text NOT NULL,
                                   tenantid text NOT NULL, ismfa boolean NOT NULL, isadmin boolean NOT NULL);
CREATE TABLE pgaadauth.tenant (tenantid text NOT NULL);
CREATE TABLE pgaadauth.entra_objects (objectid text PRIMARY KEY, name text NOT NULL, objecttype text NOT NULL);
CREATE TABLE pgaadauth.entra_members (groupid text NOT NULL, memberid text NOT NULL, PRIMARY KEY (groupid, memberid));

CREATE FUNCTION pgaadauth.require_admin() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = session_user AND rolsuper)
     AND NOT EXISTS (SELECT 1 FROM pgaadauth.principals WHERE rolename = session_user AND isadmin) THEN
    RAISE EXCEPTION 'permission denied: only a Microsoft Entra administrator can manage Microsoft Entra principals'
      USING ERRCODE = '42501';
  END IF;
END $$;

CREATE FUNCTION pgaadauth.make_role(roleName text, objectId text, objectType text, isAdmin boolean, isMfa boolean)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF objectType NOT IN ('user', 'group', 'service') THEN
    RAISE EXCEPTION 'objectType must be user, group or service, not %', objectType USING ERRCODE = '22023';
  END IF;
  EXECUTE format('CREATE ROLE %I LOGIN%s', roleName, CASE WHEN isAdmin THEN ' CREATEROLE CREATEDB' ELSE '' END);
  INSERT INTO pgaadauth.principals
    VALUES (roleName, objectType, objectId, coalesce((SELECT tenantid FROM pgaadauth.tenant LIMIT 1), ''),
            isMfa, isAdmin);
END $$;

CREATE FUNCTION pg_catalog.pgaadauth_create_principal_with_oid(roleName text, objectId text, objectType text,
                                                               isAdmin boolean, isMfa boolean) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM pgaadauth.require_admin();
  PERFORM pgaadauth.make_role(roleName, objectId, objectType, isAdmin, isMfa);
  RETURN format('Created role for "%s"', roleName);
END $$;

CREATE FUNCTION pg_catalog.pgaadauth_create_principal(roleName text, isAdmin boolean, isMfa boolean) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  found record;
BEGIN
  PERFORM pgaadauth.require_admin();
  SELECT objectid, objecttype INTO found FROM pgaadauth.entra_objects WHERE name = roleName ORDER BY objectid LIMIT 1;
  IF found IS NULL THEN  -- not in the emulator's directory: a group, as the stand-in always made
    PERFORM pgaadauth.make_role(roleName, md5(roleName), 'group', isAdmin, isMfa);
  ELSE
    PERFORM pgaadauth.make_role(roleName, found.objectid, found.objecttype, isAdmin, isMfa);
  END IF;
  RETURN format('Created role for "%s"', roleName);
END $$;

CREATE FUNCTION pg_catalog.pgaadauth_list_principals(isAdminValue boolean)
RETURNS TABLE(rolename name, principalType text, objectId text, tenantId text, isMfa integer, isAdmin integer)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT p.rolename, p.principaltype, p.objectid, p.tenantid, p.ismfa::integer, p.isadmin::integer
  FROM pgaadauth.principals p JOIN pg_roles r ON r.rolname = p.rolename
  WHERE p.isadmin OR NOT isAdminValue
  ORDER BY p.rolename
$$;

CREATE FUNCTION pgaadauth.group_sync_on() RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT lower(coalesce(current_setting('pgaadauth.enable_group_sync', true), 'off')) IN ('on', 'true', 'yes', '1')
$$;

CREATE FUNCTION pg_catalog.pgaadauth_sync_roles_for_group_members()
RETURNS TABLE(groupName name, memberName name, action text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  g record;
  m record;
  own text;
BEGIN
  PERFORM pgaadauth.require_admin();
  IF NOT pgaadauth.group_sync_on() THEN
    RAISE EXCEPTION 'group sync is off: set the server parameter pgaadauth.enable_group_sync to ON'
      USING ERRCODE = '55000';
  END IF;
  FOR g IN
    SELECT p.rolename, p.objectid, r.oid FROM pgaadauth.principals p JOIN pg_roles r ON r.rolname = p.rolename
    WHERE p.principaltype = 'group' ORDER BY p.rolename
  LOOP
    groupName := g.rolename;
    IF NOT EXISTS (SELECT 1 FROM pgaadauth.entra_objects WHERE objectid = g.objectid AND objecttype = 'group') THEN
      memberName := NULL;
      action := 'skipped: no such group in Microsoft Entra ID';
      RETURN NEXT;
      CONTINUE;
    END IF;
    FOR m IN
      SELECT o.objectid, o.name, o.objecttype FROM pgaadauth.entra_members e
      JOIN pgaadauth.entra_objects o ON o.objectid = e.memberid
      WHERE e.groupid = g.objectid AND o.objecttype IN ('user', 'service') ORDER BY o.name
    LOOP
      SELECT p.rolename INTO own FROM pgaadauth.principals p JOIN pg_roles r ON r.rolname = p.rolename
      WHERE p.objectid = m.objectid ORDER BY p.rolename LIMIT 1;
      memberName := coalesce(own, m.name);
      IF own IS NULL THEN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = m.name) THEN
          action := 'skipped: a role of that name exists and is not this principal';
          RETURN NEXT;
          CONTINUE;
        END IF;
        PERFORM pgaadauth.make_role(m.name, m.objectid, m.objecttype, false, false);
        own := m.name;
        action := 'created';
      ELSE
        action := 'granted';
      END IF;
      IF NOT EXISTS (SELECT 1 FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.member
                     WHERE a.roleid = g.oid AND r.rolname = own) THEN
        EXECUTE format('GRANT %I TO %I', g.rolename, own);
        RETURN NEXT;
      ELSIF action = 'created' THEN
        RETURN NEXT;
      END IF;
    END LOOP;
    FOR m IN
      SELECT r.rolname FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.member
      JOIN pgaadauth.principals p ON p.rolename = r.rolname
      WHERE a.roleid = g.oid AND a.grantor = (SELECT oid FROM pg_roles WHERE rolname = current_user)
        AND p.objectid NOT IN (SELECT memberid FROM pgaadauth.entra_members WHERE groupid = g.objectid)
      ORDER BY r.rolname
    LOOP
      EXECUTE format('REVOKE %I FROM %I', g.rolename, m.rolname);
      memberName := m.rolname;
      action := 'revoked';
      RETURN NEXT;
    END LOOP;
  END LOOP;
END $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgaadauth FROM PUBLIC;
"""


def _lit(text: str) -> str:
    """A SQL string literal (the emulator's server keeps standard_conforming_strings on)."""
    if "\0" in text:
        raise ValueError("a NUL cannot be stored in PostgreSQL text")
    return "'" + text.replace("'", "''") + "'"


def entra_objects(directory: Directory) -> list[tuple[str, str, str]]:
    """``(object id, role name, objectType)`` of every principal: users by UPN, the rest by display name."""
    with directory.lock:
        rows = [(u.oid, u.upn, "user") for u in directory.users.values()]
        rows += [(a.oid, a.name, "service") for a in directory.apps.values()]
        rows += [(m.oid, m.name, "service") for m in directory.identities.values()]
        rows += [(g.oid, g.name, "group") for g in directory.groups.values()]
    return rows


def publish_sql(directory: Directory) -> str:
    """The SQL that makes the ``pgaadauth`` tables hold ``directory`` as it is now, in one transaction."""
    objects = entra_objects(directory)
    with directory.lock:
        members = sorted((g.oid, m) for g in directory.groups.values() for m in g.members)
    lines = [
        "BEGIN;",
        "DELETE FROM pgaadauth.tenant; DELETE FROM pgaadauth.entra_members; DELETE FROM pgaadauth.entra_objects;",
        f"INSERT INTO pgaadauth.tenant VALUES ({_lit(directory.tenant_id)});",
    ]
    if objects:
        lines.append(
            "INSERT INTO pgaadauth.entra_objects VALUES "
            + ", ".join(f"({_lit(o)}, {_lit(n)}, {_lit(t)})" for o, n, t in objects)
            + " ON CONFLICT DO NOTHING;"
        )
    if members:
        lines.append(
            "INSERT INTO pgaadauth.entra_members VALUES "
            + ", ".join(f"({_lit(g)}, {_lit(m)})" for g, m in members)
            + ";"
        )
    lines.append("COMMIT;")
    return "\n".join(lines)


def admins_sql(roles: list[str]) -> str:
    """Record existing LOGIN roles as Microsoft Entra administrators (as the portal's "Add Microsoft Entra Admins"
    does), objectType ``service`` unless the directory knows better at the next publish."""
    return "\n".join(
        f"INSERT INTO pgaadauth.principals VALUES ({_lit(r)}, coalesce((SELECT objecttype FROM "
        f"pgaadauth.entra_objects WHERE name = {_lit(r)} LIMIT 1), 'service'), coalesce((SELECT objectid FROM "
        f"pgaadauth.entra_objects WHERE name = {_lit(r)} LIMIT 1), md5({_lit(r)})), coalesce((SELECT tenantid FROM "
        f"pgaadauth.tenant LIMIT 1), ''), false, true) ON CONFLICT (rolename) DO UPDATE SET isadmin = true;"
        for r in roles
    )


# map the existing roles named like directory objects to them (Azure: SECURITY LABEL FOR pgaadauth ON ROLE …)
ADOPT = """
INSERT INTO pgaadauth.principals
SELECT o.name, o.objecttype, o.objectid, coalesce((SELECT tenantid FROM pgaadauth.tenant LIMIT 1), ''), false, false
FROM pgaadauth.entra_objects o JOIN pg_catalog.pg_roles r ON r.rolname = o.name
ON CONFLICT (rolename) DO NOTHING;
"""
SYNC_SQL = "SELECT * FROM pgaadauth_sync_roles_for_group_members()"


class GroupSync:
    """Azure's automatic group sync: ``run`` every ``interval`` seconds (Azure: 30 minutes) on a daemon thread,
    until ``stop``. A failing run is kept in ``last_error`` and retried at the next interval."""

    def __init__(self, run: Callable[[], None], interval: float = AZURE_INTERVAL) -> None:
        if not interval > 0:
            raise ValueError("the group sync interval must be a positive number of seconds")
        self.interval = interval
        self.runs = 0
        self.last_error: str | None = None
        self._run = run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pgaadauth-group-sync", daemon=True)

    def start(self) -> GroupSync:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._run()
                self.last_error = None
            except Exception as e:  # a background sync reports and tries again, like Azure's
                self.last_error = f"{type(e).__name__}: {e}"
            self.runs += 1
