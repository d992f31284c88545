"""The status table, rendered from plain dicts in the status JSON contract (no daemon)."""

from __future__ import annotations

from typing import Any

import pytest

from tokend import status
from tokend.snapshot import IdentityView, ProxyView, SinkView, Snapshot, TargetView

pytestmark = pytest.mark.portable

NOW = 1_800_000_000.0


def snapshot(**over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "pid": 4242,
        "config": "/home/alice/.config/tokend/config.toml",
        "config_error": None,
        "identities": [
            {
                "name": "me",
                "state": "ok",
                "source": "azure-cli",
                "principal": "alice@contoso.com",
                "expires_on": NOW + 54 * 60,
                "last_error": None,
            }
        ],
        "targets": [
            {
                "name": "prod",
                "user": "DBA Group",
                "host": "prod.example",
                "port": 5432,
                "database": "*",
                "sinks": {"pgpass": {"state": "ok", "last_write": NOW - 180, "last_error": None}},
                "proxy": None,
            },
            {
                "name": "rpt",
                "user": "Readers",
                "host": "rpt.example",
                "port": 5432,
                "database": "reports",
                "sinks": {},
                "proxy": {
                    "listen": [
                        {"host": "/run/user/1000/tokend/proxy", "port": 5432},
                        {"host": "127.0.0.1", "port": 6432},
                    ],
                    "open": 2,
                    "total": 17,
                    "last_error": None,
                },
            },
        ],
    }
    s.update(over)
    return s


def test_table_says_who_connects_where_and_where_the_token_is() -> None:
    text = status.render(snapshot(), NOW)
    lines = text.splitlines()
    assert lines[0] == f"tokend pid 4242 · config {snapshot()['config']} · 1 identity, 2 targets"
    me = next(line for line in lines if line.startswith("me "))
    assert me.split()[:3] == ["me", "ok", "azure-cli"] and me.endswith("expires in 54 m")
    prod = next(line for line in lines if line.startswith("prod "))
    assert "DBA Group@prod.example:5432/*" in prod and prod.endswith("pgpass ok (3 m ago)")
    rpt = next(line for line in lines if line.startswith("rpt "))
    # A proxy-only target: its listeners, nothing else (no "-" glued to them).
    assert rpt.endswith(
        "Readers@rpt.example:5432/reports  proxy /run/user/1000/tokend/proxy:5432, 127.0.0.1:6432 (2 open)"
    )


def test_problems_show_under_their_row_and_a_refused_config_on_top() -> None:
    s = snapshot(config_error="config.toml: targets.x.identity: no identity 'y'")
    s["identities"][0].update(state="login-required", expires_on=None, last_error="run `az login`")
    s["targets"][0]["sinks"]["pgpass"].update(state="error", last_error="/x/.pgpass: read-only file system")
    s["targets"][1]["proxy"]["last_error"] = "127.0.0.1:6432: address in use"
    lines = status.render(s, NOW).splitlines()
    assert "config change refused" in lines[1] and "no identity 'y'" in lines[1]
    me = next(i for i, line in enumerate(lines) if line.startswith("me "))
    assert "login-required" in lines[me] and lines[me + 1] == "    ! run `az login`"
    prod = next(i for i, line in enumerate(lines) if line.startswith("prod "))
    assert lines[prod + 1] == "    ! pgpass: /x/.pgpass: read-only file system"
    rpt = next(i for i, line in enumerate(lines) if line.startswith("rpt "))
    assert lines[rpt + 1] == "    ! proxy: 127.0.0.1:6432: address in use"


def test_a_target_with_nowhere_to_put_its_token_shows_a_dash() -> None:
    s = snapshot()
    s["targets"] = [dict(s["targets"][1], proxy=None)]
    row = next(line for line in status.render(s, NOW).splitlines() if line.startswith("rpt "))
    assert row.endswith("/reports  -")


def test_times_read_naturally() -> None:
    assert status.until(None, NOW) == "no token"
    assert status.until(NOW - 5, NOW) == "expired"
    assert "expires in" in status.until(NOW + 3 * 3600, NOW)
    assert status.ago(NOW - 30, NOW).endswith("ago")
    assert status.plural(1, "target") == "1 target" and status.plural(2, "identity", "identities") == "2 identities"


def test_the_status_json_is_rendered_from_a_snapshot_with_the_contracts_keys() -> None:
    snap = Snapshot(
        now=NOW,
        config="/c.toml",
        config_error=None,
        pid=7,
        started_at=NOW - 10.5,
        identities=(IdentityView("me", "azure-cli", "ok", "alice@contoso.com", 600.4, -3.0, None, "unencrypted"),),
        targets=(
            TargetView(
                "prod",
                {"name": "prod", "host": "h", "port": 5432, "database": "*", "user": "U", "identity": "me"},
                {"pgpass": SinkView("ok", "/p", int(NOW), None)},
                ProxyView((("127.0.0.1", 6432),), 1, 2, None, None),
            ),
        ),
    )
    assert status.to_json(snap) == {
        "config": "/c.toml",
        "config_error": None,
        "pid": 7,
        "started_at": int(NOW - 10.5),
        "identities": [
            {
                "name": "me",
                "source": "azure-cli",
                "state": "ok",
                "principal": "alice@contoso.com",
                "expires_on": int(NOW + 600.4),
                "refresh_at": int(NOW),  # overdue: now
                "last_error": None,
                "cache": "unencrypted",
                "inherited": False,  # issue 22: a token the previous daemon left shows as inherited
            }
        ],
        "targets": [
            {
                "name": "prod",
                "host": "h",
                "port": 5432,
                "database": "*",
                "user": "U",
                "identity": "me",
                "sinks": {"pgpass": {"state": "ok", "location": "/p", "last_write": int(NOW), "last_error": None}},
                "proxy": {
                    "listen": [{"host": "127.0.0.1", "port": 6432}],
                    "open": 1,
                    "total": 2,
                    "last_error": None,
                    "certificate": None,
                },
            }
        ],
    }


def test_an_inherited_token_shows_in_the_json_and_the_table() -> None:
    view = IdentityView("me", "azure-cli", "retrying", "alice@contoso.com", 600.0, 5.0, "down", None, inherited=True)
    snap = Snapshot(NOW, "/c.toml", None, 7, NOW, (view,), ())
    shown = status.to_json(snap)
    assert shown["identities"][0]["inherited"] is True
    assert "expires in 10 m (inherited)" in status.render(shown, NOW)


def test_the_proxys_server_side_failure_is_its_last_error_but_not_a_readiness_problem() -> None:
    failing = ProxyView((("127.0.0.1", 6432),), 0, 3, None, None, server_error="TLS to h:5432 failed: set sslrootcert")
    sinks = {"pgpass": SinkView("ok", "/p", 1, None)}
    snap = Snapshot(NOW, "/c.toml", None, 7, NOW, (), (TargetView("prod", {"name": "prod"}, sinks, failing),))
    assert status.to_json(snap)["targets"][0]["proxy"]["last_error"] == "TLS to h:5432 failed: set sslrootcert"
    assert snap.problems() == []  # it listens: ready; the error shows in status
    unbound = ProxyView((("127.0.0.1", 6432),), 0, 0, "cannot listen", None, server_error="TLS failed")
    snap = Snapshot(NOW, "/c.toml", None, 7, NOW, (), (TargetView("prod", {"name": "prod"}, sinks, unbound),))
    assert status.to_json(snap)["targets"][0]["proxy"]["last_error"] == "cannot listen"
