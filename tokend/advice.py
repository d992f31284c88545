"""The one source of fixes: for each kind of failure, the one line that tells a person what to do.

The proxy, doctor, ``tokend admin`` and status meet the same failures (the authority's name does not resolve, Entra's
or the server's TLS certificate is not trusted, nothing listens, no daemon runs, a group login is refused, libpq
ignores a pgpass, the sign-in is another account than the target's user) and must say the same thing for each. So
the words live here, once, and every caller asks by kind (``fix``) or by the error it saw (``for_token_error``,
``for_login_error``). Nothing here does I/O; the texts never carry a token (callers pass names, paths and hosts).
"""

from __future__ import annotations

import re
from enum import Enum


class Failure(Enum):
    """The kinds of failure that have one fix, named for what went wrong."""

    AUTHORITY_DNS = "authority-dns"  # the sign-in authority's host name does not resolve
    AUTHORITY_TLS = "authority-tls"  # Entra's (or the authority's) certificate is not trusted here
    AUTHORITY_REFUSED = "authority-refused"  # nothing accepts connections at the authority
    PROXY = "proxy"  # the HTTPS proxy the environment names cannot be reached, or refused the tunnel
    SERVER_DNS = "server-dns"  # the PostgreSQL server's host name does not resolve
    SERVER_TLS = "server-tls"  # the PostgreSQL server's certificate is not trusted
    SERVER_NO_TLS = "server-no-tls"  # the server does not offer TLS at all
    SERVER_REFUSED = "server-refused"  # nothing accepts TCP at host:port
    NO_DAEMON = "no-daemon"  # no daemon runs this config
    GROUP_LOGIN_REFUSED = "group-login-refused"  # the server refused a login as a group's role
    LOGIN_REFUSED = "login-refused"  # the server refused a login as a person or application
    PGPASS_MODE = "pgpass-mode"  # libpq ignores a pgpass that group or others can read
    OTHER_ACCOUNT = "other-account"  # signed in as another account than the target's user


def fix(
    kind: Failure,
    *,
    identity: str = "NAME",
    target: str = "NAME",
    host: str = "",
    user: str = "",
    path: str = "",
    config: str = "",
    principal: str = "",
) -> str:
    """The one line of fix for ``kind``, with the names that make it exact (an identity, a target, a file)."""
    cfg = f" --config {config}" if config else ""
    if kind is Failure.AUTHORITY_DNS:
        return (
            f"check `authority` (or `cloud`) in [identities.{identity}] names a host that resolves here, "
            "and your DNS / VPN / HTTPS_PROXY"
        )
    if kind is Failure.AUTHORITY_TLS:
        return (
            f"set ca_bundle = PATH in [identities.{identity}] to the CA that signs the authority's certificate "
            "(a TLS-inspecting proxy's, a private cloud's, the emulator's), or REQUESTS_CA_BUNDLE in the daemon's "
            "environment"
        )
    if kind is Failure.AUTHORITY_REFUSED:
        return f"check the port in `authority` of [identities.{identity}] and that the authority is running"
    if kind is Failure.PROXY:
        return (
            f"check HTTPS_PROXY (and NO_PROXY) where the daemon runs ({path or 'tokend.env beside the config'}): "
            "the proxy it names must be reachable and allow a tunnel to the authority"
        )
    if kind is Failure.SERVER_DNS:
        return f"check the host name in [targets.{target}] and your DNS / VPN"
    if kind is Failure.SERVER_TLS:
        return (
            f"set the target's sslrootcert (in [targets.{target}]) to the CA that signed "
            f"{host or 'the server'}'s certificate"
        )
    if kind is Failure.SERVER_NO_TLS:
        return "is this the right server and port? Azure requires TLS"
    if kind is Failure.SERVER_REFUSED:
        return "check the port, the server's firewall rules and that it is running"
    if kind is Failure.NO_DAEMON:
        return f"no daemon runs: start it with `tokend service install{cfg}` (at login) or `tokend run{cfg}`"
    if kind is Failure.GROUP_LOGIN_REFUSED:
        return (
            f"is this identity a member of the group {user!r}? (an Entra group's members log in as it; "
            f"`tokend admin check {_quote(user)}{cfg}` shows what the server has)"
        )
    if kind is Failure.LOGIN_REFUSED:
        return (
            f"check the role {user!r} exists on the server (pgaadauth_create_principal) and is the identity's "
            "own name (UPN, or an application's display name)"
        )
    if kind is Failure.PGPASS_MODE:
        return f"chmod 600 {path or '~/.pgpass'}"
    if kind is Failure.OTHER_ACCOUNT:
        return (
            f"sign in as {user} again (`az login`), or set user = {principal!r} in [targets.{target}] "
            "if the new account is meant"
        )
    raise ValueError(kind)  # pragma: no cover - every kind has its line


def _quote(name: str) -> str:
    return f'"{name}"' if re.search(r"[^A-Za-z0-9_@.-]", name) else name


# What a token request's error says, in the words of urllib3/requests, MSAL, azure-identity and the OS resolver.
_DNS = re.compile(
    r"Failed to resolve|Name or service not known|nodename nor servname|getaddrinfo failed|"
    r"Temporary failure in name resolution|No address associated with hostname|NameResolutionError",
    re.IGNORECASE,
)
_TLS_TRUST = re.compile(
    r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|self[- ]signed certificate|unable to get local issuer|"
    r"SSLCertVerificationError",
    re.IGNORECASE,
)
_REFUSED = re.compile(r"Connection refused|\[Errno 111\]|actively refused|ECONNREFUSED", re.IGNORECASE)
_PROXY = re.compile(r"Unable to connect to proxy|Cannot connect to proxy|Tunnel connection failed", re.IGNORECASE)


def classify_token_error(message: str) -> Failure | None:
    """The failure behind a token request's error text, or None when it is none of the network kinds. The proxy
    first: its own name failing to resolve, or refusing, says so inside a proxy error."""
    if _PROXY.search(message):
        return Failure.PROXY
    if _DNS.search(message):
        return Failure.AUTHORITY_DNS
    if _TLS_TRUST.search(message):
        return Failure.AUTHORITY_TLS
    if _REFUSED.search(message):
        return Failure.AUTHORITY_REFUSED
    return None


def for_token_error(message: str, identity: str, env_file: str = "") -> str:
    """The fix for a failed token request of ``identity`` (its error text as azure-identity gave it); ``env_file``:
    the daemon's environment file, named when the fix is there (a proxy setting)."""
    kind = classify_token_error(message)
    if kind is None:
        return f"check the identity's settings in [identities.{identity}] (tenant, client id, secret) and the network"
    return fix(kind, identity=identity, path=env_file)


def is_group(user: str) -> bool:
    """Whether a target's ``user`` reads as a group's display name rather than a UPN (people and guests have an
    ``@``) — a guess for advice only: an application's display name reads the same."""
    return "@" not in user


def classify_login_error(message: str) -> Failure | None:
    """The failure behind a PostgreSQL login's error text (libpq's, psql's, the server's), or None."""
    if re.search(r"could not translate host name|Name or service not known|nodename nor servname", message):
        return Failure.SERVER_DNS
    if _TLS_TRUST.search(message) or "root certificate file" in message:
        return Failure.SERVER_TLS
    if re.search(r"server does not support SSL|does not offer TLS", message):
        return Failure.SERVER_NO_TLS
    if _REFUSED.search(message):
        return Failure.SERVER_REFUSED
    if re.search(r"password authentication failed|authentication failed for user", message):
        return Failure.LOGIN_REFUSED
    return None


def for_login_error(message: str, target: str, host: str, user: str, config: str = "") -> str:
    """The fix for a failed PostgreSQL login to ``target`` (``host``, as ``user``): the same words whichever of the
    proxy, doctor and admin saw it. A refused login as a group asks whether the identity is a member."""
    kind = classify_login_error(message)
    if kind is None:
        return "see the reason; `tokend status` shows the identity's state"
    if kind is Failure.LOGIN_REFUSED and is_group(user):
        kind = Failure.GROUP_LOGIN_REFUSED
    return fix(kind, target=target, host=host, user=user, config=config)


def server_tls(target: str, host: str) -> str:
    """The fix when the PostgreSQL server's certificate is not trusted (the proxy's upstream, admin, doctor)."""
    return fix(Failure.SERVER_TLS, target=target, host=host)


def other_account(principal: str, user: str) -> bool:
    """Whether a token for ``principal`` cannot be the target's ``user``: both read as UPNs and differ (case does
    not count: Entra's UPNs are case-insensitive). A group or an application's name is never judged here."""
    if not principal or "@" not in principal or "@" not in user or "#" in principal + user:
        return False  # a guest's names (``live.com#…``, ``…#EXT#@…``) take forms that cannot be compared here
    return principal.casefold() != user.casefold()
