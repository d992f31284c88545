"""Why the server refused a login as a group (or as oneself), and what fixes it: one message per case.

Microsoft's only advice for a refused Entra login is "verify the database role exists (``\\du``) and confirm the
``pgaadauth.enable_group_sync`` setting". tokend sees both sides — the token (object id, UPN, the groups claim
when the app registration asks for it) and the server — so it asks the server what an ordinary member may read
(``pg_roles``, ``current_setting`` — readable by every role; ``pgaadauth_list_principals``,
which Azure may keep to administrators: "cannot tell" then), logged in as another role the same token may use
(the principal's own role, the other targets' users on that server), and names the case:

1. ``no-role`` — no role of that name on the server.
2. ``near-miss`` — a role whose name differs only in case or spaces (Entra names are case-sensitive).
3. ``nologin-sync-on`` — the group role is NOLOGIN and group sync is on: log in as yourself, ``user = "@principal"``.
4. ``nologin`` — the role is NOLOGIN and group sync is off or unknown: nobody logs in through it.
5. ``not-synced-yet`` — logging in as oneself with group sync on, and one's own role is not there yet.
6. ``no-own-role`` — logging in as oneself with group sync off: only roles an administrator made exist.
7. ``not-a-member`` — the token's groups claim does not hold the group's object id.
8. ``cannot-tell`` — the server would not say (no other login worked, the principals are not readable, or the
   token carries no groups claim): what tokend saw, and who can find out.

``explain`` is the pure part (tested in-process); ``refused`` asks the server and is what doctor, ``init --check``
and the proxy call on a refused login. It blocks (it opens connections): the proxy runs it off its loop.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tokend import admin, advice, principal
from tokend.admin import Listed, near_miss
from tokend.config import PRINCIPAL, Config, Target
from tokend.errors import TokendError
from tokend.pg.connection import Connection, ident
from tokend.token import display_claims, group_ids

SYNC_EVERY = "every 30 minutes"  # Azure's group sync interval, as its documentation gives it


@dataclass(frozen=True)
class Who:
    """The token's principal: its own role name (None: an app whose name the config does not give), object id,
    and the object ids of its groups (None: the token carries no groups claim)."""

    name: str | None
    oid: str
    groups: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Seen:
    """What the server showed, logged in as ``asked_as``: every role and whether it may log in; the Entra
    principals (None: not readable by that login); group sync ("on", "off", "unknown")."""

    asked_as: str
    roles: Mapping[str, bool]
    principals: Sequence[Listed] | None
    sync: str


@dataclass(frozen=True)
class Diagnosis:
    case: str  # one of the cases in the module docstring
    what: str  # why, for people
    fix: str  # what to do

    def line(self) -> str:
        """One line: why, then the fix."""
        return f"{self.what}; fix: {self.fix}"


def who(target: Target, token: str) -> Who:
    """The token's principal as the diagnosis needs it (claims read for display only)."""
    claims = display_claims(token)
    name = principal.user_for(dataclasses.replace(target, user=PRINCIPAL), claims)
    return Who(name, claims.get("oid", ""), group_ids(token))


def _user(name: str) -> str:
    return f"user = {json.dumps(name, ensure_ascii=False)}"


def explain(target: Target, refusal: str, me: Who, seen: Seen | None) -> Diagnosis:
    """Why logging in to ``target`` as its user was refused (``refusal``: the server's message) for the principal
    ``me``, from what the server showed (``seen``; None: tokend could not log in as any other role to ask)."""
    user, where = target.user, f"[targets.{target.name}]"
    own = me.name
    if seen is None:
        if "does not exist" in refusal and user == own:
            return Diagnosis(
                "not-synced-yet",
                f"your own role {user!r} is not on the server yet: with group sync on, one is made for each member of "
                f"a group principal {SYNC_EVERY}",
                "wait for the next sync, or ask an administrator to run it now: tokend admin sync (with group sync "
                "off, an administrator creates your role: tokend admin add-group YOUR-UPN --type user …)",
            )
        if "does not exist" in refusal:
            return Diagnosis(
                "no-role",
                f"no role {user!r} on the server (tokend could not log in as another role to look for a name that "
                "differs only in case or spaces)",
                f"check {where} user exactly as Entra shows it (case and spaces count); an administrator creates it "
                f"with: tokend admin add-group {shlex.quote(user)} --schema SCHEMA --apply",
            )
        if "not permitted to log in" in refusal:
            return Diagnosis(
                "nologin",
                f"role {user!r} may not log in (NOLOGIN); tokend could not log in as another role to ask more",
                f"if the server's group sync ({admin.SYNC_SETTING}) is on, log in as yourself: {_user(PRINCIPAL)} in "
                f"{where}; else an administrator can allow it: ALTER ROLE {ident(user)} LOGIN;",
            )
        return Diagnosis(
            "cannot-tell",
            f"the server refused {user!r} ({refusal}) and no other role this token may use would log in to say why",
            _cannot_tell_fix(user),
        )
    groups = {p.role: p for p in seen.principals or () if p.type == "group"}
    mine = [g for g, p in groups.items() if me.groups is not None and p.object_id in me.groups]
    if user not in seen.roles:
        real = near_miss(user, list(seen.roles))
        if real is not None:
            return Diagnosis(
                "near-miss",
                f"no role {user!r}, but {real!r}: the names differ in case or spaces (Entra names are "
                "case-sensitive, and spaces count)",
                f"write the name exactly: {_user(real)} in {where}",
            )
        if user == own and seen.sync == "on":
            via = f" (you are in {', '.join(repr(g) for g in mine)})" if mine else ""
            return Diagnosis(
                "not-synced-yet",
                f"your own role {user!r} is not on the server yet: group sync makes one for each member of a group "
                f"principal{via}, {SYNC_EVERY}",
                "wait for the next sync, or ask an administrator to run it now: tokend admin sync"
                + (
                    f"; meanwhile {_user(mine[0])} works if that role may log in"
                    if mine and seen.roles.get(mine[0])
                    else ""
                ),
            )
        if user == own:
            return Diagnosis(
                "no-own-role",
                f"no role {user!r} for you, and group sync is {seen.sync}: only roles an administrator made exist",
                "log in as your group (user = its display name), or ask an administrator to turn "
                f"{admin.SYNC_SETTING} ON and run tokend admin sync",
            )
        return Diagnosis(
            "no-role",
            f"no role {user!r} on the server",
            f"check {where} user (Entra display names are case-sensitive); an administrator creates it with: "
            f"tokend admin add-group {shlex.quote(user)} --schema SCHEMA --apply",
        )
    if not seen.roles[user]:
        if seen.sync == "on":
            waiting = own is not None and own not in seen.roles
            return Diagnosis(
                "nologin-sync-on",
                f"role {user!r} may not log in (NOLOGIN) and group sync is on: its members log in as themselves",
                f"log in as yourself: {_user(PRINCIPAL)} in {where}"
                + (
                    f" (your role {own!r} comes with the next group sync, {SYNC_EVERY}, or at once with "
                    "tokend admin sync by an administrator)"
                    if waiting
                    else ""
                ),
            )
        return Diagnosis(
            "nologin",
            f"role {user!r} may not log in (NOLOGIN) and group sync is {seen.sync}: nobody logs in through it",
            f"an administrator can allow it: ALTER ROLE {ident(user)} LOGIN; (or turn {admin.SYNC_SETTING} ON and "
            f"run tokend admin sync, then {_user(PRINCIPAL)})",
        )
    group = groups.get(user)
    if group is not None and me.groups is not None and group.object_id not in me.groups:
        return Diagnosis(
            "not-a-member",
            f"{own or me.oid} is not a member of the Entra group {user!r} (the token's groups claim does not hold "
            f"its object id {group.object_id})",
            f"ask the group's owner to add you (Entra admin center → Groups → {user} → Members → Add members); it "
            "counts from your next token",
        )
    if seen.principals is None:
        why = f"the server's Entra principals are not readable as {seen.asked_as!r}"
    elif group is None:
        if user == own:
            return Diagnosis(
                "cannot-tell",
                f"role {user!r} exists but the server refused your token for it (it may be mapped to another "
                "object id, or not be an Entra principal)",
                _cannot_tell_fix(user),
            )
        why = f"role {user!r} is not an Entra group principal"
    else:
        why = "the token carries no groups claim"
    return Diagnosis(
        "cannot-tell",
        f"the server refused {own or me.oid} as {user!r} and tokend cannot tell whether you are a member ({why})",
        f"check your membership in the Entra admin center (Groups → {user} → Members); an administrator can run "
        f"tokend admin check {shlex.quote(user)}",
    )


def askers(cfg: Config | None, target: Target, me: Who) -> list[str]:
    """The roles tokend tries to log in as to ask the server, in order: the principal's own, the users of the
    config's other targets on the same server and identity, then the refused one (a refusal may be the database's)."""
    out = [me.name] if me.name else []
    for t in cfg.targets.values() if cfg else ():
        if (t.host, t.port, t.identity) == (target.host, target.port, target.identity) and t.user != PRINCIPAL:
            out.append(t.user)
    out.append(target.user)
    return [u for u in dict.fromkeys(out) if u]


def ask(conn: Connection, as_user: str) -> Seen:
    """What an ordinary member can read on the server."""
    return Seen(as_user, admin.roles(conn), admin.readable_principals(conn), admin.group_sync(conn))


def refused(cfg: Config | None, target: Target, token: str, refusal: str) -> Diagnosis:
    """The diagnosis of a refused login to ``target`` (its user resolved) with ``token``: the server asked as the
    first of ``askers`` that logs in (to the target's database, else ``postgres``), else from the refusal and the
    token alone."""
    me = who(target, token)
    databases = dict.fromkeys([target.database if target.database != "*" else "postgres", "postgres"])
    for user in askers(cfg, target, me):
        for database in databases:
            try:
                conn = admin.connect(dataclasses.replace(target, user=user), token, database)
            except TokendError:
                continue
            with conn:
                try:
                    seen = ask(conn, user)
                except TokendError:
                    continue
            return explain(target, refusal, me, seen)
    return explain(target, refusal, me, None)


def _cannot_tell_fix(user: str) -> str:
    """What to do when the server would not say why: for a group, advice's membership question (the same words the
    proxy and admin use), which names `tokend admin check` too; else the check alone."""
    if advice.is_group(user):
        return advice.fix(advice.Failure.GROUP_LOGIN_REFUSED, user=user)
    return f"an administrator can tell: tokend admin check {shlex.quote(user)}"
