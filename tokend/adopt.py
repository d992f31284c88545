"""Which of the tokens a previous daemon left in the sinks a starting daemon may take over (DESIGN.md's refresh
policy: "a valid token is never removed for lack of a successor").

A daemon that starts while its sign-in cannot answer (a missing secret, Entra down, the laptop offline) would
otherwise empty its block at once, although the tokens it finds there are valid for up to an hour more. So at start
it reads back what its own block holds (``Sink.read_back``), and each identity adopts the longest-lived token that:

1. is a JWT whose ``exp`` is more than ``token.END_MARGIN`` seconds away (the expiry is read from the token itself);
2. is for the identity's resource (its ``aud`` claim; a token without one is not taken);
3. belongs to whom the identity signs in as now (``expected_principal``): for the Azure CLI, the account its profile
   has selected (none selected: signed out, nothing is adopted, so an ``az logout`` while tokend was stopped still
   removes the token); for an app identity with a client id, that app id; an identity whose account is only known
   once it answers (device code, browser, default) takes its own block's token and lets its first answer decide.

Pure except ``azure_cli_account``, which reads the CLI's profile file. The refresher then holds an adopted token
exactly like its own: its first answer replaces it, a sign-out removes it, and it leaves the sinks at its expiry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokend.config import IdentityConfig
from tokend.token import END_MARGIN, Token, display_claims, expiry

# Sources that sign in as an app: their tokens carry the client id as ``appid`` (managed identity: when one is given)
APP_SOURCES = frozenset({"service-principal", "workload-identity", "managed-identity"})


def azure_cli_account(profile: Path, tenant_id: str | None = None) -> str | None:
    """The user the Azure CLI's ``azureProfile.json`` has selected (its default subscription's ``user.name``; with
    ``tenant_id``, that tenant's subscription if there is one), or None when nobody is signed in or the file cannot
    be read. The CLI writes the file with a UTF-8 BOM."""
    try:
        data = json.loads(profile.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None
    subs = [s for s in data.get("subscriptions") or [] if isinstance(s, dict)] if isinstance(data, dict) else []
    chosen = [s for s in subs if tenant_id and str(s.get("tenantId", "")).lower() == tenant_id.lower()]
    chosen = chosen or [s for s in subs if s.get("isDefault")]
    user = chosen[0].get("user") if chosen else None
    name = user.get("name") if isinstance(user, dict) else None
    return name if isinstance(name, str) and name else None


def expected_principal(identity: IdentityConfig, cli_account: str | None) -> str | None:
    """Whom a token for ``identity`` must be for to be adopted (compared without case with ``Token.principal``):
    "" when only the identity's first answer can tell (anyone in its own block), None when nobody (signed out)."""
    if identity.source == "azure-cli":
        return cli_account
    if identity.source in APP_SOURCES:
        return identity.client_id or ""
    return ""


def choose(values: Iterable[str], identity: IdentityConfig, principal: str | None, now: float) -> Token | None:
    """The token (rules 1-3) ``identity`` adopts from ``values`` (what its targets' sinks hold), or None.
    ``principal``: ``expected_principal``'s answer; ``now``: the wall clock, epoch seconds."""
    if principal is None:
        return None
    best: Token | None = None
    for value in set(values):
        exp = expiry(value)
        if exp is None or exp - now <= END_MARGIN:
            continue
        claims = display_claims(value)
        if claims.get("aud", "").rstrip("/") != identity.resource.rstrip("/"):
            continue
        token = Token(value, exp, now, None, claims)
        if principal and token.principal.lower() != principal.lower():
            continue
        if best is None or token.expires_on > best.expires_on:
            best = token
    return best
