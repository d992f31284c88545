"""Access: the daemon's token first, else the keychain's or one fetched here; which identity a sign-in acts on; the
daemon told of a sign-in. The daemon is a fake client; fetching is a function handed in."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tokend import access, identities
from tokend.clock import Clock
from tokend.config import IdentityConfig, load
from tokend.errors import ConfigError, DaemonNotRunning, UsageError
from tokend.ipc import TokenAnswer
from tokend.token import Token

pytestmark = pytest.mark.portable

NOW = 1_800_000_000.0
CONFIG = """
[identities.me]
source = "azure-cli"
[identities.dc]
source = "device-code"
[identities.web]
source = "browser"
[identities.mi]
source = "managed-identity"
[targets.prod]
host = "prod.example"
user = "DBA Group"
identity = "me"
"""


@dataclass
class Daemon:
    running: bool = True
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def token(self, target: str | None) -> TokenAnswer:
        self.calls.append(("token", target))
        if not self.running:
            raise DaemonNotRunning("no daemon answers")
        return TokenAnswer("from-daemon", NOW + 600, {"name": target})

    def sign_in_changed(self, identity: str | None) -> None:
        self.calls.append(("sign-in-changed", identity))
        if not self.running:
            raise DaemonNotRunning("no daemon answers")


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


def test_the_daemons_token_comes_first_and_nothing_is_fetched(cfg: Path) -> None:
    daemon = Daemon()

    def fetch(ic: IdentityConfig) -> Token:
        raise AssertionError("fetched although the daemon answered")

    answer = access.token_for(cfg, "prod", lambda path: daemon, fetch=fetch)
    assert answer.token == "from-daemon" and daemon.calls == [("token", "prod")]


def test_without_a_daemon_the_token_is_fetched_here_for_the_targets_identity(cfg: Path) -> None:
    fetched: list[str] = []

    def fetch(ic: IdentityConfig) -> Token:
        fetched.append(ic.name)
        return Token("fetched-here", NOW + 3600, NOW)

    answer = access.token_for(cfg, None, lambda path: Daemon(running=False), Clock(now=lambda: NOW), fetch)
    assert (answer.token, answer.expires_on, fetched) == ("fetched-here", NOW + 3600, ["me"])
    assert answer.target["host"] == "prod.example" and answer.target["user"] == "DBA Group"


def test_without_a_daemon_an_unknown_target_or_a_missing_config_says_so(cfg: Path, tmp_path: Path) -> None:
    down = Daemon(running=False)
    with pytest.raises(UsageError, match="no target 'nope'"):
        access.token_for(cfg, "nope", lambda path: down)
    with pytest.raises(ConfigError, match="no such file"):
        access.token_for(tmp_path / "missing.toml", None, lambda path: down)


@pytest.mark.parametrize(
    ("name", "action", "chosen", "error"),
    [
        ("dc", "login", "dc", None),
        ("web", "logout", "web", None),
        (None, "login", None, "name the identity to login"),
        ("me", "login", None, "identity me follows the Azure CLI: run `az login`; tokend notices within seconds"),
        ("me", "logout", None, "run `az logout`"),
        ("mi", "login", None, "identity mi (managed-identity) signs in without a person; nothing to login"),
        ("nope", "login", None, "no identity 'nope' in"),
    ],
)
def test_the_identity_a_sign_in_acts_on(
    cfg: Path, name: str | None, action: str, chosen: str | None, error: str | None
) -> None:
    config = load(cfg)
    if error is None:
        assert access.identity_for_sign_in(config, name, action).name == chosen
    else:
        with pytest.raises(UsageError) as e:
            access.identity_for_sign_in(config, name, action)
        assert error in str(e.value)


def test_the_only_identity_a_person_signs_in_to_needs_no_name(tmp_path: Path) -> None:
    path = tmp_path / "one.toml"
    path.write_text('[identities.mi]\nsource = "managed-identity"\n[identities.dc]\nsource = "device-code"\n')
    assert access.identity_for_sign_in(load(path), None, "login").name == "dc"


def test_the_daemon_is_told_of_a_sign_in_when_one_runs(cfg: Path) -> None:
    ic = load(cfg).identities["dc"]
    up = Daemon()
    assert access.tell_daemon(ic, lambda path: up) == "the running daemon has picked it up"
    assert up.calls == [("sign-in-changed", "dc")]
    told = access.tell_daemon(ic, lambda path: Daemon(running=False))
    assert told.startswith("no daemon is running for this config; start it with `tokend run`")


BELOW_IDENTITIES = {
    *("config", "token", "errors", "clouds", "clock"),
    *("kinds", "paths", "system", "redact", "sinks.atomic"),
    *("client_secrets", "envfile"),  # where a service principal's secret comes from: config, files, the keychain
}


def test_identities_import_nothing_above_them() -> None:
    """Asking the daemon is this module's job: ``identities/`` (function-level imports counted) reaches only the
    modules below it — no ipc, no access, no sinks but the one safe writer."""
    import ast

    import tokend.identities

    found: dict[str, set[str]] = {}
    for path in Path(tokend.identities.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tokend"):
                names = [node.module] if node.module != "tokend" else [f"tokend.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("tokend")]
            for name in names:
                found.setdefault(name.removeprefix("tokend."), set()).add(path.name)
    above = {m: files for m, files in found.items() if m not in BELOW_IDENTITIES and not m.startswith("identities")}
    assert above == {}


def test_work_done_here_runs_in_the_daemons_environment_file(
    cfg: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What the daemon would have done, done here (no daemon answers): its tokend.env applied while it runs, as
    `tokend run` applies it, so HTTPS_PROXY or a secret variable put there counts (tests/e2e/test_environment.py: a
    proxy), and taken back after."""
    monkeypatch.setenv("HTTPS_PROXY", "http://from-the-shell:3128")
    monkeypatch.setenv("TOKEND_ACCESS_TEST", "0")  # (monkeypatch puts both back as they were after the test)
    env = tmp_path / "tokend.env"
    env.write_text("HTTPS_PROXY=http://proxy.corp.example:3128\nTOKEND_ACCESS_TEST=1\n")
    env.chmod(0o600)
    seen: list[tuple[str | None, str | None]] = []

    def fetch(ic: IdentityConfig) -> Token:
        seen.append((os.environ.get("HTTPS_PROXY"), os.environ.get("TOKEND_ACCESS_TEST")))
        return Token("here", NOW + 600, NOW)

    monkeypatch.setattr(identities, "fetch_once", fetch)
    answer = access.token_for(cfg, "prod", lambda path: Daemon(running=False))
    assert answer.token == "here" and seen == [("http://proxy.corp.example:3128", "1")]
    # taken back after: what the command starts next (`tokend exec`'s psql) never inherits the daemon's secrets
    assert (os.environ["HTTPS_PROXY"], os.environ["TOKEND_ACCESS_TEST"]) == ("http://from-the-shell:3128", "0")
