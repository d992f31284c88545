"""Advice that is right (issue 22 items 7 and 8): each failure provoked for real from the installed product, and
the fix doctor, admin and the daemon's status give for it — the one line tokend/advice.py holds for that kind."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tokend.emulator.postgres import Postgres

from support.builders import GROUP, device_identity, sp_config
from support.daemon import login
from support.product import doctor, tokend
from support.tenant import Tenant
from support.waits import wait_for

OUTSIDERS = "Outsiders Group"  # a group the test app is not a member of


def test_no_line_matches_yet_with_no_daemon_says_start_the_daemon(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config
) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    pgpass.write_text("other.example:5432:*:someone:a-password\n")
    pgpass.chmod(0o600)
    c = doctor(cfg)[1]["pgpass shadowing"]
    assert c["status"] == "fail" and "no line matches yet" in c["evidence"], c
    assert "no daemon runs" in c["fix"] and "tokend run" in c["fix"] and "below tokend's block" not in c["fix"], c


def test_an_authority_whose_tls_is_not_trusted_gets_the_ca_bundle_fix(
    em: Tenant, postgres: Postgres, write_config
) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    env = {k: v for k, v in os.environ.items() if k != "REQUESTS_CA_BUNDLE"}  # Entra's CA unknown to the daemon
    c = doctor(cfg, env=env)[1]["identity sp"]
    assert c["status"] == "fail", c
    assert "ca_bundle" in c["fix"] and "[identities.sp]" in c["fix"] and "check the network" not in c["fix"], c


def test_an_authority_that_does_not_resolve_gets_the_authority_fix(
    em: Tenant, postgres: Postgres, write_config
) -> None:
    text = sp_config(em, postgres.port).replace(
        f'authority = "{em.url}"', 'authority = "https://login.no-such.invalid"'
    )
    c = doctor(write_config(text))[1]["identity sp"]
    assert c["status"] == "fail", c
    assert "`authority`" in c["fix"] and "DNS" in c["fix"], c


def test_admin_tls_failure_says_set_the_sslrootcert(em: Tenant, postgres: Postgres, write_config) -> None:
    targets = f'[targets.plain]\nhost = "127.0.0.1"\nport = {postgres.port}\nuser = "{GROUP}"\nidentity = "sp"\n'
    cfg = write_config(sp_config(em, postgres.port, targets=targets))  # no sslrootcert: the server's CA is unknown
    r = tokend("admin", "list", "--target", "plain", "--config", str(cfg))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "fix: set the target's sslrootcert (in [targets.plain])" in lines[0], r.stderr


def test_a_refused_group_login_asks_whether_the_identity_is_a_member(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon
) -> None:
    em.emulator.directory.add_group(OUTSIDERS, em.alice.oid)
    postgres.sql(f'CREATE ROLE "{OUTSIDERS}" LOGIN')  # the server has the group; the test app is no member
    try:
        targets = f'[targets.out]\nhost = "127.0.0.1"\nport = {postgres.port}\nuser = "{OUTSIDERS}"\nidentity = "sp"\n'
        cfg = write_config(sp_config(em, postgres.port, targets=targets))
        daemon(cfg).wait_ready()
        wait_for(lambda: pgpass.exists() and OUTSIDERS in pgpass.read_text(), what="the pgpass line")
        c = doctor(cfg, "--login")[1]["target out login"]
    finally:
        postgres.sql(f'DROP ROLE IF EXISTS "{OUTSIDERS}"')
    assert c["status"] == "fail", c
    assert f"is this identity a member of the group '{OUTSIDERS}'?" in c["fix"], c


def test_a_pgpass_made_0644_is_not_ok_in_status_or_doctor(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon
) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    daemon(cfg).wait_ready()
    wait_for(lambda: pgpass.exists(), what="pgpass")
    pgpass.chmod(0o644)  # libpq now ignores the file

    def sink_state() -> dict:
        status = json.loads(tokend("status", "--json", "--config", str(cfg)).stdout)
        return status["targets"][0]["sinks"]["pgpass"]

    said = wait_for(lambda: (s := sink_state())["state"] == "ignored" and s, what="the pgpass sink to be ignored")
    assert "libpq ignores a pgpass that others can read" in said["last_error"] and "chmod 600" in said["last_error"], (
        said
    )
    c = doctor(cfg)[1]["pgpass mode"]
    assert c["status"] == "fail" and c["fix"] == f"chmod 600 {pgpass}", c


def test_signed_in_as_another_account_than_the_targets_user(em: Tenant, write_config) -> None:
    bob = "bob@contoso.example"
    text = device_identity("me", em.url, em.tenant_id) + (
        f'[targets.mine]\nhost = "127.0.0.1"\nuser = "{bob}"\nidentity = "me"\n'
    )
    cfg = write_config(text)
    assert login(cfg, em.emulator, em.alice.upn, "me").returncode == 0
    c = doctor(cfg)[1]["target mine user"]
    assert c["status"] == "fail" and em.alice.upn in c["evidence"] and bob in c["evidence"], c
    assert f"sign in as {bob} again" in c["fix"], c


def test_admin_as_a_group_the_identity_is_not_in_asks_about_membership(
    em: Tenant, postgres: Postgres, write_config
) -> None:
    group = "Outsider Admins"
    em.emulator.directory.add_group(group, em.alice.oid)
    postgres.sql(f'CREATE ROLE "{group}" LOGIN')
    try:
        targets = (
            f'[targets.adm]\nhost = "127.0.0.1"\nport = {postgres.port}\nuser = "{group}"\nidentity = "sp"\n'
            f'sslrootcert = "{postgres.ca_cert}"\n'
        )
        r = tokend(
            "admin",
            "list",
            "--target",
            "adm",
            "--config",
            str(write_config(sp_config(em, postgres.port, targets=targets))),
        )
    finally:
        postgres.sql(f'DROP ROLE IF EXISTS "{group}"')
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert f"is this identity a member of the group '{group}'?" in lines[0], r.stderr
