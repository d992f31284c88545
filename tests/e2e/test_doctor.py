"""tokend doctor: each promised failure provoked for real, with its evidence and fix; and a clean bill of health."""

from __future__ import annotations

from pathlib import Path

from tokend.emulator.postgres import Postgres

from support.builders import GROUP, device_identity, sp_config
from support.daemon import login
from support.net import closed_port
from support.product import doctor, tokend
from support.tenant import Tenant
from support.waits import wait_for


def test_healthy(em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg)
    d.wait_ready()
    wait_for(lambda: pgpass.exists(), what="pgpass")
    code, c = doctor(cfg, "--login")
    failed = {k: v for k, v in c.items() if v["status"] == "fail"}
    assert code == 0 and not failed, failed
    assert c["identity sp"]["status"] == "ok" and em.app.client_id in c["identity sp"]["evidence"]
    assert c["identity sp audience"]["evidence"] == "https://ossrdbms-aad.database.windows.net"
    assert c["target db tls"]["status"] == "ok" and "TLS" in c["target db tls"]["evidence"]
    assert c["target db login"]["evidence"] == f"logged in through pgpass as {GROUP}"
    assert c["psql's libpq"]["status"] == "ok"
    assert "psycopg's libpq" not in c  # the product's own environment has no psycopg: nothing to judge there
    assert c["service"]["status"] == "warn"  # no user systemd here: said, not failed
    human = tokend("doctor", "--config", str(cfg))
    assert human.returncode == 0 and "✓ identity sp" in human.stdout


def test_every_promised_failure(em: Tenant, postgres: Postgres, pgpass: Path, write_config) -> None:
    em.emulator.directory.lifetime = 60
    sp = sp_config(em, postgres.port, targets="")
    wrong_aud = (
        sp.replace("[identities.sp]", "[identities.mgmt]") + 'resource = "https://management.core.windows.net"\n'
    )
    text = (
        sp
        + wrong_aud
        + device_identity("me", em.url, em.tenant_id)
        + f'[targets.db]\nhost = "127.0.0.1"\nport = {postgres.port}\nuser = "{GROUP}"\nidentity = "sp"\n'
        + '[targets.nowhere]\nhost = "no-such-host.invalid"\nuser = "u"\nidentity = "sp"\n'
        + f'[targets.closed]\nhost = "127.0.0.1"\nport = {closed_port()}\nuser = "u"\nidentity = "sp"\n'
        + '[targets.mgmt]\nhost = "m.example"\nuser = "u"\nidentity = "mgmt"\n'
        + f'[targets.mine]\nhost = "me.example"\nuser = "{em.alice.upn}"\nidentity = "me"\n'
    )
    cfg = write_config(text)
    assert login(cfg, em.emulator, em.alice.upn, "me").returncode == 0
    em.emulator.revoke(em.alice.upn)  # the sign-in has expired, as far as Entra is concerned
    # a pgpass written by tokend, then spoiled by hand: world-readable, and a line of the user's first
    cfg.write_text(sp + f'[targets.db]\nhost = "127.0.0.1"\nport = {postgres.port}\nuser = "{GROUP}"\n')
    assert tokend("run", "--once", "--config", str(cfg)).returncode == 0
    cfg.write_text(text)
    pgpass.write_text(f"127.0.0.1:{postgres.port}:*:{GROUP}:an-old-pasted-token\n" + pgpass.read_text())
    pgpass.chmod(0o644)

    code, c = doctor(cfg)
    assert code == 1
    expect = {
        "daemon": ("no daemon answers", "tokend service install"),
        "pgpass mode": ("0644", "chmod 600"),
        "pgpass shadowing": ("line 1", "below tokend's block"),
        "target nowhere host": ("does not resolve", "DNS"),
        "target closed port": ("does not accept TCP", "firewall"),
        "identity mgmt audience": ("management.core.windows.net", "remove `resource`"),
        "identity me": ("sign-in needed", "tokend login me"),
    }
    for name, (evidence, fix) in expect.items():
        assert c[name]["status"] == "fail", (name, c[name])
        assert evidence in c[name]["evidence"] and fix in c[name]["fix"], (name, c[name])
    assert c["identity sp"]["status"] == "ok"
