"""A restarted daemon keeps the logins its predecessor left (issue 22 item 1; DESIGN.md's refresh policy): the
still-valid tokens in its own pgpass block stay there, as `inherited` in status, until its own token arrives or
they expire; a token the sign-in no longer stands behind is not taken over."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tokend.emulator.postgres import Postgres

from support.builders import GROUP, SECRET, SECRET_ENV, sp_config
from support.clients import pgpass_token, psql
from support.procs import sleeping_pgbouncer
from support.tenant import Tenant
from support.waits import wait_for

LIFETIME = 60  # seconds: the emulator's token life, so the adopted token's end comes within the test, and still
# outlives two daemon starts on a loaded machine (support.daemon.STARTUP)


@pytest.mark.soak  # waits for the adopted token's end (LIFETIME): in a process of its own, beside the rest
def test_a_restart_that_cannot_get_a_token_keeps_the_old_one_until_its_end(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon
) -> None:
    em.emulator.directory.lifetime = LIFETIME
    cfg = write_config(sp_config(em, postgres.port))
    first = daemon(cfg)
    first.wait_ready()
    old = wait_for(lambda: pgpass_token(pgpass), what="token in pgpass")
    issued = next(i for i in em.emulator.directory.issued if i["token"] == old)
    assert first.stop() == 0

    without_secret = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    second = daemon(cfg, env=without_secret)

    status = second.wait_status(lambda s: s if s["identities"][0]["inherited"] else None, "the old token adopted")
    ident = status["identities"][0]
    assert ident["state"] == "retrying" and SECRET_ENV in (ident["last_error"] or "")
    assert abs(ident["expires_on"] - issued["exp"]) <= 2
    wait_for(lambda: second.status()["targets"][0]["sinks"]["pgpass"]["state"] == "ok", what="pgpass ok")

    failures = []
    while time.time() < issued["exp"] - 8:
        if pgpass_token(pgpass) != old:
            failures.append("the block lost the old token before its end")
        r = psql(postgres.port)
        if r.returncode != 0 or r.stdout.strip() != GROUP:
            failures.append(r.stderr.strip())
        time.sleep(0.5)
    assert failures == [], failures[:3]
    wait_for(lambda: pgpass_token(pgpass) is None, timeout=15, what="the block emptied at the token's end")
    assert time.time() >= issued["exp"] - 6  # not before (END_MARGIN: 5 s)
    ident = second.status()["identities"][0]
    assert ident["inherited"] is False and ident["expires_on"] is None
    assert second.stop() == 0


def test_a_restart_that_gets_its_own_token_replaces_the_inherited_one(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon
) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    first = daemon(cfg)
    first.wait_ready()
    old = wait_for(lambda: pgpass_token(pgpass), what="token in pgpass")
    assert first.stop() == 0
    em.emulator.refuse_connections()  # Entra down while the new daemon starts
    try:
        second = daemon(cfg)
        second.wait_status(lambda s: s["identities"][0]["inherited"], "the old token adopted")
        assert psql(postgres.port).stdout.strip() == GROUP
    finally:
        em.emulator.accept_connections()
    # its own token: "ok" and no longer inherited (an adopted token alone already reads "ok", as it would have)
    wait_for(
        lambda: (i := second.status()["identities"][0])["state"] == "ok" and not i["inherited"],
        timeout=90,
        what="its own token",
    )
    wait_for(lambda: (t := pgpass_token(pgpass)) and t != old, timeout=30, what="its own token written")
    assert psql(postgres.port).stdout.strip() == GROUP
    assert second.stop() == 0


def az_login(az, em: Tenant, client_id: str, secret: str) -> None:  # type: ignore[no-untyped-def]
    az(
        "login",
        "--service-principal",
        "-u",
        client_id,
        f"--password={secret}",
        "--tenant",
        em.tenant_id,
        "--allow-no-subscriptions",
    )


CLI_CONFIG = '[identities.cli]\nsource = "azure-cli"\n'


def cli_config(pg: Postgres) -> str:
    return (
        CLI_CONFIG + f'[targets.db]\nhost = "127.0.0.1"\nport = {pg.port}\ndatabase = "appdb"\nuser = "{GROUP}"\n'
        'identity = "cli"\n'
    )


@pytest.mark.parametrize("switch", ["logout", "another account"])
def test_a_token_of_an_account_signed_out_or_switched_while_stopped_is_not_kept(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon, az, switch: str
) -> None:
    other = em.emulator.directory.add_app("tokend-other-app", secret="other-secret-value")  # test data
    em.emulator.directory.add_member(GROUP, other.oid)
    cfg = write_config(cli_config(postgres))
    az_login(az, em, em.app.client_id, SECRET)
    first = daemon(cfg)
    first.wait_ready()
    wait_for(lambda: pgpass_token(pgpass), what="token in pgpass")
    assert first.stop() == 0
    if switch == "logout":
        az("logout")
    else:
        az_login(az, em, other.client_id, "other-secret-value")
    em.emulator.refuse_connections()  # the new daemon gets no token of its own: only adoption could keep one
    try:
        second = daemon(cfg)
        second.wait_status(lambda s: s["identities"][0]["state"] != "starting", "first answer")
        wait_for(lambda: pgpass_token(pgpass) is None, timeout=10, what=f"old token removed after {switch}")
        assert second.status()["identities"][0]["inherited"] is False
    finally:
        em.emulator.accept_connections()
    assert second.stop() == 0


def test_a_restart_keeps_pgbouncers_token_too(em: Tenant, postgres: Postgres, write_config, daemon, tmp_path) -> None:
    """The pgbouncer sink's include file is read back like pgpass: a daemon restarted while Entra is down keeps the
    token there (PgBouncer's new server logins go on) instead of emptying the file."""
    include = tmp_path / "tokend.ini"
    with sleeping_pgbouncer(tmp_path) as pidfile:
        cfg = write_config(
            sp_config(
                em,
                postgres.port,
                extra=f'[sinks.pgbouncer]\npath = "{include}"\npidfile = "{pidfile}"\n',
            ).replace('identity = "sp"\n', 'identity = "sp"\nsinks = ["pgbouncer"]\n')
        )
        first = daemon(cfg)
        first.wait_ready()
        old = wait_for(lambda: "password=" in include.read_text() and include.read_text(), what="the include file")
        assert first.stop() == 0
        em.emulator.refuse_connections()  # Entra down while the new daemon starts
        try:
            second = daemon(cfg)
            second.wait_status(lambda s: s["identities"][0]["inherited"], "the old token adopted")
            wait_for(lambda: second.status()["targets"][0]["sinks"]["pgbouncer"]["state"] == "ok", what="written")
            assert include.read_text() == old
        finally:
            em.emulator.accept_connections()
        assert second.stop() == 0
