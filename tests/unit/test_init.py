"""tokend/init.py's pure parts: what a person types for a server and an authority, target names, and a re-run that
updates the identity and target it finds instead of adding them again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tomllib

from tokend import config
from tokend.errors import UsageError
from tokend.identities import interactive
from tokend.init import Answers, Ask, _set_key, add_to_config, fill, parse_authority, split_server, target_name

SP = (
    '# mine\n[identities.app]\nsource = "service-principal"\ntenant_id = "t1"\nclient_id = "c1"\n'
    'client_secret_env = "OLD_SECRET"\n\n[targets.prod]\nhost = "127.0.0.1"\nport = 6432\ndatabase = "*"\n'
    'user = "DBA Group"\nidentity = "app"\n'
)


@pytest.mark.parametrize(
    ("typed", "host", "port"),
    [
        ("contoso-prod", "contoso-prod", None),
        ("db.example:6432", "db.example", 6432),
        (
            "postgresql://alice@contoso-prod.postgres.database.azure.com:5433/appdb",
            "contoso-prod.postgres.database.azure.com",
            5433,
        ),
        ("postgres://contoso-prod", "contoso-prod", None),
        ("[::1]:6432", "::1", 6432),
        ("::1", "::1", None),
    ],
)
def test_a_server_is_read_for_its_host_and_port(typed: str, host: str, port: int | None) -> None:
    assert split_server(typed) == (host, port)


@pytest.mark.parametrize(
    ("server", "name"),
    [
        ("contoso-prod.postgres.database.azure.com", "contoso-prod"),
        ("127.0.0.1", "db-127-0-0-1"),  # an address is not `localhost` to libpq
        ("10.0.0.7", "db-10-0-0-7"),
        ("postgres://contoso-prod", "contoso-prod"),  # not postgres---contoso-prod
        ("my  odd..host", "my-odd"),
    ],
)
def test_target_names_are_sensible(server: str, name: str) -> None:
    assert target_name(server) == name


def test_an_authority_is_the_host_only_and_a_tenant_appended_is_one_clear_line() -> None:
    assert parse_authority("https://login.example:8443/") == "https://login.example:8443"
    assert parse_authority("login.microsoftonline.us") == "https://login.microsoftonline.us"
    with pytest.raises(UsageError, match=r"--authority https://login\.example --tenant contoso\.onmicrosoft\.com"):
        parse_authority("https://login.example/contoso.onmicrosoft.com")
    with pytest.raises(UsageError, match="no plain http"):
        parse_authority("http://login.example")


def test_a_rerun_updates_the_identity_and_does_not_duplicate_the_target(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    a = Answers(
        server="127.0.0.1",
        port=6432,
        user="DBA Group",
        identity="service-principal",
        cloud="public",
        tenant="t1",
        client_id="c1",
        client_secret_env="NEW_SECRET",
        database="*",
    )
    text, target, identity, changed = add_to_config(SP, a, path)
    assert (target, identity) == ("prod", "app")
    assert changed == ['identity app: client_secret_env = "NEW_SECRET"']
    assert text == SP.replace("OLD_SECRET", "NEW_SECRET")  # one line changed, every other byte kept
    again = add_to_config(text, a, path)
    assert again[0] == text and again[3] == []


def test_a_rerun_naming_the_identity_takes_its_new_settings_or_says_why_not(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    a = Answers(
        server="127.0.0.1",
        port=6432,
        user="DBA Group",
        identity="app",
        cloud="public",
        certificate_path="/etc/app.pem",
        authority="https://login.example:8443",
    )
    text, _, _, changed = add_to_config(SP, a, path)
    cfg = config.parse(text, path)
    ic = cfg.identities["app"]
    assert str(ic.certificate_path) == "/etc/app.pem" and ic.client_secret_env is None
    assert ic.authority_override == "https://login.example:8443" and len(cfg.targets) == 1
    assert "identity app: client_secret_env removed" in changed
    me = '[identities.me]\nsource = "azure-cli"\n'
    with pytest.raises(UsageError, match="identity me signs in with azure-cli, which takes no client_secret_env"):
        add_to_config(
            me, Answers(server="h.example", user="u", identity="me", cloud="public", client_secret_env="S"), path
        )


def test_a_name_taken_by_another_server_is_refused(tmp_path: Path) -> None:
    a = Answers(server="other.example", user="DBA Group", identity="app", cloud="public", name="prod")
    with pytest.raises(UsageError, match=r"target prod already exists .* for DBA Group at 127\.0\.0\.1:6432"):
        add_to_config(SP, a, tmp_path / "c.toml")


def scripted(*answers: str) -> tuple[list[str], Ask]:
    asked: list[str] = []
    it = iter(answers)

    def ask(question: str, default: str) -> str:
        asked.append(question)
        return next(it) or default

    return asked, ask


def test_the_wizard_asks_the_authority_and_port_and_asks_again_after_an_empty_answer() -> None:
    asked, ask = scripted("https://login.example:8443", "", "", "db.example", "6432", "", "DBA Group", "*")
    a = fill(
        Answers(identity="service-principal", tenant="t", client_id="c", client_secret_env="S"),
        ask,
        None,
    )
    assert a.authority == "https://login.example:8443" and a.cloud == "public"
    assert a.server == "db.example" and a.port == 6432 and a.user == "DBA Group"
    assert "login.microsoftonline.us" in asked[0] and "custom sign-in authority" in asked[0]
    assert asked[1:4] == ["Server name (e.g. contoso-prod)"] * 3  # asked again after two empty answers
    assert asked[4] == "Port" and asked[5:7] == ["PostgreSQL user: the Entra group's display name, or your UPN"] * 2


def test_without_a_secret_service_the_unencrypted_cache_is_offered_in_one_line() -> None:
    if interactive.encrypted_cache_problem() is None or os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        pytest.skip("a Secret Service answers here")
    with pytest.raises(UsageError, match="--allow-unencrypted-cache") as e:
        fill(Answers(server="db.example", user="u", identity="device-code", port=5432), None, None)
    assert "\n" not in str(e.value)
    asked, ask = scripted("public", "*", "y")
    a = fill(Answers(server="db.example", user="u", identity="device-code", port=5432), ask, None)
    assert a.extra["allow_unencrypted_cache"] is True and "No Secret Service answers here" in asked[-1]
    assert all("\n" not in q for q in asked)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('[identities.app]\nsource = "x"\n\n[targets.t]\n', '[identities.app]\nsource = "x"\nk = "v"\n\n[targets.t]\n'),
        ('[identities.app]\nsource = "x"', '[identities.app]\nsource = "x"\nk = "v"\n'),  # no final newline
        ("[identities.app]\n[targets.t]\n", '[identities.app]\nk = "v"\n[targets.t]\n'),  # no keys yet
        ('[identities."my.app"]\nk = "old"  \n', '[identities."my.app"]\nk = "v"\n'),  # a quoted name, replaced
        ("[identities.app]\n\nk = 1\n", '[identities.app]\n\nk = "v"\n'),  # the blank line above stays
    ],
)
def test_a_key_is_set_in_its_table_and_nothing_else_moves(text: str, want: str) -> None:
    table = "identities.my.app" if "my.app" in text else "identities.app"
    assert _set_key(text, table, "k", "v") == want
    assert tomllib.loads(want)
