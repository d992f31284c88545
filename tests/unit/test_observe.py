"""The health and metrics endpoint in-process, against hand-made Snapshots (no daemon): /healthz, /readyz and
/metrics over real HTTP on loopback, and what they must never show."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tokend import observe
from tokend.config import Listen
from tokend.ioloop import IOLoop
from tokend.snapshot import IdentityView, ProxyView, SinkView, Snapshot, TargetView

from support.net import free_port

pytestmark = pytest.mark.portable

NOW = 1_800_000_000.0
OK_SINK = SinkView("ok", "/home/alice/.pgpass", int(NOW - 60), None)
READY = Snapshot(
    now=NOW,
    config="/home/alice/.config/tokend/config.toml",
    config_error=None,
    pid=4242,
    started_at=NOW - 600,
    identities=(
        IdentityView("me", "azure-cli", "ok", "alice@contoso.com", 3000.0, 2500.0, None, None, {"new": 3, "same": 1}),
    ),
    targets=(
        TargetView(
            "prod",
            {"name": "prod", "host": "secret-host.example", "port": 5432, "database": "*", "user": "DBA Group"},
            {"pgpass": OK_SINK},
            ProxyView((("127.0.0.1", 6432),), 2, 17, None, None),
        ),
    ),
    sink_writes={"pgpass": {"ok": 5, "failed": 1}},
    reloads={"accepted": 2},
    proxy_running=True,
)


class Served:
    def __init__(self) -> None:
        self.snapshot = READY
        self.taken = 0

    def take(self) -> Snapshot:
        self.taken += 1
        return self.snapshot


@pytest.fixture
def served() -> Iterator[tuple[Served, int]]:
    s = Served()
    io = IOLoop().start()
    port = free_port()
    o = observe.start(s.take, io, Listen(False, "127.0.0.1", port))
    try:
        yield s, port
    finally:
        o.close()
        io.stop()


def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def test_healthz_answers_without_taking_a_snapshot(served: tuple[Served, int]) -> None:
    s, port = served
    assert get(port, "/healthz") == (200, "ok\n") and s.taken == 0


def test_readyz_is_200_when_all_is_in_order(served: tuple[Served, int]) -> None:
    _, port = served
    assert get(port, "/readyz") == (200, "ready\n")


def test_readyz_names_each_problem_in_config_names_and_fixed_words(served: tuple[Served, int]) -> None:
    s, port = served
    failed = SinkView("failed", "/home/alice/.pgpass", None, "/home/alice/.pgpass: permission denied")
    broken_proxy = ProxyView((("127.0.0.1", 6432),), 0, 0, "cannot listen on 127.0.0.1:6432: in use", None)
    s.snapshot = replace(
        READY,
        identities=(replace(READY.identities[0], state="login-required", remaining=None, principal=None),),
        targets=(replace(READY.targets[0], sinks={"pgpass": failed}, proxy=broken_proxy),),
    )
    status, body = get(port, "/readyz")
    assert status == 503
    assert body.splitlines() == [
        "identity me: login-required",
        "target prod sink pgpass: failed",
        "target prod proxy: not listening",
    ]
    for secret in ("secret-host", "6432", "alice", "permission", ".pgpass"):
        assert secret not in body


def test_metrics_read_the_snapshot(served: tuple[Served, int]) -> None:
    _, port = served
    status, body = get(port, "/metrics")
    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    assert samples[("tokend_token_expiry_seconds", (("identity", "me"),))] == 3000.0
    assert samples[("tokend_token_requests_total", (("identity", "me"), ("result", "new")))] == 3
    assert samples[("tokend_sink_writes_total", (("result", "failed"), ("sink", "pgpass")))] == 1
    assert samples[("tokend_config_reloads_total", (("result", "accepted"),))] == 2
    assert samples[("tokend_config_reloads_total", (("result", "refused"),))] == 0
    assert samples[("tokend_proxy_connections_open", (("target", "prod"),))] == 2
    assert samples[("tokend_proxy_connections_total", (("target", "prod"),))] == 17
    assert samples[("tokend_ready", ())] == 1.0
    assert "secret-host" not in body and "alice" not in body


def test_metrics_without_a_proxy_have_no_proxy_families_and_a_missing_token_is_zero(
    served: tuple[Served, int],
) -> None:
    s, port = served
    s.snapshot = replace(
        READY,
        identities=(replace(READY.identities[0], state="starting", remaining=None),),
        targets=(replace(READY.targets[0], proxy=None),),
        proxy_running=False,
    )
    _, body = get(port, "/metrics")
    assert "tokend_proxy_connections" not in body
    assert 'tokend_token_expiry_seconds{identity="me"} 0.0' in body and "tokend_ready 0.0" in body


def test_anything_else_is_refused(served: tuple[Served, int]) -> None:
    _, port = served
    assert get(port, "/readyz", "POST") == (405, "GET only\n")
    assert get(port, "/nope")[0] == 404
