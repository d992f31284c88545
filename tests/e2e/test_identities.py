"""Every identity source, through the real azure-identity (and the real Azure CLI) against the emulator, ends in a
psql login as the group on the token-checking PostgreSQL, with no password given."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tokend.emulator.postgres import Postgres

from support.builders import GROUP, SECRET
from support.clients import psql
from support.product import tokend
from support.tenant import Tenant


def target(pg: Postgres, identity: str) -> str:
    return (
        f'[targets.db]\nhost = "127.0.0.1"\nport = {pg.port}\ndatabase = "appdb"\nuser = "{GROUP}"\n'
        f'identity = "{identity}"\n'
    )


def run_once_and_login(config: Path, pg: Postgres, pgpass: Path, env: dict[str, str] | None = None) -> str:
    r = tokend("run", "--once", "--config", str(config), env=env)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
    login = psql(pg.port)
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == GROUP
    return r.stderr


def test_service_principal_secret(em: Tenant, postgres: Postgres, pgpass: Path, write_config) -> None:
    cfg = write_config(
        f'[identities.sp]\nsource = "service-principal"\ntenant_id = "{em.tenant_id}"\n'
        f'client_id = "{em.app.client_id}"\nclient_secret_env = "TOKEND_TEST_SECRET"\n'
        f'authority = "{em.url}"\n' + target(postgres, "sp")
    )
    log = run_once_and_login(cfg, postgres, pgpass)
    assert SECRET not in log
    assert em.emulator.ldap.checks[-1] == {**em.emulator.ldap.checks[-1], "ok": True, "role": GROUP}


def test_service_principal_certificate(em: Tenant, postgres: Postgres, pgpass: Path, write_config) -> None:
    cfg = write_config(
        f'[identities.cert]\nsource = "service-principal"\ntenant_id = "{em.tenant_id}"\n'
        f'client_id = "{em.cert_app.client_id}"\ncertificate_path = "{em.cert_pem}"\n'
        f'authority = "{em.url}"\n' + target(postgres, "cert")
    )
    run_once_and_login(cfg, postgres, pgpass)


def test_managed_identity(em: Tenant, postgres: Postgres, pgpass: Path, write_config) -> None:
    env = dict(os.environ, IDENTITY_ENDPOINT=f"{em.url}/msi/token", IDENTITY_HEADER=em.emulator.identity_header)
    cfg = write_config('[identities.mi]\nsource = "managed-identity"\n' + target(postgres, "mi"))
    run_once_and_login(cfg, postgres, pgpass, env)


def test_user_assigned_managed_identity_by_client_id(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config
) -> None:
    env = dict(os.environ, IDENTITY_ENDPOINT=f"{em.url}/msi/token", IDENTITY_HEADER=em.emulator.identity_header)
    cfg = write_config(
        f'[identities.mi]\nsource = "managed-identity"\nclient_id = "{em.mi.client_id}"\n' + target(postgres, "mi")
    )
    run_once_and_login(cfg, postgres, pgpass, env)


def test_workload_identity(em: Tenant, postgres: Postgres, pgpass: Path, write_config, tmp_path: Path) -> None:
    token_file = tmp_path / "federated-token"
    token_file.write_text(em.emulator.directory.mint_federated(em.wi_app))
    cfg = write_config(
        f'[identities.wi]\nsource = "workload-identity"\ntenant_id = "{em.tenant_id}"\n'
        f'client_id = "{em.wi_app.client_id}"\ntoken_file = "{token_file}"\nauthority = "{em.url}"\n'
        + target(postgres, "wi")
    )
    run_once_and_login(cfg, postgres, pgpass)


def test_default_chain_uses_environment(em: Tenant, postgres: Postgres, pgpass: Path, write_config) -> None:
    env = dict(os.environ, AZURE_TENANT_ID=em.tenant_id, AZURE_CLIENT_ID=em.app.client_id, AZURE_CLIENT_SECRET=SECRET)
    cfg = write_config(f'[identities.d]\nsource = "default"\nauthority = "{em.url}"\n' + target(postgres, "d"))
    run_once_and_login(cfg, postgres, pgpass, env)


def test_azure_cli(em: Tenant, postgres: Postgres, pgpass: Path, write_config, az) -> None:
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
    cfg = write_config('[identities.cli]\nsource = "azure-cli"\n' + target(postgres, "cli"))
    run_once_and_login(cfg, postgres, pgpass)


def test_azure_cli_not_signed_in_is_login_required(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, az
) -> None:
    cfg = write_config('[identities.cli]\nsource = "azure-cli"\n' + target(postgres, "cli"))
    r = tokend("run", "--once", "--config", str(cfg))
    assert r.returncode == 1
    assert "az login" in r.stderr and "Traceback" not in r.stderr
    assert not pgpass.exists()


def test_unreachable_authority_is_one_line(em: Tenant, postgres: Postgres, pgpass: Path, write_config) -> None:
    cfg = write_config(
        f'[identities.sp]\nsource = "service-principal"\ntenant_id = "{em.tenant_id}"\n'
        f'client_id = "{em.app.client_id}"\nclient_secret_env = "TOKEND_TEST_SECRET"\n'
        f'authority = "https://127.0.0.1:9"\n' + target(postgres, "sp")
    )
    r = tokend("run", "--once", "--config", str(cfg))
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokend: identity sp:"), r.stderr
    assert not pgpass.exists()


@pytest.mark.parametrize(
    ("cloud", "resource"),
    [
        ("public", "https://ossrdbms-aad.database.windows.net"),
        ("usgov", "https://ossrdbms-aad.database.usgovcloudapi.net"),
        ("china", "https://ossrdbms-aad.database.chinacloudapi.cn"),
    ],
)
def test_cloud_picks_the_resource(em: Tenant, pgpass: Path, write_config, cloud: str, resource: str) -> None:
    cfg = write_config(
        f'[identities.sp]\nsource = "service-principal"\ntenant_id = "{em.tenant_id}"\n'
        f'client_id = "{em.app.client_id}"\nclient_secret_env = "TOKEND_TEST_SECRET"\n'
        f'cloud = "{cloud}"\nauthority = "{em.url}"\n'
        '[targets.t]\nhost = "h"\nuser = "u"\n'
    )
    r = tokend("token", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    issued = {i["token"]: i for i in em.emulator.directory.issued}
    assert issued[r.stdout.strip()]["aud"] == resource
