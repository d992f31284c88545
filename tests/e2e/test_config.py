"""Config mistakes through the installed product: one clear line (file, key, fix) and exit 2 for every mistake.
The table of mistakes runs in-process (tests/unit/test_cli.py); here, the cases that need a real process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokend.config import load

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


def test_a_config_mistake_through_the_installed_product(tmp_path: Path) -> None:
    """The smoke test of the mistake table (tests/unit/test_cli.py runs all of it in-process through cli.main):
    the installed launcher, a real process, the same one line and exit 2."""
    path = tmp_path / "config.toml"
    path.write_text('[identities.me]\nsource = "azure-cli"\ncolour = "red"\n')
    r = tokend("run", "--once", "--config", str(path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokend: ") and "unknown key" in lines[0], r.stderr
    assert str(path) in lines[0] and "identities.me.colour" in lines[0]
    assert "Traceback" not in r.stderr


def test_debug_keeps_the_exit_code(tmp_path: Path) -> None:
    """Issue 22: with --debug a config error exited 1 (Python's, for the re-raised exception), not 2."""
    r = tokend("run", "--once", "--debug", "--config", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "Traceback" in r.stderr and "no such file" in r.stderr.strip().splitlines()[-1]


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
