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
