"""``user = "@principal"``: the role name a token resolves to (a person's UPN, an app's configured name), the
config that asks for an app's name once, and libpq's target lookup by the resolved user."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path

import pytest

from tokend import access, principal
from tokend.config import PRINCIPAL, Config, IdentityConfig, Target, load, parse
from tokend.errors import ConfigError, DaemonNotRunning, UsageError
from tokend.ipc import TokenAnswer
from tokend.sinks import pgpass
from tokend.token import Token, display_claims

from support.builders import target

PERSON = {"oid": "o1", "upn": "alice@contoso.example", "unique_name": "alice@contoso.example", "tid": "t"}
GUEST = {"oid": "o2", "unique_name": "bob_fabrikam.example#EXT#@contoso.example", "tid": "t"}
APP = {"oid": "o3", "appid": "a1", "tid": "t"}


def follower(name: str = "me", principal_name: str | None = None) -> Target:
    return dataclasses.replace(target(name, user=PRINCIPAL), principal_name=principal_name)


@pytest.mark.parametrize(
    ("claims", "principal_name", "user"),
    [
        (PERSON, None, "alice@contoso.example"),  # rule 1: the UPN
        (GUEST, None, GUEST["unique_name"]),  # a guest's only name
        ({**PERSON, "upn": "carol@contoso.example"}, None, "carol@contoso.example"),  # az login as someone else
        (APP, "reporting-app", "reporting-app"),  # rule 2: the app's display name, from the config
        ({**APP, "idtyp": "app", "upn": "x@y"}, "reporting-app", "reporting-app"),
        (APP, None, None),  # rule 3: unknown
        (PERSON, "reporting-app", "alice@contoso.example"),  # an azure-cli identity with a person signed in
    ],
)
def test_a_follower_resolves_to_the_tokens_principal(
    claims: dict[str, str], principal_name: str | None, user: str | None
) -> None:
    t = follower(principal_name=principal_name)
    assert principal.user_for(t, claims) == user
    held = principal.resolved(t, claims)
    assert (held.user if held else None) == user
    if user is None:
        with pytest.raises(principal.Unresolved, match=r"add principal_name = .* to \[identities\.me\]"):
            principal.resolve(t, claims)


def test_a_named_user_stays_whoever_signed_in() -> None:
    t = target("db")
    assert principal.resolve(t, PERSON) is t and principal.user_for(t, APP) == t.user


IDENTITIES = """
[identities.me]
source = "azure-cli"
[identities.app]
source = "service-principal"
tenant_id = "t"
client_id = "c"
client_secret_env = "S"
"""


def test_the_config_asks_an_apps_name_once(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    team = '[targets.team]\nhost = "h.example"\nuser = "@principal"\nidentity = "me"\n'
    assert parse(IDENTITIES + team, p).targets["team"].principal_name is None
    svc = '[targets.svc]\nhost = "h.example"\nuser = "@principal"\nidentity = "app"\n'
    with pytest.raises(ConfigError, match=r"identities\.app\.principal_name.*missing.*display name"):
        parse(IDENTITIES + svc, p)
    named = IDENTITIES.replace('client_secret_env = "S"', 'client_secret_env = "S"\nprincipal_name = "report app"')
    cfg = parse(named + svc, p)
    assert cfg.targets["svc"].principal_name == "report app" and cfg.targets["svc"].user == PRINCIPAL
    with pytest.raises(ConfigError, match=r"write \"@principal\" exactly"):
        parse(IDENTITIES + team.replace("@principal", "@Principal"), p)
    with pytest.raises(ConfigError, match=r"principal_name"):
        parse(named.replace('"report app"', '"@x"') + svc, p)


def config_of(*targets: Target) -> Config:
    return Config(Path("/c/config.toml"), {}, {t.name: t for t in targets}, {})


def test_target_for_matches_a_follower_by_its_resolved_user() -> None:
    asked: list[str] = []

    def resolve(t: Target) -> str:
        asked.append(t.name)
        return "alice@contoso.example"

    cfg = config_of(follower("team"), target("other", host="elsewhere.example", user=PRINCIPAL))
    assert pgpass.target_for(cfg, "h.example", 5432, "alice@contoso.example", None, resolve).name == "team"
    assert asked == ["team"]  # only the follower whose host, port and database match is resolved
    with pytest.raises(UsageError, match=re.escape("no target in /c/config.toml for bob@h.example:5432")):
        pgpass.target_for(cfg, "h.example", 5432, "bob", None, resolve)
    with pytest.raises(UsageError, match="no target"):
        pgpass.target_for(cfg, "h.example", 5432, "alice@contoso.example")  # no resolver: followers match nobody


def jwt(claims: dict[str, str]) -> str:
    """An unsigned JWT carrying ``claims`` (display claims are read without checking the signature)."""
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"e30.{body}.sig"


def test_targets_written_once_keep_the_resolved_name_without_a_daemon(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text(IDENTITIES + '[targets.team]\nhost = "h.example"\nuser = "@principal"\nidentity = "me"\n')
    cfg = load(p)

    class NoDaemon:
        def token(self, target: str | None) -> TokenAnswer:
            raise DaemonNotRunning("none")

        def sign_in_changed(self, identity: str | None) -> None:
            raise DaemonNotRunning("none")

    def fetch(ic: IdentityConfig) -> Token:
        return Token(jwt(PERSON), 2e9, 0.0, None, display_claims(jwt(PERSON)))

    plain = target("plain")
    out = access.resolved_targets(cfg, [cfg.targets["team"], plain], lambda _p: NoDaemon(), fetch=fetch)
    assert [t.user for t in out] == ["alice@contoso.example", plain.user]
