"""Config loading in-process: the contract's shape, durations, and fuzzing that every text is a config or one
clear ConfigError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokend.config import parse, parse_duration
from tokend.errors import ConfigError

pytestmark = pytest.mark.portable  # runs on Linux, macOS and Windows (.github/workflows/ci.yml)

ME = '[identities.me]\nsource = "azure-cli"\n'
GOOD = """
[identities.me]
source = "azure-cli"
cloud = "usgov"

[identities.app]
source = "service-principal"
tenant_id = "t"
client_id = "c"
client_secret_env = "APP_SECRET"
authority = "https://login.example:8443"

[targets.prod]
host = "contoso-prod.postgres.database.azure.com"
user = "DBA Group"
identity = "me"

[targets.app]
host = "h"
port = 6432
database = "appdb"
user = "app"
identity = "app"
sinks = ["pgpass"]

[sinks.pgpass]
path = "~/custom.pgpass"

[refresh]
margin = "10m"
"""


def test_good_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("APP_SECRET", "x")
    c = parse(GOOD, tmp_path / "c.toml")
    assert c.identities["me"].resource == "https://ossrdbms-aad.database.usgovcloudapi.net"
    assert c.identities["me"].authority == "login.microsoftonline.us"
    assert c.identities["app"].authority == "https://login.example:8443"
    assert c.targets["prod"].port == 5432 and c.targets["prod"].database == "*"
    assert c.targets["prod"].sinks == ("pgpass",)
    assert c.refresh_margin == 600
    assert c.sinks["pgpass"].options["path"] == "~/custom.pgpass"


def test_durations() -> None:
    assert parse_duration("90s") == 90 and parse_duration("10m") == 600 and parse_duration("1h") == 3600
    assert parse_duration(45) == 45 and parse_duration("24h") == 86400 and parse_duration("0") == 0
    for bad in ("-1", "1d", "", True, -5, float("nan"), float("inf"), 10**400, "9" * 400, "25h"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_duration("30s", least=30, most=60) == 30  # the caller states the bounds
    for bad in ("29s", "61s", "2m"):
        with pytest.raises(ValueError):
            parse_duration(bad, least=30, most=60)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_any_text_is_a_config_or_a_config_error(text: str) -> None:
    try:
        parse(text, Path("fuzz.toml"))
    except ConfigError as e:
        assert str(e).startswith("fuzz.toml")


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v)


scalars = st.one_of(
    st.text(max_size=12),
    st.integers(-5, 70000),
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(st.text(max_size=8), max_size=3),
)
keys = st.sampled_from(
    [
        "source",
        "tenant_id",
        "client_id",
        "cloud",
        "authority",
        "resource",
        "client_secret_env",
        "client_secret_file",
        "client_secret",
        "ca_bundle",
        "certificate_path",
        "host",
        "port",
        "database",
        "user",
        "identity",
        "sinks",
        "path",
        "margin",
        "token_file",
        "allow_unencrypted_cache",
        "bogus",
    ]
)
tables = st.dictionaries(keys, scalars, max_size=6)
sections = st.sampled_from(["identities", "targets", "sinks", "refresh", "other"])
names = st.sampled_from(["me", "app", "prod", "pgpass", "keychain", "pg_service", "a b", "x"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(sections, names, tables), max_size=6))
def test_fuzz_structured_configs_load_or_fail_clearly(parts: list) -> None:
    """Shaped like real configs, with wrong types, unknown keys and dangling names mixed in."""
    text = "".join(
        (f"[{section}]\n" if section == "refresh" else f'[{section}."{name}"]\n')
        + "".join(f"{k} = {_toml_value(v)}\n" for k, v in body.items())
        + "\n"
        for section, name, body in parts
    )
    try:
        parse(text, Path("fuzz.toml"))
    except ConfigError as e:
        assert str(e).startswith("fuzz.toml") and "\n" not in str(e)
