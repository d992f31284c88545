"""tokend.adopt: which token a previous daemon left a starting one takes over (rules 1-3 of its docstring), and
the Azure CLI account it must be for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokend import adopt
from tokend.config import parse

from support.fakes import jwt

pytestmark = pytest.mark.portable

RESOURCE = "https://ossrdbms-aad.database.windows.net"
NOW = 1_800_000_000.0


def identity(text: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = parse(text, tmp_path / "config.toml")
    return next(iter(cfg.identities.values()))


CLI = '[identities.me]\nsource = "azure-cli"\n'
SP = '[identities.sp]\nsource = "service-principal"\ntenant_id = "t"\nclient_id = "app-1"\nclient_secret_env = "S"\n'
DEVICE = '[identities.dev]\nsource = "device-code"\ntenant_id = "t"\n'


def test_the_longest_lived_valid_token_for_the_account_is_chosen(tmp_path: Path) -> None:
    me = identity(CLI, tmp_path)
    short = jwt(exp=NOW + 300, aud=RESOURCE, upn="ann@contoso.com")
    long = jwt(exp=NOW + 3000, aud=RESOURCE, upn="Ann@Contoso.com")
    token = adopt.choose([short, long], me, "ann@contoso.com", NOW)
    assert token is not None and token.value == long and token.expires_on == NOW + 3000
    assert token.received is None  # judged on the wall clock alone


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": NOW + 4, "aud": RESOURCE, "upn": "ann@contoso.com"},  # inside the end margin
        {"exp": NOW - 10, "aud": RESOURCE, "upn": "ann@contoso.com"},  # expired
        {"aud": RESOURCE, "upn": "ann@contoso.com"},  # no expiry to judge by
        {"exp": NOW + 3000, "aud": "https://management.azure.com", "upn": "ann@contoso.com"},  # another resource
        {"exp": NOW + 3000, "upn": "ann@contoso.com"},  # no audience
        {"exp": NOW + 3000, "aud": RESOURCE, "upn": "bob@contoso.com"},  # another account
    ],
)
def test_a_token_that_breaks_a_rule_is_not_adopted(tmp_path: Path, claims: dict[str, object]) -> None:
    assert adopt.choose([jwt(**claims)], identity(CLI, tmp_path), "ann@contoso.com", NOW) is None


def test_nothing_is_adopted_for_a_signed_out_cli_or_from_junk(tmp_path: Path) -> None:
    me = identity(CLI, tmp_path)
    good = jwt(exp=NOW + 3000, aud=RESOURCE, upn="ann@contoso.com")
    assert adopt.choose([good], me, None, NOW) is None
    assert adopt.choose(["not-a-jwt", "a.b.c"], me, "ann@contoso.com", NOW) is None


def test_whom_each_source_must_be_for(tmp_path: Path) -> None:
    assert adopt.expected_principal(identity(CLI, tmp_path), "ann@contoso.com") == "ann@contoso.com"
    assert adopt.expected_principal(identity(CLI, tmp_path), None) is None
    assert adopt.expected_principal(identity(SP, tmp_path), None) == "app-1"
    assert adopt.expected_principal(identity(DEVICE, tmp_path), None) == ""  # its first answer decides
    sp = identity(SP, tmp_path)
    assert adopt.choose([jwt(exp=NOW + 3000, aud=RESOURCE, appid="app-2")], sp, "app-1", NOW) is None
    assert adopt.choose([jwt(exp=NOW + 3000, aud=RESOURCE + "/", appid="app-1")], sp, "app-1", NOW) is not None


def test_the_azure_cli_account_is_its_selected_subscriptions_user(tmp_path: Path) -> None:
    profile = tmp_path / "azureProfile.json"
    assert adopt.azure_cli_account(profile) is None  # no file: signed out
    subs = [
        {"isDefault": False, "tenantId": "T2", "user": {"name": "bob@fabrikam.com", "type": "user"}},
        {"isDefault": True, "tenantId": "t1", "user": {"name": "ann@contoso.com", "type": "user"}},
    ]
    profile.write_bytes(b"\xef\xbb\xbf" + json.dumps({"subscriptions": subs}).encode())  # the CLI writes a BOM
    assert adopt.azure_cli_account(profile) == "ann@contoso.com"
    assert adopt.azure_cli_account(profile, tenant_id="t2") == "bob@fabrikam.com"
    profile.write_text(json.dumps({"subscriptions": []}))  # after az logout
    assert adopt.azure_cli_account(profile) is None
    profile.write_text("{junk")
    assert adopt.azure_cli_account(profile) is None
