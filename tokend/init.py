"""`tokend init`: a working config without reading the docs.

Interactive when a terminal is attached (flags given are taken as answers), flag-driven otherwise. A bare server
name is completed with the cloud's suffix; an Azure CLI sign-in is detected and offered, else device-code sign-in.
Re-running adds a target (and an identity only when none fits) by appending to the file: what is there stays, byte
for byte. The result is checked with the real config loader before it is written, then a token proves the identity.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tokend import config as config_mod
from tokend import diagnose, identities, principal
from tokend import service as service_mod
from tokend.clouds import CLOUDS
from tokend.doctor import psql_login
from tokend.errors import IdentityUnavailable, TokendError, UsageError
from tokend.kinds import SOURCES
from tokend.sinks import atomic
from tokend.token import Token

Ask = Callable[[str, str], str]


FLAGS = (
    "server",
    "user",
    "identity",
    "cloud",
    "database",
    "port",
    "name",
    "tenant",
    "client_id",
    "client_secret_env",
    "certificate_path",
    "authority",
)  # `tokend init`'s flags, one per answer


@dataclass
class Answers:
    server: str | None = None
    user: str | None = None
    identity: str | None = None  # a source kind, or the name of an identity already in the config
    cloud: str | None = None
    database: str | None = None
    port: int | None = None
    name: str | None = None
    tenant: str | None = None
    client_id: str | None = None
    client_secret_env: str | None = None
    certificate_path: str | None = None
    authority: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


def complete_host(server: str, cloud: str) -> str:
    """``contoso-prod`` → ``contoso-prod.postgres.database.azure.com`` (the cloud's suffix); full names stay."""
    server = server.strip()
    if "." in server or server in ("localhost",) or ":" in server:
        return server
    return server + CLOUDS[cloud].server_suffix


def azure_cli_user() -> str | None:
    """Who the Azure CLI is signed in as, or None (no az, not signed in)."""
    az = shutil.which("az")
    if not az:
        return None
    try:
        r = subprocess.run(
            [az, "account", "show", "--query", "user.name", "-o", "tsv"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def fill(a: Answers, ask: Ask | None, existing: config_mod.Config | None) -> Answers:
    """Complete the answers: from the person when ``ask`` is given, else the missing required ones are an error."""

    def need(value: str | None, question: str, default: str = "", flag: str = "") -> str:
        if value:
            return value
        if ask is None:
            if default:
                return default
            raise UsageError(f"{flag} is required when no terminal is attached (see tokend init --help)")
        answer = ask(question, default).strip()
        if not answer:
            raise UsageError(f"{question.rstrip('?: ')}: an answer is required")
        return answer

    a.cloud = need(a.cloud, "Azure cloud (public, usgov, china)", "public", "--cloud")
    if a.cloud not in CLOUDS:
        raise UsageError(f"unknown cloud {a.cloud!r}; use one of: {', '.join(CLOUDS)}")
    a.server = complete_host(need(a.server, "Server name (e.g. contoso-prod)", "", "--server"), a.cloud)
    a.user = need(a.user, "PostgreSQL user: the Entra group's display name, or your UPN", "", "--user")
    a.database = a.database or (ask("Database (* for any)", "*").strip() if ask else "*") or "*"
    if a.identity is None:
        names = list(existing.identities) if existing else []
        cli_user = azure_cli_user()
        default = names[0] if names else ("azure-cli" if cli_user else "device-code")
        hint = f" (the Azure CLI is signed in as {cli_user})" if cli_user else ""
        choices = ", ".join([*names, *SOURCES])
        a.identity = need(None, f"Sign in with{hint} — {choices}", default, "--identity") if ask else default
    if a.identity == "azure-cli" and not shutil.which("az"):
        raise UsageError(
            "the Azure CLI is not installed here: install it (https://aka.ms/azure-cli) and run "
            "`az login`, or choose another way to sign in with --identity device-code (or browser, "
            "service-principal, managed-identity)"
        )
    if a.identity == "service-principal":
        a.tenant = need(a.tenant, "Tenant id or domain", "", "--tenant")
        a.client_id = need(a.client_id, "Client (application) id", "", "--client-id")
        if not a.certificate_path:
            a.client_secret_env = need(
                a.client_secret_env, "Name of the environment variable holding the secret", "", "--client-secret-env"
            )
    return a


def add_to_config(text: str, a: Answers, path: Path) -> tuple[str, str, str]:
    """The config text with the new target (and identity when needed) appended. Returns (text, target, identity)."""
    existing = config_mod.parse(text, path) if text.strip() else None
    assert a.identity and a.server and a.user and a.cloud
    identity_name = a.identity if existing and a.identity in existing.identities else None
    if identity_name is None:
        fields = {
            "source": a.identity,
            "tenant_id": a.tenant,
            "client_id": a.client_id,
            "cloud": a.cloud,
            "client_secret_env": a.client_secret_env,
            "certificate_path": a.certificate_path,
            "authority": a.authority,
            **a.extra,
        }
        fields = {k: v for k, v in fields.items() if v and not (k == "cloud" and v == "public")}
        for name, ic in existing.identities.items() if existing else []:
            if (ic.source, ic.tenant_id, ic.client_id, ic.cloud.name) == (a.identity, a.tenant, a.client_id, a.cloud):
                identity_name = name
                break
        else:
            base = {"azure-cli": "me", "device-code": "me", "browser": "me"}.get(a.identity, "app")
            identity_name = _unique(base, existing.identities if existing else {})
            text = _append(text, f"identities.{identity_name}", fields)
    target = _unique(a.name or target_name(a.server), existing.targets if existing else {})
    body: dict[str, object] = {"host": a.server}
    if a.port and a.port != 5432:
        body["port"] = a.port
    body.update(database=a.database or "*", user=a.user, identity=identity_name)
    text = _append(text, f"targets.{target}", body)
    config_mod.parse(text, path)  # the real loader judges it before anything is written
    return text, target, identity_name


def target_name(server: str) -> str:
    """A target's name from its server: the first label of a host name (``contoso-prod``), ``localhost`` for a
    loopback address, and an address spelled with dashes otherwise (``db-10-0-0-7``)."""
    try:
        address = ipaddress.ip_address(server.strip("[]"))
    except ValueError:
        return re.sub(r"[^A-Za-z0-9_-]", "-", server.split(".")[0])[:64] or "db"
    if address.is_loopback:
        return "localhost"
    return "db-" + re.sub(r"[^0-9A-Za-z]+", "-", str(address)).strip("-")


def _unique(base: str, taken: object) -> str:
    name, n = base or "db", 2
    while name in taken:  # type: ignore[operator]
        name, n = f"{base}-{n}", n + 1
    return name


def _key(name: str) -> str:
    """A TOML key: bare when it can be, quoted otherwise (a name with a dot would otherwise nest tables)."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _append(text: str, table: str, body: dict[str, object]) -> str:
    kind, _, name = table.partition(".")
    lines = [f"[{kind}.{_key(name)}]"] + [f"{k} = {json.dumps(v)}" for k, v in body.items()]
    sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    return text + sep + "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Request:
    """``tokend init``: the config to add to, the answers given as flags, ``interactive`` (a terminal is attached:
    ask for the rest), ``check`` (also log in), ``service`` (install the login service; None: ask when
    interactive)."""

    config: Path
    answers: Answers
    interactive: bool = False
    check: bool = False
    service: bool | None = None


def run(request: Request, say: Callable[[str], None], ask_line: Callable[[str], str] = input) -> int:
    """``tokend init``: complete the answers (asking through ``ask_line`` when interactive), append to the config,
    prove the identity with a token, optionally log in (``check``) and install the login service. ``say`` shows
    each step. Returns the exit code."""
    config_path, answers, interactive = request.config, request.answers, request.interactive
    check, service = request.check, request.service

    def ask(question: str, default: str) -> str:
        answer = ask_line(f"{question}{f' [{default}]' if default else ''}: ")
        return answer or default

    data = atomic.read(config_path) or b""  # only a file that is safely yours: it becomes your daemon's config
    existing = config_mod.decode(data, config_path) if data.strip(b"\xef\xbb\xbf \t\r\n") else None
    text = data.decode("utf-8-sig")  # decode() has said it is UTF-8
    fill(answers, ask if interactive else None, existing)
    new_text, target, identity = add_to_config(text, answers, config_path)
    atomic.write_private(config_path, new_text)
    say(f"wrote {config_path}: target {target} ({answers.user} at {answers.server}) with identity {identity}")
    cfg = config_mod.load(config_path)
    ic = cfg.identities[identity]
    if ic.source in ("device-code", "browser"):
        from tokend.identities import interactive as person  # azure-identity's interactive flows: only here

        if not person.record_path(ic).exists():
            if not interactive:
                say(f"next: sign in once with `tokend login {identity} --config {config_path}`")
                return 0
            person.login(ic, say=say)
    try:
        token = identities.fetch_once(ic)
    except IdentityUnavailable as e:
        raise TokendError(f"identity {identity} cannot get a token here yet: {e}") from None
    left = token.expires_on - time.time()
    say(
        f"identity {identity} works: token for {token.principal} (tenant {token.claims.get('tid', '?')}), "
        f"expires in {left / 60:.0f} m"
    )
    if check:
        say(check_login(cfg, cfg.targets[target], token))
    if service or (
        service is None and interactive and ask("Install the login service now? (y/n)", "y").lower().startswith("y")
    ):
        try:
            say(service_mod.install(config_path))
        except TokendError as e:
            say(f"service not installed: {e}")
    return 0


def check_login(cfg: config_mod.Config, t: config_mod.Target, token: Token) -> str:
    """``init --check``: log in to ``t`` with ``token`` as the user it resolves to (``user = "@principal"``: the
    token's own principal); a refusal raises TokendError saying why and what fixes it (``tokend.diagnose``)."""
    resolved = principal.resolve(t, token.claims)
    result = psql_login(resolved, password=token.value)
    if result is None:
        return "check skipped: psql not found"
    ok, text = result
    if not ok:
        found = diagnose.refused(cfg, resolved, token.value, text)
        raise TokendError(f"login to {t.host} as {resolved.user} failed: {text}: {found.line()}")
    return f"logged in to {t.host} as current_user = {text}"
