"""tokend init: flag-driven without a terminal, interactive through a real pseudo-terminal, and re-runs that add a
target without disturbing the rest."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

from tokend.config import load
from tokend.emulator.postgres import Postgres

from support.builders import GROUP, SECRET
from support.clients import psql
from support.product import TOKEND, tokend
from support.tenant import Tenant


def test_flags_make_a_config_that_runs(
    em: Tenant, postgres: Postgres, pgpass: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("TOKEND_TEST_SECRET", SECRET)
    cfg = tmp_path / "conf" / "config.toml"
    r = tokend(
        "init",
        "--server",
        "127.0.0.1",
        "--port",
        str(postgres.port),
        "--database",
        "appdb",
        "--user",
        GROUP,
        "--identity",
        "service-principal",
        "--tenant",
        em.tenant_id,
        "--client-id",
        em.app.client_id,
        "--client-secret-env",
        "TOKEND_TEST_SECRET",
        "--authority",
        em.url,
        "--check",
        "--no-service",
        "--config",
        str(cfg),
    )
    assert r.returncode == 0, r.stderr
    assert f"current_user = {GROUP}" in r.stdout and "identity app works" in r.stdout
    assert (cfg.stat().st_mode & 0o777) == 0o600
    assert tokend("run", "--once", "--config", str(cfg)).returncode == 0
    assert psql(postgres.port).stdout.strip() == GROUP

    # a second run adds a target, reusing the identity; what was there stays byte for byte
    cfg.write_text("# my notes\n" + cfg.read_text())
    before = cfg.read_text()
    r = tokend(
        "init",
        "--server",
        "contoso-prod",
        "--cloud",
        "usgov",
        "--user",
        "Readers",
        "--identity",
        "app",
        "--no-service",
        "--config",
        str(cfg),
    )
    assert r.returncode == 0, r.stderr
    assert cfg.read_text().startswith(before)
    c = load(cfg)
    assert c.targets["contoso-prod"].host == "contoso-prod.postgres.database.usgovcloudapi.net"
    assert c.targets["contoso-prod"].identity == "app" and len(c.identities) == 1 and len(c.targets) == 2


def test_missing_answers_without_a_terminal(tmp_path: Path) -> None:
    r = tokend("init", "--user", "u", "--identity", "azure-cli", "--config", str(tmp_path / "c.toml"))
    assert r.returncode == 2 and "--server is required" in r.stderr
    assert not (tmp_path / "c.toml").exists()


class Terminal:
    """A program on a real pseudo-terminal, answered prompt by prompt."""

    def __init__(self, cmd: list[str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"never saw {text!r}; screen:\n{self.seen}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:  # the program ended
                    assert text in self.seen, f"never saw {text!r}; screen:\n{self.seen}"

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def wait(self) -> int:
        code = self.proc.wait(60)
        os.close(self.master)
        return code


def test_interactive_on_a_terminal_offers_the_azure_cli(
    em: Tenant, postgres: Postgres, pgpass: Path, tmp_path: Path, az
) -> None:
    az(
        "login",
        "--service-principal",
        "-u",
        em.app.client_id,
        f"--password={SECRET}",
        "--tenant",
        em.tenant_id,
        "--allow-no-subscriptions",
    )
    cfg = tmp_path / "config.toml"
    term = Terminal([TOKEND, "init", "--port", str(postgres.port), "--no-service", "--config", str(cfg)])
    term.expect("Azure cloud")
    term.send("")  # public
    term.expect("Server name")
    term.send("127.0.0.1")
    term.expect("PostgreSQL user")
    term.send(GROUP)
    term.expect("Database")
    term.send("appdb")
    term.expect(f"the Azure CLI is signed in as {em.app.client_id}")
    term.send("")  # take the offer: azure-cli
    term.expect("works")
    assert term.wait() == 0, term.seen
    assert load(cfg).identities["me"].source == "azure-cli"
    assert tokend("run", "--once", "--config", str(cfg)).returncode == 0
    assert psql(postgres.port).stdout.strip() == GROUP


def sp_init(em: Tenant, postgres: Postgres, cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return tokend(
        *("init", "--server", "127.0.0.1", "--port", str(postgres.port), "--database", "appdb", "--user", GROUP),
        *("--identity", "service-principal", "--tenant", em.tenant_id, "--client-id", em.app.client_id),
        *("--authority", em.url, "--no-service", "--config", str(cfg), *extra),
    )


def test_a_rerun_after_a_failure_updates_the_identity_and_adds_no_target(
    em: Tenant, postgres: Postgres, pgpass: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("TOKEND_TEST_SECRET", SECRET)
    monkeypatch.delenv("WRONG_SECRET_VAR", raising=False)
    cfg = tmp_path / "config.toml"
    first = sp_init(em, postgres, cfg, "--client-secret-env", "WRONG_SECRET_VAR")
    assert first.returncode == 1 and "WRONG_SECRET_VAR" in first.stderr, first.stderr
    again = sp_init(em, postgres, cfg, "--client-secret-env", "TOKEND_TEST_SECRET", "--check")
    assert again.returncode == 0, again.stderr
    assert 'updated identity app: client_secret_env = "TOKEND_TEST_SECRET"' in again.stdout, again.stdout
    assert f"current_user = {GROUP}" in again.stdout
    c = load(cfg)
    assert list(c.targets) == ["db-127-0-0-1"] and len(c.identities) == 1  # not `localhost`, not `localhost-2`
    assert c.identities["app"].client_secret_env == "TOKEND_TEST_SECRET"


def test_an_authority_with_the_tenant_appended_is_one_clear_line(tmp_path: Path) -> None:
    r = tokend(
        *("init", "--server", "db.example", "--user", "u", "--identity", "azure-cli"),
        *("--authority", "https://login.example/contoso.onmicrosoft.com", "--config", str(tmp_path / "c.toml")),
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "--authority https://login.example --tenant contoso.onmicrosoft.com" in lines[0]
    assert not (tmp_path / "c.toml").exists()


def test_interactive_asks_for_a_custom_authority_and_the_port(
    em: Tenant, postgres: Postgres, pgpass: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("TOKEND_TEST_SECRET", SECRET)
    cfg = tmp_path / "config.toml"
    term = Terminal([TOKEND, "init", "--no-service", "--config", str(cfg)])
    term.expect("custom sign-in authority")
    term.send(em.url)
    term.expect("Server name")
    term.send("")  # an empty answer is asked again, not the end
    term.expect("Server name (e.g. contoso-prod): ", timeout=10)
    term.send("127.0.0.1")
    term.expect("Port")
    term.send(str(postgres.port))
    term.expect("PostgreSQL user")
    term.send(GROUP)
    term.expect("Database")
    term.send("appdb")
    term.expect("Sign in with")
    term.send("service-principal")
    term.expect("Tenant")
    term.send(em.tenant_id)
    term.expect("Client (application) id")
    term.send(em.app.client_id)
    term.expect("environment variable")
    term.send("TOKEND_TEST_SECRET")
    term.expect("works")
    assert term.wait() == 0, term.seen
    assert term.seen.count("Server name") == 2
    c = load(cfg)
    assert c.identities["app"].authority_override == em.url and c.targets["db-127-0-0-1"].port == postgres.port


def test_device_code_where_no_secret_service_answers_says_so_in_one_line(em: Tenant, tmp_path: Path) -> None:
    """A headless machine (no D-Bus session here): the unencrypted cache is the way, named in one line — not a
    config that can never sign in, nor libsecret's many lines."""
    cfg = tmp_path / "config.toml"
    args = ("init", "--server", "db.example", "--user", em.alice.upn, "--identity", "device-code")
    r = tokend(*args, "--tenant", em.tenant_id, "--authority", em.url, "--no-service", "--config", str(cfg))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "--allow-unencrypted-cache" in lines[0], r.stderr
    assert "Secret Service" in lines[0] and not cfg.exists()
    r = tokend(
        *args,
        "--tenant",
        em.tenant_id,
        "--authority",
        em.url,
        "--allow-unencrypted-cache",
        "--no-service",
        "--config",
        str(cfg),
    )
    assert r.returncode == 0 and "tokend login me" in r.stdout, r.stderr
    assert load(cfg).identities["me"].allow_unencrypted_cache
