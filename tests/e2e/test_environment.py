"""The daemon's environment and secrets from the installed product: the environment file beside the config, a
mounted secret file, a secret in the OS keychain, and ``ca_bundle`` instead of REQUESTS_CA_BUNDLE."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tokend.emulator.postgres import Postgres

from support.builders import GROUP, SECRET, SECRET_ENV
from support.clients import psql
from support.net import accept_queue, free_port
from support.product import TOKEND, doctor, tokend
from support.tenant import Tenant
from support.waits import wait_for


def sp_with(t: Tenant, pg_port: int, secret_keys: str, extra: str = "") -> str:
    """A service-principal identity with the given secret keys, and the group's target on the test PostgreSQL."""
    return (
        f'[identities.sp]\nsource = "service-principal"\ntenant_id = "{t.tenant_id}"\n'
        f'client_id = "{t.app.client_id}"\nauthority = "{t.url}"\n{secret_keys}{extra}\n'
        f'[targets.db]\nhost = "127.0.0.1"\nport = {pg_port}\ndatabase = "appdb"\nuser = "{GROUP}"\nidentity = "sp"\n'
    )


def bare_env(**more: str) -> dict[str, str]:
    """The test's environment without the secret variable (a login service's environment holds none of it)."""
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    return {**env, **more}


def test_the_secret_reaches_the_daemon_from_the_environment_file(
    em: Tenant, postgres: Postgres, pgpass: Path, tmp_path: Path, daemon
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(sp_with(em, postgres.port, f'client_secret_env = "{SECRET_ENV}"\n'))
    envfile = tmp_path / "tokend.env"
    envfile.write_text(f"# the daemon's secrets\n{SECRET_ENV}={SECRET}\n")
    envfile.chmod(0o644)
    refused = subprocess.run(
        [TOKEND, "run", "--once", "--config", str(cfg)], capture_output=True, text=True, env=bare_env(), timeout=60
    )
    assert refused.returncode == 2, refused.stderr
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1 and str(envfile) in line and "chmod 600" in line and SECRET not in line
    _, checks = doctor(cfg, env=bare_env())  # doctor, without a daemon
    check = checks["identity sp"]
    assert check["status"] == "fail" and "chmod 600" in check["evidence"] and SECRET not in json.dumps(checks), check
    assert check["fix"] == "fix the file as the message says", check
    envfile.chmod(0o600)
    d = daemon(cfg, env=bare_env())
    d.wait_ready()
    wait_for(lambda: psql(postgres.port).stdout.strip() == GROUP, what="psql logged in with the daemon's token")
    shown = tokend("status", "--config", str(cfg)).stdout + tokend("doctor", "--config", str(cfg)).stdout
    assert SECRET not in shown and SECRET not in d.log()


def test_the_secret_reaches_the_daemon_from_a_mounted_secret_file(
    em: Tenant, postgres: Postgres, pgpass: Path, tmp_path: Path, daemon
) -> None:
    mount = tmp_path / "mnt" / "sp"  # laid out as the kubelet does: app → ..data/app → ..TIMESTAMP/app
    stamp = mount / "..2026_12_02_01_00_00.1"
    stamp.mkdir(parents=True)
    (stamp / "app").write_text("not-the-secret\n")
    (stamp / "app").chmod(0o600)
    (mount / "..data").symlink_to(stamp.name)
    (mount / "app").symlink_to("..data/app")
    cfg = tmp_path / "config.toml"
    cfg.write_text(sp_with(em, postgres.port, f'client_secret_file = "{mount / "app"}"\n'))
    d = daemon(cfg, env=bare_env())
    d.wait_status(lambda s: s["identities"][0]["last_error"], "a wrong mounted secret reported")
    assert "not-the-secret" not in (d.status() or {})["identities"][0]["last_error"]
    rotated = mount / "..2026_12_02_02_00_00.2"  # the secret rotated: the kubelet swaps ..data
    rotated.mkdir()
    (rotated / "app").write_text(SECRET + "\n")
    (rotated / "app").chmod(0o600)
    (mount / "..data-new").symlink_to(rotated.name)
    os.replace(mount / "..data-new", mount / "..data")
    d.wait_ready(timeout=120)  # picked up at the next retry, no restart
    wait_for(lambda: psql(postgres.port).stdout.strip() == GROUP, what="psql logged in")


def test_the_secret_reaches_the_daemon_from_the_keychain(
    em: Tenant, postgres: Postgres, pgpass: Path, tmp_path: Path, daemon, secret_service: str
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(sp_with(em, postgres.port, 'client_secret = "keychain"\n'))
    missing = subprocess.run(
        [TOKEND, "run", "--once", "--config", str(cfg)], capture_output=True, text=True, env=bare_env(), timeout=60
    )
    assert missing.returncode != 0 and "tokend secret set sp" in missing.stderr
    stored = subprocess.run(
        [TOKEND, "secret", "set", "sp", "--config", str(cfg)], input=SECRET + "\n", capture_output=True, text=True
    )
    assert stored.returncode == 0, stored.stderr
    assert SECRET not in stored.stdout + stored.stderr
    d = daemon(cfg, env=bare_env())
    d.wait_ready()
    wait_for(lambda: psql(postgres.port).stdout.strip() == GROUP, what="psql logged in")
    d.stop()
    removed = tokend("secret", "remove", "sp", "--config", str(cfg))
    assert removed.returncode == 0 and "removed" in removed.stdout


def test_ca_bundle_replaces_requests_ca_bundle(
    em: Tenant, postgres: Postgres, pgpass: Path, tmp_path: Path, daemon
) -> None:
    env = bare_env(**{SECRET_ENV: SECRET})
    env.pop("REQUESTS_CA_BUNDLE", None)
    env.pop("SSL_CERT_FILE", None)
    cfg = tmp_path / "config.toml"
    cfg.write_text(sp_with(em, postgres.port, f'client_secret_env = "{SECRET_ENV}"\n'))
    untrusted = subprocess.run(
        [TOKEND, "run", "--once", "--config", str(cfg)], capture_output=True, text=True, env=env, timeout=120
    )
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr.lower(), untrusted.stderr
    cfg.write_text(
        sp_with(
            em,
            postgres.port,
            f'client_secret_env = "{SECRET_ENV}"\n',
            f'ca_bundle = "{em.emulator.certs.ca_cert}"\n',
        )
    )
    d = daemon(cfg, env=env)
    d.wait_ready()
    wait_for(lambda: psql(postgres.port).stdout.strip() == GROUP, what="psql logged in")


def test_an_environment_file_written_while_the_daemon_runs_is_read_without_a_restart(
    em: Tenant, postgres: Postgres, pgpass: Path, tmp_path: Path, daemon
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(sp_with(em, postgres.port, f'client_secret_env = "{SECRET_ENV}"\n'))
    d = daemon(cfg, env=bare_env())
    error = d.wait_status(lambda s: s["identities"][0]["last_error"], "the missing secret reported")
    assert SECRET_ENV in error and str(tmp_path / "tokend.env") in error
    fd = os.open(tmp_path / "tokend.env", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, f"{SECRET_ENV}={SECRET}\n".encode())
    os.close(fd)
    d.wait_ready(timeout=120)  # the next retry of the same daemon finds it
    wait_for(lambda: psql(postgres.port).stdout.strip() == GROUP, what="psql logged in")
    assert d.proc.poll() is None and SECRET not in d.log()


@contextlib.contextmanager
def tinyproxy(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Debian's tinyproxy on a loopback port, every CONNECT logged: (its URL, its log)."""
    port, log = free_port(), tmp_path / "tinyproxy.log"
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text(f'Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile "{log}"\nLogLevel Connect\nMaxClients 20\n')
    proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: accept_queue(port) is not None, what="tinyproxy listening")
        yield f"http://127.0.0.1:{port}", log
    finally:
        proc.terminate()
        proc.wait(10)


def test_entra_is_reached_through_the_https_proxy_the_environment_file_names(
    em: Tenant, postgres: Postgres, pgpass: Path, tmp_path: Path, daemon
) -> None:
    """HTTPS_PROXY in tokend.env (README, Secrets and the daemon's environment): every token request goes through
    the proxy (its log shows the CONNECT to the authority), the logins work; with the proxy gone the error says so
    and the fix names HTTPS_PROXY, not the authority."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(sp_with(em, postgres.port, f'client_secret_env = "{SECRET_ENV}"\n'))
    env = {k: v for k, v in bare_env().items() if k.lower() not in ("https_proxy", "http_proxy", "no_proxy")}
    authority = em.url.split("//", 1)[1].split("/", 1)[0]
    with tinyproxy(tmp_path) as (url, log):
        (tmp_path / "tokend.env").write_text(f"HTTPS_PROXY={url}\n{SECRET_ENV}={SECRET}\n")
        (tmp_path / "tokend.env").chmod(0o600)
        d = daemon(cfg, env=env)
        d.wait_ready()
        wait_for(lambda: psql(postgres.port).stdout.strip() == GROUP, what="psql logged in with the daemon's token")
        assert f"CONNECT {authority} " in log.read_text(), log.read_text()
        assert d.stop() == 0
    code, checks = doctor(cfg, env=env)
    check = checks["identity sp"]
    assert code == 1 and check["status"] == "fail", check
    assert "Unable to connect to proxy" in check["evidence"], check
    assert "HTTPS_PROXY" in check["fix"] and str(tmp_path / "tokend.env") in check["fix"], check


def test_exec_without_a_daemon_fetches_in_the_daemons_environment_but_hands_none_of_it_on(
    em: Tenant, postgres: Postgres, tmp_path: Path
) -> None:
    """No daemon: `tokend exec` gets the token itself with the secret from tokend.env, and the command it runs sees
    the token but not the file's secret (the file is applied only while the token is fetched)."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(sp_with(em, postgres.port, f'client_secret_env = "{SECRET_ENV}"\n'))
    (tmp_path / "tokend.env").write_text(f"{SECRET_ENV}={SECRET}\n")
    (tmp_path / "tokend.env").chmod(0o600)
    script = f'psql -Atc "select current_user"; echo "secret:${{{SECRET_ENV}:-none}}"'
    r = tokend("exec", "db", "--config", str(cfg), "--", "sh", "-c", script, env=bare_env())
    assert r.returncode == 0 and r.stdout.splitlines() == [GROUP, "secret:none"], (r.stdout, r.stderr)
