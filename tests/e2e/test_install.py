"""install/install.sh on a fresh HOME, then every command's happy path from that install, two configs side by
side, and a purge of one of them that leaves the other, the user's lines and the installation alone."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tokend.emulator.postgres import Postgres
from tokend.paths import config_id

from support.builders import GROUP, SECRET, device_identity
from support.clients import pgpass_token
from support.daemon import login
from support.product import REPO
from support.tenant import Tenant
from support.waits import wait_for

USER = "# mine\nlegacy.example:5432:*:bob:hunter2\n"


NAME = "db-127-0-0-1"  # init's name for a target on 127.0.0.1 (issue 22: not "localhost")


@pytest.mark.soak
@pytest.mark.slow
def test_install_then_every_command_then_purge_one_config(em: Tenant, postgres: Postgres, tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    home.mkdir()
    (tmp_path / "run").mkdir(mode=0o700)
    env = {
        "HOME": str(home),
        "PATH": f"{home}/.local/bin:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "REQUESTS_CA_BUNDLE": str(em.bundle),
        "TOKEND_TEST_SECRET": SECRET,
    }
    for var in (
        "SSL_CERT_FILE",
        "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "PIP_TRUSTED_HOST",
        "PIP_CONFIG_FILE",
        "PIP_FIND_LINKS",
    ):
        if var in os.environ:
            env[var] = os.environ[var]
    exe = str(home / ".local" / "bin" / "tokend")

    def t(*args: str, ok: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
        if ok:
            assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r

    first = subprocess.run(
        ["sh", str(REPO / "install" / "install.sh")], env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path
    )
    other = None
    try:
        assert first.returncode == 0, first.stdout + first.stderr
        assert "no user systemd" in first.stdout and "started the daemon in the background" in first.stdout
        venv = home / ".local" / "share" / "tokend" / "venv"
        assert t("--version").stdout.startswith("tokend ")
        config = home / ".config" / "tokend" / "config.toml"
        assert config.exists() and stat.S_IMODE(config.stat().st_mode) == 0o600
        wait_for(lambda: t("status", "--json", ok=False).returncode == 0, timeout=30, what="the installed daemon")
        pgpass = home / ".pgpass"
        pgpass.write_text(USER)

        # init adds a server with a service-principal identity; the running daemon picks it up
        r = t(
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
        )
        assert f"current_user = {GROUP}" in r.stdout and f"target {NAME}" in r.stdout
        wait_for(lambda: pgpass_token(pgpass), timeout=30, what="token in pgpass from the installed daemon")
        assert pgpass.read_text().endswith(USER)

        status = json.loads(t("status", "--json").stdout)
        assert [x["name"] for x in status["targets"]] == [NAME]
        assert NAME in t("status").stdout
        token = t("token").stdout.strip()
        assert token == pgpass_token(pgpass)
        assert (
            t("token", "--host", "127.0.0.1", "--port", str(postgres.port), "--user", f'"{GROUP}"').stdout.strip()
            == token
        )
        assert t("exec", NAME, "--", "psql", "-Atc", "select current_user").stdout.strip() == GROUP
        doctor = t("doctor", "--login", ok=False)
        assert doctor.returncode == 0, doctor.stdout
        assert "found" in t("clients").stdout
        (home / ".config" / "azuredatastudio").mkdir(parents=True)  # ADS installed: tokend sets up only what is here
        t("clients", "ads")
        t("clients", "pgadmin", "--output", str(tmp_path / "servers.json"))
        [server] = json.loads((tmp_path / "servers.json").read_text())["Servers"].values()
        assert server["Host"] == "127.0.0.1"
        assert "complete -F _tokend tokend" in t("completion", "bash").stdout
        assert t("completion", "targets").stdout.split() == [NAME]
        t("reload")
        svc = t("service", "status", ok=False)
        assert svc.returncode != 0 and "no user systemd" in svc.stderr + svc.stdout
        assert "tokend running" in t("service", "logs").stdout

        # a second config beside it: a person's device-code sign-in, its own daemon, the same pgpass
        b = tmp_path / "b.toml"
        b.write_text(
            device_identity("me", em.url, em.tenant_id)
            + f'[targets.mine]\nhost = "127.0.0.1"\nport = {postgres.port}\ndatabase = "appdb"\n'
            f'user = "{em.alice.upn}"\n'
        )
        assert login(b, em.emulator, em.alice.upn, env=env, exe=exe).returncode == 0
        other = subprocess.Popen(
            [exe, "run", "--config", str(b)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: pgpass_token(pgpass, em.alice.upn), timeout=30, what="config b's token in pgpass")
        once = tmp_path / "once.toml"
        once.write_text(config.read_text())
        assert t("run", "--once", "--config", str(once)).returncode == 0
        t("logout", "--config", str(b))
        assert login(b, em.emulator, em.alice.upn, env=env, exe=exe).returncode == 0

        # purge the first config: only what it made goes
        purge = t("service", "uninstall", "--purge")
        assert "removed this config's entries" in purge.stdout
        text = pgpass.read_text()
        assert f"tokend {config_id(config)}" not in text and text.endswith(USER)
        assert f"tokend {config_id(once)}" in text and f"tokend {config_id(b)}" in text  # the other configs' blocks
        wait_for(lambda: pgpass_token(pgpass, em.alice.upn), timeout=30, what="config b still served")
        assert other.poll() is None and t("status", "--config", str(b)).returncode == 0
        assert (venv / "bin" / "python").exists() and t("--version").returncode == 0  # the installation stays
        assert config.exists()  # the user's config file is theirs
        assert t("status", ok=False).returncode == 1  # the first config's daemon was stopped by the purge

        second = subprocess.run(
            ["sh", str(REPO / "install" / "install.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp_path,
        )
        assert second.returncode == 0, second.stdout + second.stderr
        assert "wrote a starter config" not in second.stdout  # kept the user's config
        wait_for(lambda: t("status", ok=False).returncode == 0, timeout=30, what="the daemon started again")
    finally:
        subprocess.run([exe, "stop"], env=env, capture_output=True)
        if other is not None:
            other.terminate()
            other.wait(10)


@pytest.mark.soak
@pytest.mark.slow
def test_install_twice_keeps_the_environment_file_config_and_logins(
    em: Tenant, postgres: Postgres, tmp_path: Path
) -> None:
    """A running daemon that has its secret from the environment file and trusts Entra through ``ca_bundle``; a
    second install.sh, run from an environment with neither the secret nor REQUESTS_CA_BUNDLE, keeps the file, the
    config and the secret, and the restarted daemon reads them: psql still logs in."""
    home = tmp_path / "fresh"
    home.mkdir()
    (tmp_path / "run").mkdir(mode=0o700)
    env = {
        "HOME": str(home),
        "PATH": f"{home}/.local/bin:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
    }
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_CONFIG_FILE", "PIP_FIND_LINKS"):
        if var in os.environ:
            env[var] = os.environ[var]
    exe = str(home / ".local" / "bin" / "tokend")
    pgpass = home / ".pgpass"

    def install() -> str:
        r = subprocess.run(
            ["sh", str(REPO / "install" / "install.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    def logs_in() -> bool:
        r = subprocess.run(
            [
                "psql",
                f"host=127.0.0.1 port={postgres.port} dbname=appdb user='{GROUP}' sslmode=require",
                "-w",
                "-Atc",
                "select current_user",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env={**env, "PGPASSFILE": str(pgpass)},
        )
        return r.stdout.strip() == GROUP

    try:
        first = install()
        config = home / ".config" / "tokend" / "config.toml"
        envfile = config.parent / "tokend.env"
        assert "wrote an empty environment file" in first
        assert stat.S_IMODE(envfile.stat().st_mode) == 0o600
        envfile.write_text(envfile.read_text() + f"TOKEND_TEST_SECRET={SECRET}\n")
        config.write_text(
            f'[identities.sp]\nsource = "service-principal"\ntenant_id = "{em.tenant_id}"\n'
            f'client_id = "{em.app.client_id}"\nclient_secret_env = "TOKEND_TEST_SECRET"\nauthority = "{em.url}"\n'
            f'ca_bundle = "{em.emulator.certs.ca_cert}"\n\n'
            f'[targets.db]\nhost = "127.0.0.1"\nport = {postgres.port}\ndatabase = "appdb"\nuser = "{GROUP}"\n'
        )
        wait_for(logs_in, timeout=60, what="psql logging in through the first install's daemon")
        kept = (config.read_bytes(), envfile.read_bytes())

        second = install()
        assert "wrote a starter config" not in second and "wrote an empty environment file" not in second
        assert (config.read_bytes(), envfile.read_bytes()) == kept
        assert stat.S_IMODE(envfile.stat().st_mode) == 0o600

        def identities_ok() -> bool:
            r = subprocess.run([exe, "status", "--json"], env=env, capture_output=True, text=True)
            return r.returncode == 0 and all(i["state"] == "ok" for i in json.loads(r.stdout)["identities"])

        wait_for(
            identities_ok,
            timeout=60,
            what="the reinstalled daemon's identity ok (the secret from the file, Entra trusted by ca_bundle)",
        )
        wait_for(logs_in, timeout=60, what="psql still logging in after the second install")
    finally:
        subprocess.run([exe, "stop"], env=env, capture_output=True)
