"""Config loading: the contract's shape, and one clear line (file, key, fix) with exit 2 for every mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokend.config import load, parse, parse_duration
from tokend.errors import ConfigError

from conftest import tokend

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


@pytest.mark.parametrize(
    ("text", "key", "fix"),
    [
        ('[identities.me]\nsource = "azure-cli"\ncolour = "red"\n', "identities.me.colour", "unknown key"),
        (
            '[identities.me]\nsource = "azure-cli"\n[targets.t]\nhost = "h"\nuser = "u"\nport = "x"\n',
            "targets.t.port",
            "whole number",
        ),
        (
            '[identities.me]\nsource = "azure-cli"\n[targets.t]\nhost = "h"\nuser = "u"\nidentity = "nope"\n',
            "targets.t.identity",
            "add [identities.nope]",
        ),
        ('[refresh]\nmargin = "ten minutes"\n', "refresh.margin", "bad duration"),
        # non-finite and absurd: the daemon took nan and never refreshed again
        *(
            (f"[refresh]\nmargin = {bad}\n", "refresh.margin", 'write seconds or "90s", "10m", "1h", from 10s to 24h')
            for bad in ("nan", "inf", "-inf", '"999999999999h"', "1" + "0" * 400, f'"{"9" * 400}s"', "0", '"2s"', "1e9")
        ),
        ('[identities.me]\nsource = "kerberos"\n', "identities.me.source", "use one of"),
        (
            '[identities.a]\nsource = "service-principal"\ntenant_id = "t"\nclient_id = "c"\n',
            "identities.a",
            "exactly one of client_secret_env",
        ),
        (
            f'{ME}[targets.t]\nhost = "127.0.0.1:5432"\nuser = "u"\n',
            "targets.t.host",
            "write host = '127.0.0.1' and port = 5432",
        ),
        (f'{ME}[targets.t]\nhost = "[::1]:6432"\nuser = "u"\n', "targets.t.host", "write host = '::1' and port = 6432"),
        (f'{ME}[targets.t]\nhost = "postgres://h.example/db"\nuser = "u"\n', "targets.t.host", "is a URL"),
        (f'{ME}[targets.t]\nhost = ""\nuser = "u"\n', "targets.t.host", "non-empty string"),
        (f'{ME}[targets.t]\nhost = "a.example,b.example"\nuser = "u"\n', "targets.t.host", "not one server name"),
        (f'{ME}[targets.t]\nhost = "h"\nuser = "*"\n', "targets.t.user", "not the wildcard"),
        (f'{ME}[targets.t]\nhost = "h"\nuser = "u"\ndatabase = ""\n', "targets.t.database", "non-empty string"),
        (f"{ME}[sinks.pgpass]\npath = 5\n", "sinks.pgpass.path", "non-empty string"),
        ("x = " + "[" * 100_000 + "]" * 100_000 + "\n", "", "nested too deeply"),
        ('[identities.me]\nsource = "azure-cli"\ncloud = "mars"\n', "identities.me.cloud", "use one of"),
        ('[targets.t]\nhost = "h"\n', "targets.t.user", "missing"),
        (
            '[identities.me]\nsource = "azure-cli"\n[targets.t]\nhost = "h"\nuser = "u"\nsinks = ["carrier-pigeon"]\n',
            "targets.t.sinks",
            "unknown sink",
        ),
        ("[identities.me\n", "", "not valid TOML"),
    ],
)
def test_mistakes_name_file_key_and_fix(tmp_path: Path, text: str, key: str, fix: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(path)
    assert str(path) in str(e.value) and key in str(e.value) and fix in str(e.value)
    r = tokend("run", "--once", "--config", str(path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokend: ") and fix in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    r = tokend("run", "--once", "--config", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "no such file" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = tokend("status", "--config", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and str(tmp_path / "nope.toml") in r.stderr and "no such file" in r.stderr
    assert "tokend run" not in r.stderr  # names the missing file; does not suggest running on it


def test_a_folder_or_a_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    r = tokend("run", "--once", "--config", str(tmp_path))
    assert r.returncode == 2 and "is a folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    latin = tmp_path / "latin1.toml"
    latin.write_bytes(b'# ok\n[identities.me]\nsource = "azure-cli" # caf\xe9\n')
    r = tokend("run", "--once", "--config", str(latin))
    assert r.returncode == 2 and "line 3 is not UTF-8" in r.stderr and "Traceback" not in r.stderr


def test_an_unset_secret_is_the_identitys_problem_not_the_configs(tmp_path: Path, monkeypatch) -> None:
    """Commands that read names and hosts work in a shell without the secret; the identity says what is missing."""
    monkeypatch.delenv("APP_SECRET", raising=False)
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    assert load(path).targets["app"].identity == "app"
    r = tokend("completion", "targets", "--config", str(path))
    assert r.returncode == 0 and r.stdout.split() == ["prod", "app"]
    r = tokend("run", "--once", "--config", str(path))
    assert r.returncode == 1 and "APP_SECRET is not set" in r.stderr


def test_config_found_through_env_and_platformdirs(tmp_path: Path, home: Path, monkeypatch) -> None:
    default = home / ".config" / "tokend" / "config.toml"
    default.parent.mkdir(parents=True)
    default.write_text("[refresh]\nmargin = 'bad'\n")
    r = tokend("run", "--once")
    assert r.returncode == 2 and str(default) in r.stderr
    other = tmp_path / "other.toml"
    other.write_text("[refresh]\nmargin = 'worse'\n")
    monkeypatch.setenv("TOKEND_CONFIG", str(other))
    r = tokend("run", "--once")
    assert r.returncode == 2 and str(other) in r.stderr


def test_usage_error_exit_2() -> None:
    r = tokend("frobnicate")
    assert r.returncode == 2


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
