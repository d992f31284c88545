"""Config mistakes through the installed product: one clear line (file, key, fix) and exit 2 for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokend.config import load
from tokend.errors import ConfigError

from support.product import tokend

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
