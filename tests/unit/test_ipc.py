"""The IPC package in-process: the server and client over a real Unix socket in a temp folder, answering from a
stand-in daemon (``Answers``): the dispatch table, the request limits, a refused oversize request."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tokend import ipc
from tokend.errors import DaemonNotRunning, TokendError, UsageError
from tokend.ioloop import IOLoop
from tokend.ipc import protocol, server

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="a Unix socket")


class FakeDaemon:
    """Records every call the server makes; knows one target, "a"."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def status(self) -> dict[str, Any]:
        self.calls.append(("status", None))
        return {"identities": [], "targets": [{"name": "a"}]}

    def token_for(self, name: str | None, wait: float = 0.0) -> ipc.TokenAnswer:
        self.calls.append(("token", name))
        if name != "a":
            raise UsageError(f"no target {name!r}")
        return ipc.TokenAnswer("tok-a", 1_800_000_000.0, {"name": "a"})

    def sign_in_changed(self, source: str | None = None, identity: str | None = None) -> None:
        self.calls.append(("sign-in-changed", identity))

    def reload(self, why: str) -> None:
        self.calls.append(("reload", why))

    def stop(self, reason: str) -> None:
        self.calls.append(("stop", reason))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FakeDaemon, ipc.Client, ipc.Endpoint]]:
    d = FakeDaemon()
    io = IOLoop().start()
    where = ipc.UnixEndpoint(tmp_path / "run" / "ipc.sock")
    srv = ipc.Server(where, ipc.handler_for(d), io.executor)
    io.run(srv.start())
    try:
        yield d, ipc.Client(tmp_path / "config.toml", timeout=5, where=where), where
    finally:
        srv.close()
        io.stop()


def raw(where: ipc.Endpoint, data: bytes) -> dict[str, Any]:
    stream = where.connect(5)
    try:
        stream.sendall(data)
        answer: dict[str, Any] = json.loads(ipc.read_answer(stream))
        return answer
    finally:
        stream.close()


def test_the_table_answers_every_operation_in_the_protocols_order() -> None:
    assert tuple(server.TABLE) == protocol.OPS


def test_each_operation_reaches_its_handler(served: tuple[FakeDaemon, ipc.Client, ipc.Endpoint]) -> None:
    d, client, _ = served
    assert client.status()["targets"] == [{"name": "a"}]
    answer = client.token("a")
    assert (answer.token, answer.expires_on, answer.target) == ("tok-a", 1_800_000_000.0, {"name": "a"})
    client.sign_in_changed("me")
    client.reload()
    client.stop()
    assert d.calls == [
        ("status", None),
        ("token", "a"),
        ("sign-in-changed", "me"),
        ("reload", "tokend reload"),
        ("stop", "tokend stop"),
    ]


def test_a_refusal_carries_its_line_and_exit_code(served: tuple[FakeDaemon, ipc.Client, ipc.Endpoint]) -> None:
    _, client, _ = served
    with pytest.raises(TokendError) as e:
        client.token("nope")
    assert e.value.exit_code == 2 and "no target 'nope'" in str(e.value)
    with pytest.raises(TokendError, match="target must be a name or null"):
        client.request({"op": "token", "target": 7})


def test_unknown_and_malformed_requests_are_refused(served: tuple[FakeDaemon, ipc.Client, ipc.Endpoint]) -> None:
    d, _, where = served
    for data, why in (
        (b"not json\n", "bad request"),
        (b'["status"]\n', "unknown request"),
        (b'{"op": "frobnicate"}\n', "unknown request"),
    ):
        answer = raw(where, data)
        assert answer["ok"] is False and why in answer["error"] and answer["exit_code"] == 2
    assert d.calls == []  # none of them reached the daemon


def test_an_oversize_request_is_refused_and_the_server_keeps_answering(
    served: tuple[FakeDaemon, ipc.Client, ipc.Endpoint],
) -> None:
    d, client, where = served
    answer = raw(where, b'{"op": "status"' + b" " * (protocol.MAX_REQUEST + 10) + b"}\n")
    assert answer == {"ok": False, "error": "bad request: too long", "exit_code": 2}
    assert d.calls == [] and client.status()["targets"] == [{"name": "a"}]


def test_dispatch_without_a_server_refuses_what_it_does_not_know() -> None:
    d = FakeDaemon()
    assert ipc.dispatch(d, {"op": "reload"}) == {"reloaded": True}
    with pytest.raises(UsageError, match="unknown request 'frobnicate'; operations: status, token"):
        ipc.dispatch(d, {"op": "frobnicate"})
    with pytest.raises(UsageError, match="unknown request None"):
        ipc.dispatch(d, {})


def test_a_socket_nobody_listens_on_is_no_daemon(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning):
        ipc.Client(tmp_path / "c.toml", where=ipc.UnixEndpoint(tmp_path / "none.sock")).status()


def test_the_socket_is_private(served: tuple[FakeDaemon, ipc.Client, ipc.Endpoint]) -> None:
    _, _, where = served
    assert isinstance(where, ipc.UnixEndpoint)
    assert where.path.stat().st_mode & 0o777 == 0o600 and where.path.parent.stat().st_mode & 0o777 == 0o700
