"""`tokend init`: a working config without reading the docs.

Interactive when a terminal is attached (flags given are taken as answers), flag-driven otherwise; an empty answer
to a question without a default is asked again. It asks for the cloud — or a custom sign-in authority (a private
cloud, a TLS-inspecting proxy, the emulator) — the server, its port, user, database and the way to sign in. A bare
server name is completed with the cloud's suffix (a ``postgresql://`` URL is read for its host and port); an Azure
CLI sign-in is detected and offered, else device-code sign-in, and where no Secret Service answers (a headless
machine) the unencrypted sign-in cache is offered in one line.

Re-running after a failure learns from it: the identity it names (or the one whose source, tenant and client id
fit) is updated in place with the settings given this time (``--client-secret-env``, ``--allow-unencrypted-cache``,
``--authority`` …), and a target for the same server, port, database and user is updated rather than added again.
Everything else in the file stays byte for byte. The result is checked with the real config loader before it is
written, then a token proves the identity; a failure ends with the one line of fix ``tokend.advice`` gives for it.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tokend import access, advice, diagnose, envfile, principal
from tokend import config as config_mod
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


def split_server(server: str) -> tuple[str, int | None]:
    """What a person types for a server, as (host, port or None): a host name, an address (``[::1]`` too), a
    ``host:port``, or a ``postgresql://user@host:port/db`` URL (only its host and port are read)."""
    text = server.strip()
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) or text.startswith("["):
        u = urllib.parse.urlsplit(text if "://" in text else "//" + text)
        try:
            port = u.port
        except ValueError:
            raise UsageError(f"{server!r}: the port is not a number") from None
        if not u.hostname:
            raise UsageError(f"{server!r} names no server; give its host name, e.g. contoso-prod")
        return u.hostname, port
    if text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise UsageError(f"{server!r}: the port is not a number")
        return host, int(port_text)
    return text, None


def complete_host(server: str, cloud: str) -> str:
    """``contoso-prod`` → ``contoso-prod.postgres.database.azure.com`` (the cloud's suffix); full names stay."""
    server = server.strip()
    if "." in server or server in ("localhost",) or ":" in server:
        return server
    return server + CLOUDS[cloud].server_suffix


def parse_authority(value: str) -> str:
    """A sign-in authority as a person gives it, as tokend keeps it: ``https://HOST[:PORT]`` and nothing after it.
    A tenant appended (``…/contoso.onmicrosoft.com``) is refused with one line: MSAL appends the tenant itself and
    would otherwise fail with a message of its own."""
    text = value.strip().rstrip("/")
    u = urllib.parse.urlsplit(text if "://" in text else "https://" + text)
    if u.scheme != "https":
        raise UsageError(
            f"the authority must be https://HOST[:PORT] (Entra and MSAL accept no plain http), got {value!r}"
        )
    if not u.hostname:
        raise UsageError(f"the authority {value!r} names no host; give it as https://HOST[:PORT]")
    if u.path.strip("/") or u.query or u.fragment:
        tenant = u.path.strip("/").split("/")[0] or "TENANT"
        raise UsageError(
            f"the authority is the sign-in host only: give --authority https://{u.netloc} --tenant {tenant} "
            "(the tenant is added to it when signing in)"
        )
    return f"https://{u.netloc}"


def _cloud_question() -> str:
    clouds = ", ".join(f"{c.name} ({c.authority})" for c in CLOUDS.values())
    return f"Azure cloud — {clouds} — or a custom sign-in authority (https://HOST[:PORT])"


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
        while True:  # an empty answer is asked again (Ctrl-D ends the wizard)
            answer = ask(question, default).strip()
            if answer:
                return answer

    if a.authority:
        a.authority = parse_authority(a.authority)
    if a.cloud is None and a.authority is None and ask is not None:
        answer = need(None, _cloud_question(), "public")
        if answer.lower() in CLOUDS:
            a.cloud = answer.lower()
        else:
            a.authority = parse_authority(answer)
    a.cloud = a.cloud or "public"
    if a.cloud not in CLOUDS:
        raise UsageError(f"unknown cloud {a.cloud!r}; use one of: {', '.join(CLOUDS)}")
    host, port = split_server(need(a.server, "Server name (e.g. contoso-prod)", "", "--server"))
    a.server = complete_host(host, a.cloud)
    if a.port is None and port is not None:
        a.port = port
    if a.port is None and ask is not None:
        answer = need(None, "Port", "5432")
        if not answer.isdigit() or not 0 < int(answer) < 65536:
            raise UsageError(f"the port must be a number from 1 to 65535, got {answer!r}")
        a.port = int(answer)
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
    if a.identity in ("device-code", "browser") and "allow_unencrypted_cache" not in a.extra:
        _cache_choice(a, ask)
    if a.identity == "service-principal":
        a.tenant = need(a.tenant, "Tenant id or domain", "", "--tenant")
        a.client_id = need(a.client_id, "Client (application) id", "", "--client-id")
        if not a.certificate_path:
            a.client_secret_env = need(
                a.client_secret_env, "Name of the environment variable holding the secret", "", "--client-secret-env"
            )
    return a


def _cache_choice(a: Answers, ask: Ask | None) -> None:
    """Device-code and browser sign-ins keep a refresh token in a cache that the Secret Service encrypts on Linux.
    Where none answers (a headless machine, an SSH session), offer the file-only cache instead of failing later
    with libsecret's many lines; without a terminal, say the flag that chooses it."""
    from tokend.identities import interactive as person  # msal-extensions' probe: only these sign-ins need it

    problem = person.encrypted_cache_problem()
    if problem is None:
        return
    reason = " ".join(problem.split())  # one line, whatever the library said
    if ask is None:
        raise UsageError(
            f"{reason}: start a Secret Service (e.g. gnome-keyring) in this session, or pass "
            "--allow-unencrypted-cache to keep the sign-in cache in a file only you can read"
        )
    answer = ask(
        f"No Secret Service answers here ({reason[:80]}). Keep the sign-in cache in a file only you can read "
        "(unencrypted)? (y/n)",
        "y",
    )
    if not answer.strip().lower().startswith("y"):
        raise UsageError("no cache for the sign-in: start a Secret Service (e.g. gnome-keyring) and run init again")
    a.extra["allow_unencrypted_cache"] = True


# What a re-run may change in an identity it reuses, per answer: (config key, value).
def _identity_fields(a: Answers) -> dict[str, object]:
    fields: dict[str, object] = {
        "tenant_id": a.tenant,
        "client_id": a.client_id,
        "cloud": a.cloud if a.cloud != "public" else None,
        "client_secret_env": a.client_secret_env,
        "certificate_path": a.certificate_path,
        "authority": a.authority,
        **a.extra,
    }
    return {k: v for k, v in fields.items() if v}


_EXCLUSIVE = {"client_secret_env": "certificate_path", "certificate_path": "client_secret_env"}


def add_to_config(text: str, a: Answers, path: Path) -> tuple[str, str, str, list[str]]:
    """The config text with the target (and identity when needed) added or updated. Returns (text, target,
    identity, what changed in place). An identity reused — named by ``--identity``, or one whose source, tenant,
    client id and cloud fit — takes the settings given this time; a target for the same server, port, database
    and user is updated instead of added again."""
    existing = config_mod.parse(text, path) if text.strip() else None
    assert a.identity and a.server and a.user and a.cloud
    changed: list[str] = []
    fields = _identity_fields(a)
    identity_name = a.identity if existing and a.identity in existing.identities else None
    if identity_name is None:
        for name, ic in existing.identities.items() if existing else []:
            if (ic.source, ic.tenant_id, ic.client_id, ic.cloud.name) == (a.identity, a.tenant, a.client_id, a.cloud):
                identity_name = name
                break
    if identity_name is None:
        base = {"azure-cli": "me", "device-code": "me", "browser": "me"}.get(a.identity, "app")
        identity_name = _unique(base, existing.identities if existing else {})
        text = _append(text, f"identities.{identity_name}", {"source": a.identity, **fields})
    else:
        assert existing is not None
        fields.pop("cloud", None)  # the cloud answered picks the server's suffix; it never moves an identity
        text, changed = _update_identity(text, existing, identity_name, fields)
    port = a.port or 5432
    database = a.database or "*"
    same = [
        t
        for t in (existing.targets.values() if existing else [])
        if (t.host, t.port, t.database, t.user) == (a.server, port, database, a.user)
    ]
    if same:
        target = same[0].name
        if same[0].identity != identity_name:
            text = _set_key(text, f"targets.{target}", "identity", identity_name)
            changed.append(f"target {target}: identity = {identity_name!r}")
    else:
        if a.name and existing and a.name in existing.targets:
            t = existing.targets[a.name]
            raise UsageError(
                f"target {a.name} already exists in {path} for {t.user} at {t.host}:{t.port}; choose another "
                "--name, or edit that table"
            )
        target = _unique(a.name or target_name(a.server), existing.targets if existing else {})
        body: dict[str, object] = {"host": a.server}
        if port != 5432:
            body["port"] = port
        body.update(database=database, user=a.user, identity=identity_name)
        text = _append(text, f"targets.{target}", body)
    config_mod.parse(text, path)  # the real loader judges it before anything is written
    return text, target, identity_name, changed


def _update_identity(
    text: str, existing: config_mod.Config, name: str, fields: dict[str, object]
) -> tuple[str, list[str]]:
    """``[identities.NAME]`` with ``fields`` set where they differ from what it holds (a secret variable replaces
    a certificate and the other way round). Refused with the reason when a setting does not fit its source."""
    ic = existing.identities[name]
    held = {
        "tenant_id": ic.tenant_id,
        "client_id": ic.client_id,
        "cloud": ic.cloud.name,
        "client_secret_env": ic.client_secret_env,
        "certificate_path": ic.certificate_path,
        "authority": ic.authority_override,
        "allow_unencrypted_cache": ic.allow_unencrypted_cache,
    }
    wrong = {
        "azure-cli": ("client_secret_env", "certificate_path", "allow_unencrypted_cache"),
        "managed-identity": ("client_secret_env", "certificate_path", "allow_unencrypted_cache"),
        "device-code": ("client_secret_env", "certificate_path"),
        "browser": ("client_secret_env", "certificate_path"),
    }.get(ic.source, ())
    refused = [k for k in fields if k in wrong]
    if refused:
        raise UsageError(
            f"identity {name} signs in with {ic.source}, which takes no {', '.join(refused)}; choose another "
            f"--identity (e.g. service-principal) for that, or leave the flag out"
        )
    changed = []
    for key, value in fields.items():
        if key not in held or held[key] == value or (key == "certificate_path" and str(held[key]) == value):
            continue
        text = _set_key(text, f"identities.{name}", key, value)
        changed.append(f"identity {name}: {key} = {json.dumps(value)}")
        other = _EXCLUSIVE.get(key)
        if other and held.get(other):
            text = _drop_key(text, f"identities.{name}", other)
            changed.append(f"identity {name}: {other} removed")
    return text, changed


def target_name(server: str) -> str:
    """A target's name from its server: the first label of a host name (``contoso-prod``), and an address spelled
    with dashes (``db-127-0-0-1``, ``db-10-0-0-7``: an address is not ``localhost`` to libpq's pgpass). Runs of
    other characters become one dash."""
    host, _ = split_server(server)
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        name = re.sub(r"[^A-Za-z0-9_]+", "-", host.split(".")[0]).strip("-")
        return name[:64].strip("-") or "db"
    return "db-" + re.sub(r"[^0-9A-Za-z]+", "-", str(address)).strip("-")


def _unique(base: str, taken: object) -> str:
    name, n = base or "db", 2
    while name in taken:  # type: ignore[operator]
        name, n = f"{base}-{n}", n + 1
    return name


def _key(name: str) -> str:
    """A TOML key: bare when it can be, quoted otherwise (a name with a dot would otherwise nest tables)."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _table_span(text: str, table: str) -> tuple[int, int]:
    """Where ``[table]``'s key lines are in ``text``: (offset after its header line, offset of the next header)."""
    kind, _, name = table.partition(".")
    header = re.compile(
        rf"^\[\s*{re.escape(kind)}\s*\.\s*(?:{re.escape(name)}|{re.escape(json.dumps(name))})\s*\][^\n]*\n?", re.M
    )
    m = header.search(text)
    if m is None:
        raise UsageError(f"[{table}] is not a plain table in the config: edit it by hand")
    nxt = re.compile(r"^\s*\[", re.M).search(text, m.end())
    return m.end(), nxt.start() if nxt else len(text)


def _key_line(text: str, start: int, end: int, key: str) -> re.Match[str] | None:
    return re.compile(rf"^[ \t]*{re.escape(key)}[ \t]*=[^\n]*\n?", re.M).search(text, start, end)


def _set_key(text: str, table: str, key: str, value: object) -> str:
    """``text`` with ``key = value`` in ``[table]``: the line replaced when there is one, else added after the
    table's last key line. Every other byte stays."""
    start, end = _table_span(text, table)
    line = f"{key} = {json.dumps(value)}\n"
    m = _key_line(text, start, end, key)
    if m is not None:
        return text[: m.start()] + line + text[m.end() :]
    at = start + len(text[start:end].rstrip("\n \t"))  # after the last key line, before blank lines
    if at == start:  # a table with no keys yet
        return text[:start] + line + text[start:]
    if at == len(text):  # the last line of a file without a final newline
        return text + "\n" + line
    return text[:at] + "\n" + line.rstrip("\n") + text[at:]


def _drop_key(text: str, table: str, key: str) -> str:
    start, end = _table_span(text, table)
    m = _key_line(text, start, end, key)
    return text if m is None else text[: m.start()] + text[m.end() :]


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
    new_text, target, identity, changed = add_to_config(text, answers, config_path)
    if new_text != text:
        atomic.write_private(config_path, new_text)
    for line in changed:
        say(f"updated {line}")
    said = "wrote" if new_text != text else "kept"
    say(f"{said} {config_path}: target {target} ({answers.user} at {answers.server}) with identity {identity}")
    cfg = config_mod.load(config_path)
    ic = cfg.identities[identity]
    if ic.source in ("device-code", "browser"):
        from tokend.identities import interactive as person  # azure-identity's interactive flows: only here

        if not person.record_path(ic).exists():
            if not interactive:
                say(f"next: sign in once with `tokend login {identity} --config {config_path}`")
                return 0
            with envfile.applied(ic.config_path):  # as `tokend login`: through the daemon's HTTPS_PROXY
                person.login(ic, say=say)
    try:
        token = access.fetch_here(ic)
    except IdentityUnavailable as e:
        raise TokendError(f"identity {identity} cannot get a token here yet: {e}") from None
    except TokendError as e:
        raise TokendError(
            f"identity {identity} got no token: {e}; "
            f"fix: {advice.for_token_error(str(e), identity, str(envfile.path_for(config_path)))}, then run "
            "init again with the new settings (it updates the identity)"
        ) from None
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
