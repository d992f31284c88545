"""Minutes-long runs with 60-second tokens. Each is marked `soak`: tests/run.sh runs every soak test in a pytest
process of its own, side by side with the rest of the suite."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from tokend.emulator.postgres import Postgres

from support.builders import GROUP, proxy_config
from support.daemon import started
from support.net import PROXY_PORT
from support.tenant import Tenant
from support.waits import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.soak]


def test_proxy_sessions_live_on_and_new_connections_never_fail(
    em: Tenant, postgres: Postgres, write_config, daemon, tmp_path: Path, monkeypatch
) -> None:
    """Three minutes of 60-s tokens through the proxy: a session opened at the start keeps running queries long
    after its token expired; a new connection every second never fails, through a 20-s Entra outage."""
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    em.emulator.directory.lifetime = 60
    d = daemon(write_config(proxy_config(em, postgres)))
    folder = started(d)["listen"][0]["host"]
    session = psycopg.connect(host=folder, port=6432, dbname="appdb", user=GROUP, autocommit=True)
    failures: list[str] = []
    connects = queries = 0
    outage = threading.Timer(80, em.emulator.refuse_connections)
    back = threading.Timer(100, em.emulator.accept_connections)
    outage.start()
    back.start()
    start = time.monotonic()
    try:
        while time.monotonic() - start < 180:
            t0 = time.monotonic()
            try:
                with psycopg.connect(
                    host="127.0.0.1", port=PROXY_PORT, dbname="appdb", user=GROUP, sslmode="require", connect_timeout=10
                ) as c:
                    assert c.execute("select current_user").fetchone() == (GROUP,)
                connects += 1
            except (psycopg.Error, AssertionError) as e:
                failures.append(f"{time.monotonic() - start:.0f}s connect: {e}")
            if connects % 5 == 0:
                try:
                    assert session.execute("select current_user").fetchone() == (GROUP,)
                    queries += 1
                except (psycopg.Error, AssertionError) as e:
                    failures.append(f"{time.monotonic() - start:.0f}s session: {e}")
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    finally:
        outage.cancel()
        back.cancel()
        em.emulator.accept_connections()
        session.close()
    assert not failures, failures[:5]
    assert connects >= 150 and queries >= 30
    tokens = {i["token"] for i in em.emulator.directory.issued if i["iat"] >= start - 60}
    assert len(tokens) >= 5  # the tokens really rotated underneath
    wait_for(lambda: d.status()["targets"][0]["proxy"]["open"] == 0, what="sessions closed")
