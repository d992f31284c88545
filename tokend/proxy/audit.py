"""Who is behind a proxy session, made visible: the person in the server's ``application_name``.

A group login hides the person: the server, ``pg_stat_activity`` and its logs see "DBA Group", whoever it is. The
proxy knows both sides — the client that connected and the token it logs in with — so every session it opens
carries the token's principal in ``application_name`` (``[targets.NAME] application_name``, a format with the
fields ``{client}``: the client's own application_name, and ``{principal}``: the token's UPN, else its app id,
else its object id). PostgreSQL keeps 63 bytes of it (NAMEDATALEN - 1) and would cut the end — the principal —
first; tokend cuts the client's part instead, and never inside a UTF-8 character.
"""

from __future__ import annotations

import string

from tokend.token import Token, display_claims

NAMEDATALEN = 64  # PostgreSQL's: an identifier, application_name included, keeps NAMEDATALEN - 1 bytes
MAX_APPLICATION_NAME = NAMEDATALEN - 1  # bytes


def principal_of(token: str) -> tuple[str, str]:
    """(the principal as a person names it — UPN, else app id, else object id —, its object id) from the token's
    claims, read for display only ("" for what it does not carry)."""
    claims = display_claims(token)
    return Token(token, 0.0, 0.0, claims=claims).principal, claims.get("oid", "")


def _cut(data: bytes, size: int) -> str:
    """The first ``size`` bytes of UTF-8 ``data``, less a character they would cut in two."""
    return data[: max(size, 0)].decode("utf-8", "ignore")


def application_name(fmt: str, client: str, principal: str) -> str:
    """``fmt`` filled in, at most ``MAX_APPLICATION_NAME`` bytes of UTF-8: the client's part is cut first, then
    (a principal that alone is too long) the end; never inside a character. Spaces at either end are dropped (a
    client that sent no application_name leaves none)."""
    whole = fmt.format(client=client, principal=principal).strip()
    over = len(whole.encode()) - MAX_APPLICATION_NAME
    if over <= 0:
        return whole
    times = sum(1 for _, name, _, _ in string.Formatter().parse(fmt) if name == "client")
    if times and client:
        raw = client.encode()
        client = _cut(raw, len(raw) - -(-over // times))  # each copy loses its share, rounded up
        whole = fmt.format(client=client, principal=principal).strip()
    return _cut(whole.encode(), MAX_APPLICATION_NAME).rstrip()
