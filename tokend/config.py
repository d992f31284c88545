"""config.toml → frozen, validated dataclasses. Every error names the file, the key and the fix.

The shape is the contract in DESIGN.md. Secrets never sit in the config: a client secret is named by the
environment variable or the file that holds it (or kept in the OS keychain), a certificate by its path.
"""

from __future__ import annotations

import math
import os
import re
import string
import sys
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tokend.clouds import CLOUDS, Cloud
from tokend.errors import ConfigError, UsageError
from tokend.kinds import COMMON_IDENTITY_KEYS, SINKS, SOURCES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_TARGET_KEYS = {
    "host",
    "port",
    "database",
    "user",
    "identity",
    "sinks",
    "listen",
    "sslrootcert",
    "allow_any_local_user",
    "application_name",
}
_LISTEN = re.compile(r"^(?:unix:(\d+)|(127\.0\.0\.1|localhost):(\d+)|\[::1\]:(\d+))$")
_HOST_WITH_PORT = re.compile(r"^(\[[^\]]*\]|[^:\[\]]+):(\d+)$")
_REFRESH_KEYS = {"margin"}
_TOP_KEYS = {"identities", "targets", "sinks", "refresh", "observe", "proxy"}
_PROXY_KEYS = {"audit_log"}
_OBSERVE_KEYS = {"listen"}
_ADDRESS = re.compile(r"^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+|localhost)):(\d{1,5})$")
OBSERVE_ENV = "TOKEND_OBSERVE_LISTEN"  # overrides [observe] listen (containers: the pod's address for probes)
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")
# [refresh] margin, seconds: under 10 s a token could expire before its successor arrives; no Entra token lives a day
# (managed identity's ~24 h ones say when to refresh), so a larger margin would mean nothing
MARGIN_BOUNDS = (10.0, 86400.0)
PRINCIPAL = "@principal"  # a target's user that is the signed-in principal's own role name (tokend.principal)
# [targets.NAME] application_name: what the proxy's sessions show the server (``tokend.proxy.audit``)
DEFAULT_APPLICATION_NAME = "{client} ({principal} via tokend)"
APPLICATION_NAME_FIELDS = ("client", "principal")


@dataclass(frozen=True)
class IdentityConfig:
    name: str
    source: str
    cloud: Cloud
    resource: str
    config_path: Path  # the config file it comes from: sign-in records and caches are kept per config
    tenant_id: str | None = None
    client_id: str | None = None
    authority_override: str | None = None
    client_secret_env: str | None = None
    client_secret_file: Path | None = None  # a mounted secret (Kubernetes, Docker), read at each token request
    client_secret_keychain: bool = False  # client_secret = "keychain": `tokend secret set NAME` put it there
    certificate_path: Path | None = None
    ca_bundle: Path | None = None  # the CA file (PEM) Entra's TLS is verified with, instead of the system's
    token_file: Path | None = None
    allow_unencrypted_cache: bool = False
    principal_name: str | None = None  # an app's or managed identity's role name, for user = "@principal"

    @property
    def authority(self) -> str:
        return self.authority_override or self.cloud.authority


@dataclass(frozen=True)
class Listen:
    """One address of the local proxy: a Unix socket ``.s.PGSQL.PORT`` (``unix``), or loopback TCP."""

    unix: bool
    host: str  # "" for a Unix socket; "127.0.0.1" or "::1"
    port: int

    def __str__(self) -> str:
        return (
            f"unix:{self.port}"
            if self.unix
            else f"{self.host}:{self.port}"
            if ":" not in self.host
            else f"[{self.host}]:{self.port}"
        )


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    port: int
    database: str  # "*": any database
    user: str
    identity: str
    sinks: tuple[str, ...]
    listen: tuple[Listen, ...] = ()  # the local proxy's addresses for this target
    sslrootcert: Path | None = None  # the CA file the proxy verifies the server with (default: the system's)
    allow_any_local_user: bool = False  # the proxy's TCP listeners admit every local user (no owner check)
    # user = "@principal": the identity's principal_name, the role name when the token is an app's (tokend.principal)
    principal_name: str | None = None
    # the proxy's sessions' application_name (``tokend.proxy.audit``): a format, or None to pass the client's own
    application_name: str | None = DEFAULT_APPLICATION_NAME

    def as_dict(self) -> dict[str, Any]:
        """The target as status, IPC answers and scripts see it."""
        return {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "user": self.user,
            "identity": self.identity,
        }


@dataclass(frozen=True)
class SinkConfig:
    kind: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Config:
    path: Path
    identities: Mapping[str, IdentityConfig]
    targets: Mapping[str, Target]
    sinks: Mapping[str, SinkConfig]
    refresh_margin: float = 240.0
    observe: Listen | None = None  # where /healthz, /readyz and /metrics are served
    audit_log: bool = True  # [proxy] audit_log: a JSON line per proxy session in the audit log (tokend.logs)

    def targets_of(self, identity: str) -> list[Target]:
        return [t for t in self.targets.values() if t.identity == identity]

    def target(self, name: str | None) -> Target:
        """The target called ``name``, or the only one when no name is given. UsageError names the choices."""
        names = ", ".join(self.targets) or "none"
        if name is None:
            if len(self.targets) == 1:
                return next(iter(self.targets.values()))
            example = next(iter(self.targets), "TARGET")
            raise UsageError(f"name a target (configured in {self.path}: {names}); e.g. tokend token {example}")
        if name not in self.targets:
            raise UsageError(f"no target {name!r} in {self.path} (configured: {names})")
        return self.targets[name]


def load(path: Path) -> Config:
    """Read and validate the config at ``path``. Raises ConfigError with file, key and fix."""
    path = Path(path).expanduser()
    return decode(read(path), path)


def read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            path, "", "no such file; create it with `tokend init` (see README, 'Config') or pass --config PATH"
        ) from None
    except IsADirectoryError:
        raise ConfigError(path, "", "is a folder, not a file; pass the config file's path with --config") from None
    except OSError as e:
        raise ConfigError(path, "", f"cannot read it ({_reason(e)}); check its permissions") from None


def decode(data: bytes, path: Path) -> Config:
    """Validate the bytes of the config file at ``path``."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            path, "", f"line {line} is not UTF-8 (byte 0x{data[e.start]:02x}); save the file as UTF-8"
        ) from None
    return parse(text, path)


def parse(text: str, path: Path) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"not valid TOML: {e}; fix the syntax there") from None
    except RecursionError:
        raise ConfigError(path, "", "nested too deeply to be a tokend config; see README, 'Config'") from None
    _only(raw, _TOP_KEYS, path, "")
    identities = {
        name: _identity(name, body, path)
        for name, body in _tables(raw.get("identities", {}), path, "identities").items()
    }
    sinks = _sinks(raw.get("sinks", {}), path)
    targets = {
        name: _target(name, body, path, identities)
        for name, body in _tables(raw.get("targets", {}), path, "targets").items()
    }
    taken: dict[Listen, str] = {}
    for t in targets.values():
        for a in t.listen:
            if a in taken:
                raise ConfigError(
                    path,
                    f"targets.{t.name}.listen",
                    f"{a} is already the proxy of target {taken[a]}; give each target its own port",
                )
            taken[a] = t.name
    refresh = _table(raw.get("refresh", {}), path, "refresh")
    _only(refresh, _REFRESH_KEYS, path, "refresh")
    margin = _duration(refresh.get("margin", 240), path, "refresh.margin", *MARGIN_BOUNDS)
    observe = _table(raw.get("observe", {}), path, "observe")
    _only(observe, _OBSERVE_KEYS, path, "observe")
    listen = os.environ.get(OBSERVE_ENV) or _str(observe, "listen", path, "observe")
    where = (
        _address(listen, path, "observe.listen" if not os.environ.get(OBSERVE_ENV) else f"${OBSERVE_ENV}")
        if listen
        else None
    )
    proxy = _table(raw.get("proxy", {}), path, "proxy")
    _only(proxy, _PROXY_KEYS, path, "proxy")
    audit_log = proxy.get("audit_log", True)
    if not isinstance(audit_log, bool):
        raise ConfigError(path, "proxy.audit_log", f"expected true or false, got {audit_log!r}")
    return Config(
        path,
        MappingProxyType(identities),
        MappingProxyType(targets),
        MappingProxyType(sinks),
        margin,
        where,
        audit_log,
    )


def _address(text: str, path: Path, key: str) -> Listen:
    """ "host:port" with an IP address (IPv6 in brackets) or localhost."""
    m = _ADDRESS.match(text.strip())
    if m is None or not 0 < int(m[3]) < 65536:
        raise ConfigError(
            path, key, f'{text!r}: write "127.0.0.1:9464" (an IP address and a port; "[::1]:9464" for IPv6)'
        )
    host = m[1] or m[2]
    return Listen(False, "127.0.0.1" if host == "localhost" else host, int(m[3]))


def _identity(name: str, body: dict[str, Any], path: Path) -> IdentityConfig:
    where = f"identities.{name}"
    source = _str(body, "source", path, where, required=True)
    if source not in SOURCES:
        raise ConfigError(path, f"{where}.source", f"unknown source {source!r}; use one of: {', '.join(SOURCES)}")
    kind = SOURCES[source]
    _only(body, COMMON_IDENTITY_KEYS | kind.keys, path, where)
    for key in sorted(kind.required):
        _str(body, key, path, where, required=True)
    cloud_name = _str(body, "cloud", path, where) or "public"
    if cloud_name not in CLOUDS:
        raise ConfigError(path, f"{where}.cloud", f"unknown cloud {cloud_name!r}; use one of: {', '.join(CLOUDS)}")
    cloud = CLOUDS[cloud_name]
    authority = _str(body, "authority", path, where)
    if authority and authority.startswith("http://"):
        raise ConfigError(path, f"{where}.authority", "must be https (Entra and MSAL accept no plain http)")
    resource = _str(body, "resource", path, where) or cloud.resource
    secret_env = _str(body, "client_secret_env", path, where)
    secret_file = _str(body, "client_secret_file", path, where)
    in_keychain = _str(body, "client_secret", path, where)
    if in_keychain is not None and in_keychain != "keychain":
        raise ConfigError(
            path,
            f"{where}.client_secret",
            'the only value is "keychain" (put the secret there with `tokend secret set '
            f"{name}`); a secret itself never goes in the config: use client_secret_env or client_secret_file",
        )
    cert = _str(body, "certificate_path", path, where)
    # Whether the secret's variable, file or keychain entry is there is the identity's business, not the config's:
    # commands that only read names and hosts (status, doctor, clients, completion) work in a shell that does not
    # hold the secret, and the daemon shows a missing secret as that identity's problem.
    given = [
        k
        for k, v in (
            ("client_secret_env", secret_env),
            ("client_secret_file", secret_file),
            ("client_secret", in_keychain),
            ("certificate_path", cert),
        )
        if v
    ]
    if source == "service-principal" and len(given) != 1:
        raise ConfigError(
            path,
            where,
            "set exactly one of client_secret_env (an environment variable's name), client_secret_file (a mounted "
            'secret\'s path), client_secret = "keychain" or certificate_path'
            + (f" (this table sets {', '.join(given)})" if given else ""),
        )
    ca_bundle = _str(body, "ca_bundle", path, where)
    if ca_bundle and not Path(ca_bundle).expanduser().is_file():
        raise ConfigError(
            path, f"{where}.ca_bundle", f"no file at {ca_bundle}; give the path of the CA certificates (PEM) to trust"
        )
    token_file = _str(body, "token_file", path, where)
    unencrypted = body.get("allow_unencrypted_cache", False)
    if not isinstance(unencrypted, bool):
        raise ConfigError(path, f"{where}.allow_unencrypted_cache", f"expected true or false, got {unencrypted!r}")
    return IdentityConfig(
        name=name,
        source=source,
        cloud=cloud,
        resource=resource,
        config_path=path,
        tenant_id=_str(body, "tenant_id", path, where),
        client_id=_str(body, "client_id", path, where),
        authority_override=authority,
        client_secret_env=secret_env,
        client_secret_file=Path(secret_file).expanduser() if secret_file else None,
        client_secret_keychain=in_keychain is not None,
        certificate_path=Path(cert).expanduser() if cert else None,
        ca_bundle=Path(ca_bundle).expanduser().absolute() if ca_bundle else None,
        token_file=Path(token_file).expanduser() if token_file else None,
        allow_unencrypted_cache=unencrypted,
        principal_name=_principal_name(body, path, where),
    )


def _principal_name(body: dict[str, Any], path: Path, where: str) -> str | None:
    name = _field(body, "principal_name", path, where)  # it goes into pgpass lines, as a target's user does
    if name is not None and name.startswith("@"):
        raise ConfigError(
            path,
            f"{where}.principal_name",
            "give the app's or managed identity's display name exactly as Entra shows it",
        )
    return name


def _target(name: str, body: dict[str, Any], path: Path, identities: Mapping[str, IdentityConfig]) -> Target:
    where = f"targets.{name}"
    _only(body, _TARGET_KEYS, path, where)
    host = _host(body, path, where)
    user = _field(body, "user", path, where, required=True)
    assert user is not None
    if user == "*":
        raise ConfigError(
            path,
            f"{where}.user",
            "must name one user (the group's display name, a UPN, or an identity's name), not the wildcard *",
        )
    if user != PRINCIPAL and user.casefold() == PRINCIPAL:
        raise ConfigError(
            path, f"{where}.user", f'write "{PRINCIPAL}" exactly (lower case) for the signed-in principal'
        )
    identity = _str(body, "identity", path, where)
    if identity is None:
        if len(identities) != 1:
            raise ConfigError(path, f"{where}.identity", "missing; name one of the [identities.*] tables")
        identity = next(iter(identities))
    if identity not in identities:
        known = ", ".join(identities) or "none defined"
        raise ConfigError(
            path,
            f"{where}.identity",
            f"no identity named {identity!r} (known: {known}); add [identities.{identity}] or fix the name",
        )
    ic = identities[identity]
    if user == PRINCIPAL and not SOURCES[ic.source].person and ic.principal_name is None:
        raise ConfigError(
            path,
            f"identities.{identity}.principal_name",
            f'missing: target {name} has user = "{PRINCIPAL}" and identity {identity} ({ic.source}) is an app or '
            'managed identity, whose role name its token does not carry; add principal_name = "…" (its display '
            "name in Entra, the name of its PostgreSQL role)",
        )
    port = body.get("port", 5432)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(path, f"{where}.port", f"expected a whole number from 1 to 65535, got {port!r}")
    database = _field(body, "database", path, where) or "*"
    sinks = body.get("sinks", ["pgpass"])
    if not isinstance(sinks, list) or not all(isinstance(s, str) for s in sinks):
        raise ConfigError(path, f"{where}.sinks", f'expected a list of sink names like ["pgpass"], got {sinks!r}')
    for s in sinks:
        if s not in SINKS:
            raise ConfigError(path, f"{where}.sinks", f"unknown sink {s!r}; use one of: {', '.join(SINKS)}")
    listen = _listen(body.get("listen", []), path, f"{where}.listen")
    cert = _str(body, "sslrootcert", path, where)
    if cert and not Path(cert).expanduser().is_file():
        raise ConfigError(path, f"{where}.sslrootcert", f"no file at {cert}; give the CA certificate's path (PEM)")
    anyone = body.get("allow_any_local_user", False)
    if not isinstance(anyone, bool):
        raise ConfigError(path, f"{where}.allow_any_local_user", f"expected true or false, got {anyone!r}")
    appname = _application_name(body.get("application_name", True), path, f"{where}.application_name")
    return Target(
        name,
        host,
        port,
        database,
        user,
        identity,
        tuple(dict.fromkeys(sinks)),
        listen,
        Path(cert).expanduser() if cert else None,
        anyone,
        ic.principal_name if user == PRINCIPAL else None,
        application_name=appname,
    )


def _application_name(value: object, path: Path, key: str) -> str | None:
    """The proxy's application_name format: true (the default's), false (None: the client's own, untouched) or a
    format with {client} and {principal}."""
    if value is True:
        return DEFAULT_APPLICATION_NAME
    if value is False:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, key, f'expected false or a format like "{DEFAULT_APPLICATION_NAME}", got {value!r}')
    why = format_error(value)
    if why:
        raise ConfigError(path, key, f'{why}, as in "{DEFAULT_APPLICATION_NAME}"')
    return value


def _listen(raw: object, path: Path, key: str) -> tuple[Listen, ...]:
    """The proxy's addresses: "unix:PORT", "127.0.0.1:PORT" or "[::1]:PORT". Loopback only: a proxy on a network
    interface would let anyone who reaches it log in with your token."""
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ConfigError(path, key, f'expected a list like ["unix:6432", "127.0.0.1:6432"], got {raw!r}')
    out = []
    for text in raw:
        m = _LISTEN.match(text.strip())
        if m is None:
            raise ConfigError(
                path,
                key,
                f'{text!r}: write "unix:PORT", "127.0.0.1:PORT" or "[::1]:PORT" (the '
                "proxy listens on this machine only)",
            )
        port = int(m[1] or m[3] or m[4])
        if not 0 < port < 65536:
            raise ConfigError(path, key, f"{text!r}: the port must be from 1 to 65535")
        out.append(Listen(True, "", port) if m[1] else Listen(False, "::1" if m[4] else "127.0.0.1", port))
    return tuple(dict.fromkeys(out))


def _host(body: Mapping[str, Any], path: Path, where: str) -> str:
    """A host name or address exactly as libpq will be given it (pgpass matches it literally)."""
    host = _field(body, "host", path, where, required=True)
    assert host is not None
    key = f"{where}.host"
    if "://" in host:
        raise ConfigError(
            path,
            key,
            f'{host!r} is a URL; write only the server\'s name, e.g. host = "contoso.postgres.database.azure.com"',
        )
    if m := _HOST_WITH_PORT.match(host):
        name = m[1].strip("[]")
        raise ConfigError(path, key, f"{host!r} holds a port; write host = {name!r} and port = {m[2]}")
    if host.startswith("/"):
        raise ConfigError(
            path,
            key,
            "a Unix socket folder; tokend serves TCP servers (libpq matches socket connections in pgpass as localhost)",
        )
    if host == "*" or any(c in host for c in " ,\\"):
        raise ConfigError(
            path,
            key,
            f"{host!r} is not one server name; write the host exactly as clients "
            "connect to it (one name, no spaces, commas or wildcards)",
        )
    return host


def _sinks(raw: object, path: Path) -> dict[str, SinkConfig]:
    tables = _tables(raw, path, "sinks")
    out = {}
    for kind in SINKS.values():
        where = f"sinks.{kind.name}"
        body = tables.pop(kind.name, {})
        _only(body, kind.keys, path, where)
        for key in body:
            _str(body, key, path, where)  # every sink option is a non-empty string (paths)
        out[kind.name] = SinkConfig(kind.name, MappingProxyType(dict(body)))
    for name in tables:
        raise ConfigError(path, f"sinks.{name}", f"unknown sink; use one of: {', '.join(SINKS)}")
    return out


def parse_duration(value: object, least: float = 0.0, most: float = 86400.0) -> float:
    """Seconds from 90, 90.5, "90s", "10m" or "1h", between ``least`` and ``most`` seconds (the caller states what
    makes sense for its key). ValueError on anything else: a negative, NaN, an infinity, a number too large for a
    float, a duration out of those bounds."""
    if isinstance(value, bool):
        raise ValueError(value)
    try:
        if isinstance(value, (int, float)):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION.match(value)):
            seconds = float(m[1]) * {"s": 1, "m": 60, "h": 3600}[m[2] or "s"]
        else:
            raise ValueError(value)
    except OverflowError:  # an integer beyond any float
        raise ValueError(value) from None
    if not (math.isfinite(seconds) and least <= seconds <= most):  # NaN fails every comparison: refused too
        raise ValueError(value)
    return seconds


def _duration(value: object, path: Path, key: str, least: float, most: float) -> float:
    try:
        return parse_duration(value, least, most)
    except ValueError:
        raise ConfigError(
            path,
            key,
            f'bad duration {value!r}; write seconds or "90s", "10m", "1h", from {_human(least)} to {_human(most)}',
        ) from None


def _human(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _tables(raw: object, path: Path, where: str) -> dict[str, dict[str, Any]]:
    table = _table(raw, path, where)
    for name, body in table.items():
        if not _NAME.match(name):
            raise ConfigError(path, f"{where}.{name}", "names use letters, digits, '_', '-' and '.' (at most 64)")
        _table(body, path, f"{where}.{name}")
    return table


def _table(raw: object, path: Path, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(path, where, f"expected a table ([{where}]), got {type(raw).__name__}")
    return raw


def _only(body: Mapping[str, Any], allowed: AbstractSet[str], path: Path, where: str) -> None:
    for key in body:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            raise ConfigError(path, f"{prefix}{key}", f"unknown key; allowed here: {', '.join(sorted(allowed))}")


def _str(body: Mapping[str, Any], key: str, path: Path, where: str, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ConfigError(path, f"{where}.{key}", "missing; it is required here")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, f"{where}.{key}", f"expected a non-empty string, got {value!r}")
    return value


def _field(body: Mapping[str, Any], key: str, path: Path, where: str, required: bool = False) -> str | None:
    """A connection field that goes into a pgpass line: no control characters, no leading '#'."""
    value = _str(body, key, path, where, required)
    if value is not None and (value.startswith("#") or any(ord(c) < 32 or ord(c) == 127 for c in value)):
        raise ConfigError(
            path,
            f"{where}.{key}",
            "must not start with '#' or hold control characters (libpq could not match it in pgpass)",
        )
    return value


def format_error(fmt: str) -> str:
    """Why ``fmt`` is not an application_name format ("" when it is one): only ``{client}`` and ``{principal}``,
    with no conversion or format spec; a literal brace is written twice."""
    try:
        parts = list(string.Formatter().parse(fmt))
    except ValueError as e:
        return f"{e} (write a literal brace twice: {{{{ or }}}})"
    for _, name, spec, conversion in parts:
        if name is not None and (name not in APPLICATION_NAME_FIELDS or spec or conversion):
            return f"unknown field {{{name}}}; the fields are {{client}} and {{principal}}"
    return ""


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or type(e).__name__
