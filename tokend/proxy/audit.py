"""Who is behind a proxy session, made visible: the person in the server's ``application_name``.

A group login hides the person: the server, ``pg_stat_activity`` and its logs see "DBA Group", whoever it is. The
proxy knows both sides — the client that connected and the token it logs in with — so every session it opens
carries the token's principal in ``application_name`` (``[targets.NAME] application_name``, a format with the
fields ``{client}``: the client's own application_name, and ``{principal}``: the token's UPN, else its app id,
else its object id). PostgreSQL keeps 63 bytes of it (NAMEDATALEN - 1) and would cut the end — the principal —
first; tokend cuts the client's part instead, and never inside a UTF-8 character.

And the member's own record: one ``Record`` per proxy session, a JSON line in the audit log
(``tokend.logs.AuditLog``, ``[proxy] audit_log``): who connected (uid, pid, executable), as whom tokend logged in,
to what, how much went each way, and how it ended.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import string
import time
from dataclasses import dataclass, field

from tokend.token import Token, display_claims

NAMEDATALEN = 64  # PostgreSQL's: an identifier, application_name included, keeps NAMEDATALEN - 1 bytes
MAX_APPLICATION_NAME = NAMEDATALEN - 1  # bytes


_principals: dict[bytes, tuple[str, str]] = {}  # the token's SHA-256 → principal_of's answer
PRINCIPALS_KEPT = 16  # answers cached (an identity's token is the same for every session until it is refreshed)


def principal_of(token: str) -> tuple[str, str]:
    """(the principal as a person names it — UPN, else app id, else object id —, its object id) from the token's
    claims, read for display only ("" for what it does not carry). Cached by the token's SHA-256 (some 3 µs, where
    decoding costs some 40 µs on the proxy's loop): the cache holds no token."""
    key = hashlib.sha256(token.encode()).digest()
    found = _principals.get(key)
    if found is None:
        claims = display_claims(token)
        found = Token(token, 0.0, 0.0, claims=claims).principal, claims.get("oid", "")
        if len(_principals) >= PRINCIPALS_KEPT:
            _principals.clear()
        _principals[key] = found
    return found


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


@dataclass
class Record:
    """One proxy session, as the audit log keeps it (one JSON line, ``line``). Times are Unix epoch seconds on the
    wall clock (written as UTC ISO 8601); bytes are what was relayed after the login, each way. ``outcome``: "ok",
    "refused: why" (the client was told why), "error: why" (it ended before it was logged in). Never a token: the
    principal and object id are read from the token's claims; the client's application_name is the client's own
    (the log's redaction scrubs token-shaped text from every line all the same)."""

    target: str
    listener: str  # the socket path or address it came in on
    start: float = field(default_factory=time.time)
    end: float | None = None
    uid: int | None = None
    pid: int | None = None
    executable: str | None = None
    database: str | None = None
    user: str | None = None  # the PostgreSQL user tokend logged in as
    principal: str | None = None
    oid: str | None = None
    application_name: str | None = None  # the client's own
    sent: int = 0  # bytes, client → server
    received: int = 0  # bytes, server → client
    outcome: str = "error: ended before its start-up message"

    def line(self) -> str:
        """The record as one JSON object, keys in a fixed order."""
        return json.dumps(
            {
                "start": _iso(self.start),
                "end": _iso(self.end if self.end is not None else time.time()),
                "target": self.target,
                "listener": self.listener,
                "database": self.database,
                "user": self.user,
                "principal": self.principal,
                "oid": self.oid,
                "uid": self.uid,
                "pid": self.pid,
                "executable": self.executable,
                "application_name": self.application_name,
                "bytes_to_server": self.sent,
                "bytes_to_client": self.received,
                "outcome": self.outcome,
            },
            ensure_ascii=False,
        )


def _iso(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.timezone.utc).isoformat(timespec="milliseconds")
