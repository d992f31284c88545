"""Status tells the truth (issue 22 item 8 and smaller items), from the installed product: a pgpass libpq will
ignore is not "ok", a proxy listener that could not bind names its host, and a proxy that cannot reach its server
through TLS says so until it can."""

from __future__ import annotations

import socket
from pathlib import Path

from tokend.emulator import ca
from tokend.emulator.postgres import Postgres

from support.builders import proxy_config, sp_config
from support.clients import psql, psql_at
from support.net import free_port
from support.product import tokend
from support.tenant import Tenant
from support.waits import wait_for


def test_a_pgpass_others_can_read_is_not_ok(em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg)
    d.wait_ready()
    wait_for(lambda: d.status()["targets"][0]["sinks"]["pgpass"]["state"] == "ok", what="pgpass written")
    pgpass.chmod(0o644)
    assert psql(postgres.port).returncode != 0  # libpq ignores it, as status must now say
    sink = wait_for(
        lambda: (s := d.status()["targets"][0]["sinks"]["pgpass"])["state"] == "ignored" and s, what="ignored"
    )
    assert sink["last_error"] == f"{pgpass} is 0644: libpq ignores a pgpass that others can read; chmod 600 {pgpass}"
    human = tokend("status", "--config", str(cfg)).stdout
    assert "pgpass ignored" in human and f"chmod 600 {pgpass}" in human
    pgpass.chmod(0o600)
    wait_for(lambda: d.status()["targets"][0]["sinks"]["pgpass"]["state"] == "ok", what="ok again")


def test_a_listener_that_cannot_bind_names_its_host(em: Tenant, postgres: Postgres, write_config, daemon) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        cfg = write_config(proxy_config(em, postgres, listen=f'["127.0.0.1:{port}"]'))
        d = daemon(cfg)
        d.wait_ready()
        proxy = wait_for(lambda: (p := d.status()["targets"][0]["proxy"]) and p["last_error"] and p, what="error")
        assert proxy["listen"] == [{"host": "127.0.0.1", "port": port}]
        assert f"proxy 127.0.0.1:{port}" in tokend("status", "--config", str(cfg)).stdout


def test_a_proxy_whose_server_tls_fails_says_so_until_it_works(
    em: Tenant, postgres: Postgres, write_config, daemon, tmp_path: Path
) -> None:
    """The proxy's last_error stayed null through TLS failures of its own login to the server."""
    stranger = ca.make(tmp_path / "other-ca").ca_cert  # a CA that did not sign the server's certificate
    text = proxy_config(em, postgres, listen='["unix:6432"]')
    cfg = write_config(text.replace(f'sslrootcert = "{postgres.ca_cert}"', f'sslrootcert = "{stranger}"'))
    d = daemon(cfg)
    d.wait_ready()
    folder = wait_for(lambda: (d.status()["targets"][0]["proxy"] or {}).get("listen"), what="listening")[0]["host"]
    through = f"host={folder} port=6432 dbname=appdb"
    r = psql_at(through)
    assert r.returncode != 0 and "sslrootcert" in r.stderr, r.stderr
    proxy = d.status()["targets"][0]["proxy"]
    assert proxy["last_error"] and "TLS" in proxy["last_error"] and "sslrootcert" in proxy["last_error"], proxy
    assert "sslrootcert" in tokend("status", "--config", str(cfg)).stdout
    cfg.write_text(text)  # the right CA: the next login works and the error goes
    wait_for(lambda: psql_at(through).returncode == 0, timeout=30, what="a login with the right CA")
    assert d.status()["targets"][0]["proxy"]["last_error"] is None
