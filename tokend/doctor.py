"""`tokend doctor`: every check with ok / warn / fail, the evidence, and the exact fix.

Checks, in order: the config; the daemon; each identity (its token: principal, tenant, expiry; the audience is the
cloud's ossrdbms resource) — as the running daemon holds it, so doctor needs no secret in your shell — or fetched
here when no daemon runs; each sink kind, as the sink explains itself (``Sink.diagnose``: pgpass exists, is 0600,
has tokend's block first and no line above it that shadows a target; the keychain is usable; …);
the libpq of psql and of psycopg (13+ reads long pgpass lines; older ones truncate silently); each server (resolves,
accepts TCP, speaks TLS; at most ``MAX_SERVERS``, checked side by side); optionally a real login per target; the
login service.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tokend import access, advice, config, diagnose, envfile, ipc, paths, principal, service, sinks
from tokend.config import PRINCIPAL, Config, Target
from tokend.errors import ConfigError, DaemonNotRunning, IdentityUnavailable, LoginRequired, TokendError
from tokend.findings import Finding, failed
from tokend.kinds import SINKS
from tokend.pg import login, wire
from tokend.pg import tls as pgtls
from tokend.sinks import pgpass
from tokend.status import plural
from tokend.token import Token, display_claims, expiry

MAX_SERVERS = 50  # servers (host, port) whose network and TLS doctor checks; more are named as not checked


Check = Finding  # doctor's name for a finding


Connect = Callable[[Path], ipc.Client]  # config path -> a client of its daemon (the CLI's Context.ipc_client)


def run(config_path: Path, login: bool = False, connect: Connect = ipc.Client) -> list[Check]:

    checks: list[Check] = []
    try:
        cfg = config.load(config_path)
    except ConfigError as e:
        return [
            Check("config", "fail", str(e), "fix the file as the message says, or pass --config PATH"),
            _daemon(config_path, connect)[0],
        ]
    checks.append(
        Check(
            "config",
            "ok",
            f"{config_path}: {plural(len(cfg.identities), 'identity', 'identities')}, "
            f"{plural(len(cfg.targets), 'target')}",
        )
    )
    daemon_check, status = _daemon(config_path, connect)
    checks.append(daemon_check)
    checks += _identities(cfg, config_path, status, connect)
    checks += _followers(cfg, status)
    checks += _sinks(cfg, status)
    checks += _libpq()
    checks += _servers(list(cfg.targets.values()), login, lambda t: _login_explained(cfg, status, t, connect))
    checks += _proxies(cfg, status, login)
    checks.append(_service(config_path))
    return checks


@dataclass(frozen=True)
class Request:
    """``tokend doctor``: the config to check; ``login``: also log in to each target (through pgpass, the proxy)."""

    config: Path
    login: bool = False


def command(request: Request, connect: Connect = ipc.Client) -> list[Check]:
    """``tokend doctor``: every check, in order (the CLI shows them and exits 1 when any failed); ``connect`` asks
    the daemon."""
    return run(request.config, login=request.login, connect=connect)


def as_json(checks: list[Check]) -> dict[str, Any]:
    return {"ok": not failed(checks), "checks": [c.as_dict() for c in checks]}


def render(checks: list[Check], paint: Callable[[str, str], str]) -> str:
    """The checks for people: a mark, the name, the evidence, and the fix under each one that is not ok."""
    marks = {"ok": paint("✓", "32"), "warn": paint("!", "33"), "fail": paint("✗", "31")}
    width = max([28, *(len(c.name) for c in checks)])
    lines = []
    for c in checks:
        lines.append(f"{marks[c.status]} {c.name:<{width}} {c.evidence}")
        if c.fix and c.status != "ok":
            lines.append(f"  {'':<{width}} fix: {c.fix}")
    return "\n".join(lines)


def _daemon(config_path: Path, connect: Connect) -> tuple[Check, dict[str, Any] | None]:
    client = connect(config_path)
    client.timeout = 30  # a daemon of 10,000 targets takes seconds to say all of them
    where = client.endpoint.describe()
    try:
        status = client.status()
    except DaemonNotRunning:
        return Check(
            "daemon",
            "fail",
            f"no daemon answers at {where}",
            advice.fix(advice.Failure.NO_DAEMON, config=str(config_path)),
        ), None
    except TokendError as e:
        return Check(
            "daemon", "fail", f"the daemon at {where} answered with an error: {e}", "see `tokend service logs`"
        ), None
    return Check("daemon", "ok", f"pid {status['pid']}, running since {time.ctime(status['started_at'])}"), status


def _identities(cfg: Config, config_path: Path, status: dict[str, Any] | None, connect: Connect) -> list[Check]:

    held = {i["name"]: i for i in (status or {}).get("identities", [])}
    out = []
    for name, ic in cfg.identities.items():
        users = cfg.targets_of(name)
        if not users:
            continue
        try:
            if status is not None:
                token = _token_from_daemon(connect(config_path), users[0], held.get(name))
            else:
                token = access.fetch_here(ic)
        except LoginRequired as e:
            out.append(
                Check(f"identity {name}", "fail", f"sign-in needed: {e}", _fix_from(str(e)) or f"tokend login {name}")
            )
            continue
        except IdentityUnavailable as e:
            out.append(
                Check(f"identity {name}", "fail", f"cannot be used here: {e}", _unavailable_fix(ic.source, str(e)))
            )
            continue
        except ConfigError as e:  # the daemon's environment file, refused: its own line says the fix
            out.append(Check(f"identity {name}", "fail", f"no token: {e}", "fix the file as the message says"))
            continue
        except TokendError as e:
            out.append(
                Check(
                    f"identity {name}",
                    "fail",
                    f"no token: {e}",
                    advice.for_token_error(str(e), name, str(envfile.path_for(config_path))),
                )
            )
            continue
        c = token.claims
        left = token.expires_on - time.time()
        out.append(
            Check(
                f"identity {name}",
                "ok",
                f"{token.principal} in tenant {c.get('tid', '?')}, token expires in {left / 60:.0f} m ({ic.source})",
            )
        )
        out += _accounts(token.principal, users)
        aud = c.get("aud", "").rstrip("/")
        if aud == ic.cloud.resource:
            out.append(Check(f"identity {name} audience", "ok", aud))
        else:
            out.append(
                Check(
                    f"identity {name} audience",
                    "fail",
                    f"the token is for {aud!r}, the servers of cloud {ic.cloud.name} want {ic.cloud.resource!r}",
                    f"remove `resource` from [identities.{name}] or set cloud to the servers' cloud",
                )
            )
    return out


def _accounts(principal: str, users: list[Target]) -> list[Check]:
    """A target whose ``user`` is a person (a UPN) other than the one the identity is signed in as: the server
    will refuse the token, however fresh (an `az login` as another account)."""
    return [
        Check(
            f"target {t.name} user",
            "fail",
            f"the identity {t.identity} is signed in as {principal}, the target logs in as {t.user}",
            advice.fix(advice.Failure.OTHER_ACCOUNT, target=t.name, user=t.user, principal=principal),
        )
        for t in users
        if advice.other_account(principal, t.user)
    ]


def _unavailable_fix(source: str, reason: str) -> str:
    if source == "azure-cli" and "not found" in reason.lower():
        return "install the Azure CLI (https://aka.ms/azure-cli), then `az login`"
    if "environment variable" in reason:
        return "export the variable where the daemon runs (its service environment), then restart it"
    return "see the evidence"


def _token_from_daemon(client: ipc.Client, target: Target, held: dict[str, Any] | None) -> Token:
    """The token the daemon holds for ``target``'s identity; raises the identity's own state when it holds none."""
    try:
        answer = client.token(target.name)
    except TokendError as e:
        state, reason = (held or {}).get("state"), (held or {}).get("last_error") or str(e)
        if state == "login-required":
            raise LoginRequired(reason) from None
        if state == "unavailable":
            raise IdentityUnavailable(reason) from None
        raise TokendError(f"the daemon holds none ({state or '?'}: {reason})") from None
    return Token(
        answer.token, expiry(answer.token) or answer.expires_on, time.time(), None, display_claims(answer.token)
    )


def _fix_from(message: str) -> str:
    m = re.search(r"fix: (.*)$", message)
    return m[1] if m else ""


def _sinks(cfg: Config, status: dict[str, Any] | None) -> list[Check]:
    """Every sink kind explains itself (``Sink.diagnose``) for the targets that use it, with what the daemon says
    of it per target."""
    owner = paths.config_id(cfg.path)
    said = _resolved_users(status)
    out: list[Check] = []
    for kind in SINKS:
        users = [_as_resolved(t, said.get(t.name)) for t in cfg.targets.values() if kind in t.sinks]
        reported = None
        if status is not None:
            reported = {t["name"]: t["sinks"][kind] for t in status.get("targets", []) if kind in t["sinks"]}
        out += sinks.build(kind, cfg.sinks[kind].options, owner).diagnose(users, reported)
    return out


def _followers(cfg: Config, status: dict[str, Any] | None) -> list[Check]:
    """Each ``user = "@principal"`` target and who it is now, as the daemon resolved it from its token."""
    said = _resolved_users(status)
    out = []
    for t in cfg.targets.values():
        if not principal.follows(t):
            continue
        name, user = f"target {t.name} user", said.get(t.name)
        if user:
            out.append(Check(name, "ok", f"{PRINCIPAL} → {user}"))
        elif status is None:
            out.append(Check(name, "warn", f"{PRINCIPAL}: resolved when the daemon holds a token", "start the daemon"))
        else:
            out.append(
                Check(
                    name,
                    "fail",
                    f"{PRINCIPAL}: not resolved (identity {t.identity} holds no token, or an app's whose name the "
                    "config does not give)",
                    f"see the identity's check above; an app or managed identity needs principal_name in "
                    f"[identities.{t.identity}]",
                )
            )
    return out


def _resolved_users(status: dict[str, Any] | None) -> dict[str, str | None]:
    """Each target's user as the daemon resolved it (status's ``resolved_user``), by target name."""
    return {x["name"]: x.get("resolved_user") for x in (status or {}).get("targets", [])}


def _as_resolved(t: Target, said: str | None) -> Target:
    """``t`` with the user the daemon resolved for it (``user = "@principal"``: status's ``resolved_user``)."""
    return replace(t, user=said) if principal.follows(t) and said else t


def _libpq() -> list[Check]:
    out = []
    psql = shutil.which("psql")
    if psql:
        text = subprocess.run([psql, "--version"], capture_output=True, text=True).stdout.strip()
        m = re.search(r"(\d+)(?:\.(\d+))?", text)
        major = int(m[1]) if m else 0
        out.append(pgpass.libpq_finding("psql's libpq", major, text))
    try:
        import psycopg  # optional: doctor reports its libpq only where psycopg is installed

        v = psycopg.pq.version()
        out.append(pgpass.libpq_finding("psycopg's libpq", v // 10000, f"libpq {v // 10000}.{v % 10000 // 100}"))
    except ImportError:
        pass
    return out


def _servers(targets: list[Target], login: bool, check_login: Callable[[Target], Check] | None = None) -> list[Check]:
    """Network and TLS checks per server (and logins per target: ``check_login``, default ``_login``), side by
    side, for at most MAX_SERVERS servers."""
    servers: dict[tuple[str, int], Target] = {}
    for t in targets:
        servers.setdefault((t.host, t.port), t)
    chosen = list(servers.values())[:MAX_SERVERS]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(_network, chosen))
        logins = (
            list(
                pool.map(
                    check_login or _login,
                    [
                        t
                        for t in targets
                        if "pgpass" in t.sinks and (t.host, t.port) in {(c.host, c.port) for c in chosen}
                    ],
                )
            )
            if login
            else []
        )
    checks = [c for r in results for c in r] + logins
    if len(servers) > MAX_SERVERS:
        checks.append(
            Check(
                "servers",
                "warn",
                f"checked {MAX_SERVERS} of {len(servers)} servers",
                "the others are not checked here; `tokend doctor` with a config of fewer servers checks them",
            )
        )
    return checks


def _network(t: Target, timeout: float = 5.0) -> list[Check]:
    """Resolves, accepts TCP, speaks TLS (the one login's first part, ``sslmode=require``: doctor asks whether the
    server encrypts, the login checks say whether it verifies); ``timeout`` seconds for each of the three."""
    name = f"target {t.name}"
    try:
        infos = socket.getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return [
            Check(
                f"{name} host",
                "fail",
                f"{t.host} does not resolve ({e.strerror})",
                f"check the host name in [targets.{t.name}] and your DNS / VPN",
            )
        ]
    address = infos[0][4][0]
    try:
        sock = login.connect(t.host, t.port, timeout)
    except login.Unreachable as e:
        return [
            Check(f"{name} host", "ok", f"{t.host} is {address}"),
            Check(
                f"{name} port",
                "fail",
                f"{t.host}:{t.port} does not accept TCP ({e.reason})",
                "check the port, the server's firewall rules and that it is running",
            ),
        ]
    checks = [
        Check(f"{name} host", "ok", f"{t.host} is {address}"),
        Check(f"{name} port", "ok", f"{t.host}:{t.port} accepts TCP"),
    ]
    server = login.Blocking(sock, t.host, t.port, pgtls.context("require"))
    try:
        server.run(login.request_tls(t.host, t.port), timeout)
        version = server.sock.version() if isinstance(server.sock, ssl.SSLSocket) else None
    except login.NoTLS as e:
        return [*checks, Check(f"{name} tls", "fail", e.reason, "enable ssl on the server")]
    except login.TLSFailed as e:
        return [*checks, Check(f"{name} tls", "fail", f"TLS handshake failed ({e.reason})", "check the server's TLS")]
    except (login.LoginError, OSError, wire.ProtocolError) as e:
        return [
            *checks,
            Check(f"{name} tls", "fail", f"no answer to the TLS request ({e})", "is this a PostgreSQL server?"),
        ]
    finally:
        server.close()
    return [*checks, Check(f"{name} tls", "ok", f"{version} (sslmode=require)")]


def psql_login(t: Target, password: str | None = None, via: dict[str, Any] | None = None) -> tuple[bool, str] | None:
    """Log in to ``t`` with psql: with ``password``, else through pgpass — or through the proxy listener ``via``
    (``{"host", "port"}`` from status), with no password. (ok, current_user or the reason); None when there is no
    psql here."""
    psql = shutil.which("psql")
    if not psql:
        return None
    db = "postgres" if t.database == "*" else t.database
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    if password is not None:
        env["PGPASSWORD"] = password
    host, port, mode = (via["host"], via["port"], "prefer") if via else (t.host, t.port, "require")
    user = t.user.replace("\\", "\\\\").replace("'", "\\'")
    conninfo = f"host='{host}' port={port} dbname='{db}' user='{user}' sslmode={mode} connect_timeout=10"
    r = subprocess.run(
        [psql, conninfo, "-w", "-Atc", "select current_user"], capture_output=True, text=True, env=env, timeout=30
    )
    if r.returncode == 0:
        return True, r.stdout.strip()
    return False, (r.stderr.strip().splitlines() or ["?"])[-1]


def _login(t: Target) -> Check:
    result = psql_login(t)
    if result is None:
        return Check(f"target {t.name} login", "warn", "psql not found", "install a PostgreSQL client to test logins")
    ok, text = result
    if ok:
        return Check(f"target {t.name} login", "ok", f"logged in through pgpass as {text}")
    return Check(f"target {t.name} login", "fail", text, advice.for_login_error(text, t.name, t.host, t.user))


def _login_explained(cfg: Config, status: dict[str, Any] | None, t: Target, connect: Connect) -> Check:
    """``--login`` for one target through pgpass, as the user its token resolves to (``user = "@principal"``: the
    signed-in principal's own name); a refused login says why and what fixes it (``tokend.diagnose``)."""
    name = f"target {t.name} login"
    token, resolved = None, t
    if principal.follows(t):  # the token names the user; for other targets it is needed only on a refusal
        try:
            token = _login_token(cfg, status, t, connect)
        except TokendError as e:
            return Check(name, "fail", f"no token to log in with: {e}", "see the identity's check above")
        named = principal.resolved(t, token.claims)
        if named is None:
            return Check(name, "fail", principal.unresolved(t, token.claims), "name the app in the config")
        resolved = named
    result = psql_login(resolved)
    if result is None:
        return Check(name, "warn", "psql not found", "install a PostgreSQL client to test logins")
    ok, text = result
    shown = f" ({PRINCIPAL} → {resolved.user})" if principal.follows(t) else ""
    if ok:
        return Check(name, "ok", f"logged in through pgpass as {text}{shown}")
    try:
        token = token or _login_token(cfg, status, t, connect)
    except TokendError as e:
        return Check(name, "fail", f"{text} (no token to ask the server why: {e})", "see the identity's check above")
    found = diagnose.refused(cfg, resolved, token.value, text)
    return Check(name, "fail", f"{text}{shown}: {found.what}", found.fix)


def _login_token(cfg: Config, status: dict[str, Any] | None, t: Target, connect: Connect) -> Token:
    """The token ``--login`` logs in with: the daemon's when one runs (as pgpass holds it), else one fetched here."""
    if status is not None:
        held = {i["name"]: i for i in status.get("identities", [])}.get(t.identity)
        return _token_from_daemon(connect(cfg.path), t, held)
    return access.fetch_here(cfg.identities[t.identity])


def _proxies(cfg: Config, status: dict[str, Any] | None, login: bool) -> list[Check]:
    """Per target with listeners: whether each listens (from the daemon), and with --login a login through it."""
    said = {t["name"]: t.get("proxy") for t in (status or {}).get("targets", [])}
    out = []
    for t in cfg.targets.values():
        if not t.listen:
            continue
        name, proxy = f"target {t.name} proxy", said.get(t.name)
        if status is None or not proxy:
            out.append(
                Check(
                    name,
                    "fail",
                    "no listener: the daemon is not running this config",
                    advice.fix(advice.Failure.NO_DAEMON, config=str(cfg.path)),
                )
            )
            continue
        where = ", ".join(f"{a['host']}:{a['port']}" for a in proxy["listen"])
        if proxy.get("last_error"):
            out.append(Check(name, "fail", proxy["last_error"], f"choose a free port in [targets.{t.name}] listen"))
            continue
        out.append(Check(name, "ok", f"listens on {where} ({proxy['open']} open, {proxy['total']} so far)"))
        if login and proxy["listen"]:
            result = psql_login(t, via=proxy["listen"][0])
            if result is None:
                out.append(Check(f"{name} login", "warn", "psql not found", "install a PostgreSQL client"))
            elif result[0]:
                out.append(Check(f"{name} login", "ok", f"logged in through the proxy as {result[1]}"))
            else:
                out.append(
                    Check(f"{name} login", "fail", result[1], advice.for_login_error(result[1], t.name, t.host, t.user))
                )
    return out


def _service(config_path: Path) -> Check:

    try:
        running, text = service.status(config_path)
    except service.NoServiceManager as e:
        return Check(
            "service",
            "warn",
            f"the login service cannot be managed here: {e}",
            f"start tokend another way, e.g. from your login shell profile: "
            f"`tokend run --config {config_path} >/dev/null 2>&1 &`",
        )
    except TokendError as e:
        return Check("service", "warn", str(e), f"tokend service install --config {config_path}")
    first = (text.strip().splitlines() or [""])[0]
    if running:
        return Check("service", "ok", first)
    return Check(
        "service", "warn", f"not running as a login service: {first}", f"tokend service install --config {config_path}"
    )
