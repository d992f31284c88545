"""``user = "@principal"``: a target whose PostgreSQL user is the signed-in principal's own role name, resolved when
its identity's token arrives — so one config file serves a whole team, and members of a group with Azure's group
sync on log in as themselves (Microsoft's advice since 2026), whoever signed in.

The spelling: ``@`` starts no UPN, no service principal's or managed identity's display name Azure makes a role of,
and no name ``pgaadauth_create_principal`` is given in practice, and ``*`` already means "any user" in libpq's
pgpass; ``@principal`` reads as "at whoever is signed in".

The role's name (Azure's rules for Entra roles):

1. A person: the token's ``upn`` (guests and some accounts carry only ``unique_name``; v2 tokens
   ``preferred_username``). Each follows an account switch (``az login`` as someone else) with the next token.
2. A service principal or managed identity (``idtyp`` "app", or no person's claim): its display name, which the
   token does not carry. The identity's ``principal_name = "…"`` in the config says it, once. (Microsoft Graph could
   say it with the same sign-in, but only with a Graph permission an app seldom has — Application.Read.All — and a
   second token; the config key always works and costs nothing at refresh.)
3. Otherwise: unknown (None) — the target holds no line and says why (``unresolved``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from tokend.config import PRINCIPAL, Target
from tokend.errors import TokendError

__all__ = ["PRINCIPAL", "Unresolved", "follows", "resolve", "resolved", "unresolved", "user_for"]

_PERSON_CLAIMS = ("upn", "unique_name", "preferred_username")


class Unresolved(TokendError):
    """A ``@principal`` target whose role name the token and the config do not give."""


def follows(target: Target) -> bool:
    """Whether ``target``'s user is the signed-in principal's own name."""
    return target.user == PRINCIPAL


def is_person(claims: Mapping[str, str]) -> bool:
    """Whether the claims are a person's (rule 1), not an app's or managed identity's (rule 2)."""
    return claims.get("idtyp") != "app" and any(claims.get(c) for c in _PERSON_CLAIMS)


def user_for(target: Target, claims: Mapping[str, str]) -> str | None:
    """The PostgreSQL user ``target`` logs in as with a token of these ``claims``: its ``user`` unless it follows
    the principal, else the principal's role name (rules 1–3), else None."""
    if not follows(target):
        return target.user
    if is_person(claims):
        return next(claims[c] for c in _PERSON_CLAIMS if claims.get(c))
    return target.principal_name


def unresolved(target: Target, claims: Mapping[str, str]) -> str:
    """Why ``user_for`` gives None, with the fix."""
    who = claims.get("appid") or claims.get("oid") or "?"
    return (
        f'target {target.name} has user = "{PRINCIPAL}", but identity {target.identity} signed in as an app or '
        f'managed identity ({who}), whose role name the token does not carry: add principal_name = "…" (its '
        f"display name in Entra) to [identities.{target.identity}]"
    )


def resolved(target: Target, claims: Mapping[str, str]) -> Target | None:
    """``target`` with its user resolved for a token of these ``claims`` (itself when it names its user), or None."""
    user = user_for(target, claims)
    if user is None:
        return None
    return target if user == target.user else dataclasses.replace(target, user=user)


def resolve(target: Target, claims: Mapping[str, str]) -> Target:
    """``resolved``, or Unresolved saying why."""
    out = resolved(target, claims)
    if out is None:
        raise Unresolved(unresolved(target, claims))
    return out
