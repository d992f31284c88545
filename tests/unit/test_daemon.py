"""The daemon's logic in-process, in milliseconds: config swaps (keep, retire, refuse), what sinks and IPC see, and
every IPC operation over the real asyncio endpoint.

The identities and sinks here are stand-ins behind the same interfaces (``support.fakes``), so that the daemon's
own decisions can be watched step by step; the real ones run end to end in tests/e2e/test_daemon.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tokend import config as config_mod
from tokend import ipc, paths, sinks
from tokend.config import Listen
from tokend.daemon import Daemon, _proxy_view
from tokend.errors import ConfigError, DaemonNotRunning, IdentityUnavailable, SinkError, TokendError
from tokend.ioloop import IOLoop
from tokend.sinks import Entry
from tokend.token import Token

from support.fakes import APP, ME, FakeIdentity, MemorySink, World, fetched, jwt, target

pytestmark = pytest.mark.portable  # runs on Linux, macOS and Windows (.github/workflows/ci.yml)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_entries_are_the_targets_of_each_sink_with_a_valid_token(world: World) -> None:
    d = world.daemon(ME + APP + target("a", "me") + target("b", "app", '["pgpass", "keychain"]'))
    assert d.entries("pgpass") == []  # no token yet: nothing to hold
    fetched(d)
    assert [(e.target.name, e.token.value) for e in d.entries("pgpass")] == [("a", "tok-me-1"), ("b", "tok-app-1")]
    assert [e.target.name for e in d.entries("keychain")] == ["b"]
    assert d.entries("pg_service") == []


def test_reload_keeps_unchanged_identities_and_their_tokens(world: World) -> None:
    d = world.daemon(ME + target("a", "me"))
    fetched(d)
    r = d.refreshers["me"]
    world.edit(d, ME + target("a", "me") + target("b", "me", host="other.example"))
    assert d.refreshers["me"] is r and world.identities[0].fetches == 1  # kept: no new token request
    assert [e.target.name for e in d.entries("pgpass")] == ["a", "b"]
    assert d.config_error is None


def test_reload_retires_changed_and_unused_identities(world: World) -> None:
    d = world.daemon(ME + APP + target("a", "me") + target("b", "app"))
    fetched(d)
    old_me, old_app = d.refreshers["me"], d.refreshers["app"]
    world.edit(d, ME.replace('"azure-cli"', '"azure-cli"\ntenant_id = "t2"') + target("a", "me"))
    assert "app" not in d.refreshers and old_app.identity.closed  # unused now: retired
    assert d.refreshers["me"] is not old_me and old_me.identity.closed  # settings changed: a new sign-in
    assert d.entries("pgpass") == []  # the new identity has no token yet: nothing stale is kept


def test_an_identity_no_target_uses_is_shown_unused_and_never_asked(world: World) -> None:
    """A starter config (an identity, no target yet) said "0 identities": status lists it, as unused, and
    readiness does not wait for a token nobody needs."""
    d = world.daemon(ME + APP + target("a", "me"))
    fetched(d)
    shown = {i["name"]: i["state"] for i in d.status()["identities"]}
    assert shown == {"me": "ok", "app": "unused"} and "app" not in d.refreshers
    assert not [p for p in d.snapshot().problems() if p.startswith("identity")]  # the sink worker has not run here


def test_a_moved_sink_cleans_its_old_place_and_a_renamed_same_place_does_not(world: World) -> None:
    d = world.daemon(ME + target("a", "me") + '[sinks.pgpass]\npath = "/one"\n')
    fetched(d)
    first = d.workers["pgpass"].sink
    assert d.workers["pgpass"].sync() and first.held == ["a=tok-me-1"]
    world.edit(d, ME + target("a", "me") + '[sinks.pgpass]\npath = "/two"\n')
    assert first.held == [] and d.workers["pgpass"].sink is not first  # the old place is emptied
    second = d.workers["pgpass"].sink
    assert d.workers["pgpass"].sync() and second.held == ["a=tok-me-1"]
    # options that differ but name the same place: the new sink's write must not be undone by a cleanup
    second.place = lambda: "same"  # type: ignore[method-assign]
    d.build_sink = lambda kind, options, owner: _same_place(world, kind, options, owner)
    world.edit(d, ME + target("a", "me") + '[sinks.pgpass]\npath = "/two/."\n')
    assert second.held == ["a=tok-me-1"]


def _same_place(world: World, kind: str, options: Mapping[str, Any], owner: str) -> MemorySink:
    s = MemorySink(kind, options, owner)
    s.place = lambda: "same"  # type: ignore[method-assign]
    world.sinks.append(s)
    return s


def test_a_bad_config_is_refused_and_the_old_one_keeps_serving(world: World) -> None:
    d = world.daemon(ME + target("a", "me"))
    fetched(d)
    for bad, why in (
        (ME + target("a", "ghost"), "no identity named 'ghost'"),
        (ME + target("a", "me") + '[sinks.pgpass]\npath = "/bad"\n', "/bad: folder does not exist"),
        ("[targets.x\n", "not valid TOML"),
    ):
        world.path.write_text(bad)
        with pytest.raises(TokendError, match=why.replace("(", r"\(")):
            d.reload("test")
        assert why in (d.config_error or "")
        assert [e.target.name for e in d.entries("pgpass")] == ["a"] and d.config.targets["a"].identity == "me"
    world.edit(d, ME + target("a", "me"))
    assert d.config_error is None


def test_catch_up_reads_what_was_saved_before_the_watch_began_and_nothing_else(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TOKEND_TEST_CATCH_UP", "inherited")  # and put back (unset) after the test
    d = world.daemon(ME + target("a", "me"))
    caplog.set_level("INFO", "tokend.daemon")
    d.catch_up("test")
    assert "config unchanged" not in caplog.text and os.environ["TOKEND_TEST_CATCH_UP"] == "inherited"
    env = world.path.parent / "tokend.env"
    env.write_text("TOKEND_TEST_CATCH_UP=saved while starting\n")
    env.chmod(0o600)
    d.catch_up("test")
    assert (
        os.environ["TOKEND_TEST_CATCH_UP"] == "saved while starting"
        and d.env
        and d.env.names == ["TOKEND_TEST_CATCH_UP"]
    )
    world.path.write_text(ME + target("a", "me") + target("b", "me"))
    d.catch_up("test")
    assert sorted(d.config.targets) == ["a", "b"]


def test_a_config_caught_between_truncate_and_write_is_read_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An editor saving in place empties the file, then writes it. A reload in between waits for the writing (and
    applies it); a file that stays empty is refused, and the running config keeps serving."""
    d = world.daemon(ME + target("a", "me"))
    fetched(d)
    read, seen_empty = config_mod.read, threading.Event()

    def watched_read(path: Path) -> bytes:
        data = read(path)
        if not data:
            seen_empty.set()
        return data

    monkeypatch.setattr(config_mod, "read", watched_read)
    world.path.write_text("")
    writer = threading.Thread(
        target=lambda: seen_empty.wait(10) and world.path.write_text(ME + target("a", "me") + target("b", "me"))
    )
    writer.start()
    d.reload("test")
    writer.join()
    assert [e.target.name for e in d.entries("pgpass")] == ["a", "b"] and d.config_error is None
    monkeypatch.setattr("tokend.daemon.EMPTY_CONFIG_WAIT", 0.1)
    world.path.write_text(" \n")
    with pytest.raises(ConfigError, match="is empty; the running config keeps serving"):
        d.reload("test")
    assert [e.target.name for e in d.entries("pgpass")] == ["a", "b"] and "is empty" in (d.config_error or "")


def test_reloads_from_many_threads_are_applied_one_at_a_time(world: World) -> None:
    d = world.daemon(ME + target("a", "me"))
    fetched(d)
    texts = [ME + target("a", "me") + f'[sinks.pgpass]\npath = "/p{i % 2}"\n' for i in range(2)]
    inside, most = [0], [0]
    real_apply = d.apply

    def counting_apply(new: Any) -> None:
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        try:
            real_apply(new)
        finally:
            inside[0] -= 1

    d.apply = counting_apply  # type: ignore[method-assign]

    def hammer(n: int) -> None:
        for i in range(20):
            world.path.write_text(texts[(n + i) % 2])
            with contextlib.suppress(TokendError):
                d.reload(f"thread {n}")

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1


def test_status_tells_each_targets_truth(world: World) -> None:
    d = world.daemon(ME + target("a", "me", '["pgpass", "keychain"]'))
    s = d.status()
    assert s["identities"][0]["state"] == "starting" and s["targets"][0]["sinks"]["pgpass"]["state"] == "empty"
    fetched(d)
    assert d.status()["targets"][0]["sinks"]["pgpass"]["state"] == "pending"
    d.workers["pgpass"].sync()
    st = d.status()["targets"][0]
    assert st["sinks"]["pgpass"]["state"] == "ok" and st["sinks"]["pgpass"]["last_write"] is not None
    assert st["proxy"] is None and {"name", "host", "port", "database", "user", "identity"} <= set(st)
    # a target added later is pending, with no write time borrowed from the others
    world.edit(d, ME + target("a", "me", '["pgpass", "keychain"]') + target("b", "me", host="b.example"))
    b = d.status()["targets"][1]["sinks"]["pgpass"]
    assert b == {**b, "state": "pending", "last_write": None, "last_error": None}


def test_every_ipc_operation(world: World) -> None:
    d = world.daemon(ME + target("a", "me") + target("b", "me", host="b.example"))
    with pytest.raises(TokendError, match="no valid token for target 'a' yet"):
        d.handle({"op": "token", "target": "a"})
    fetched(d)
    assert d.handle({"op": "token", "target": "a"})["token"] == "tok-me-1"
    with pytest.raises(TokendError, match="name a target"):
        d.handle({"op": "token", "target": None})
    with pytest.raises(TokendError, match="must be a name"):
        d.handle({"op": "token", "target": ["a"]})
    assert d.handle({"op": "status"})["targets"][1]["name"] == "b"
    assert d.handle({"op": "sign-in-changed", "identity": "me"}) == {"refreshing": True}
    assert world.identities[0].closed  # the credential is rebuilt at the next fetch
    assert d.handle({"op": "reload"}) == {"reloaded": True}
    with pytest.raises(TokendError, match="unknown request"):
        d.handle({"op": "frobnicate"})
    assert d.handle({"op": "stop"}) == {"stopping": True} and d._stop.is_set()


@pytest.fixture
def served(world: World, tmp_path: Path):
    """A daemon's handler served on a real Unix socket by the real asyncio server, in this process."""
    many = "".join(target(f"t{i}", "me", host=f"h{i}.example") for i in range(10_000))
    d = world.daemon(ME + many)
    fetched(d)
    io = IOLoop().start()
    where = ipc.endpoint(tmp_path / "config.toml")  # this OS's endpoint: a Unix socket, or Windows' named pipe
    server = ipc.Server(where, d.handle, io.executor)
    io.run(server.start())
    yield d, ipc.Client(tmp_path / "config.toml", where=where), where
    server.close()
    io.stop()


def test_ipc_round_trips_over_the_asyncio_server(served) -> None:
    _d, client, where = served
    status = client.status()  # 10,000 targets: far beyond one socket buffer
    assert len(status["targets"]) == 10_000
    assert client.token("t5").token == "tok-me-1"
    with pytest.raises(TokendError) as e:
        client.token("nope")
    assert e.value.exit_code == 2 and "no target 'nope'" in str(e.value)
    for raw, why in (
        (b"not json\n", "bad request"),
        (b'{"op": "status"' + b" " * 70_000 + b"}\n", "too long"),
        (b'["status"]\n', "unknown request"),
    ):
        stream = where.connect(5)
        try:
            stream.sendall(raw)
            answer = json.loads(ipc.read_answer(stream))
        finally:
            stream.close()
        assert answer["ok"] is False and why in answer["error"] and answer["exit_code"] == 2
    t0 = time.monotonic()
    idle = where.connect(5)  # connects and says nothing: does not hold anyone else up
    try:
        assert client.token("t1").token == "tok-me-1"
    finally:
        idle.close()
    assert time.monotonic() - t0 < 2


def test_no_daemon_is_its_own_error(tmp_path: Path) -> None:
    client = ipc.Client(tmp_path / "c.toml")
    with pytest.raises(DaemonNotRunning):
        client.status()


def test_a_config_error_is_a_config_error(world: World) -> None:
    with pytest.raises(ConfigError):
        world.daemon(ME + target("a", "nobody"))


class Refusing(FakeIdentity):
    """An identity whose sign-in cannot answer (a missing secret, Entra down)."""

    def fetch(self, fresh: bool = False) -> Token:
        self.fetches += 1
        raise IdentityUnavailable("environment variable S is not set where tokend runs")


def test_a_starting_daemon_keeps_the_valid_token_its_pgpass_block_holds(tmp_path: Path) -> None:
    pgpass_file = tmp_path / "pgpass"
    text = APP + target("db", "app") + f'[sinks.pgpass]\npath = "{pgpass_file}"\n'
    path = tmp_path / "config.toml"
    path.write_text(text)
    cfg = config_mod.parse(text, path)
    now = time.time()
    old = jwt(exp=now + 600, aud="https://ossrdbms-aad.database.windows.net", appid="mi")
    stale = jwt(exp=now - 60, aud="https://ossrdbms-aad.database.windows.net", appid="mi")
    owner = paths.config_id(path)
    pgpass_file.write_bytes(b"mine:5432:*:me:pw\n")
    ours = sinks.build("pgpass", {"path": str(pgpass_file)}, owner)
    ours.sync([Entry(cfg.targets["db"], Token(old, now + 600, now))])
    other = sinks.build("pgpass", {"path": str(pgpass_file)}, "someone-else")
    other.sync([Entry(cfg.targets["db"], Token(stale, now + 600, now))])  # another config's block: not ours

    d = Daemon(cfg, build_identity=Refusing, build_sink=sinks.build)
    assert d.adopt() == ["app"]
    fetched(d)
    assert [e.token.value for e in d.entries("pgpass")] == [old]
    ident = d.status()["identities"][0]
    assert ident["inherited"] is True and ident["state"] == "retrying"
    assert ident["expires_on"] == pytest.approx(now + 600, abs=2)
    assert d.workers["pgpass"].sync() and old in pgpass_file.read_text()
    assert pgpass_file.read_text().endswith("mine:5432:*:me:pw\n")


def test_nothing_is_adopted_from_a_block_that_holds_nothing_valid(tmp_path: Path) -> None:
    text = APP + target("db", "app") + f'[sinks.pgpass]\npath = "{tmp_path / "pgpass"}"\n'
    path = tmp_path / "config.toml"
    path.write_text(text)
    d = Daemon(config_mod.parse(text, path), build_identity=Refusing, build_sink=sinks.build)
    assert d.adopt() == []  # no file at all
    fetched(d)
    assert d.entries("pgpass") == [] and d.status()["identities"][0]["inherited"] is False


def test_token_by_connection_answers_for_the_target_libpq_would_match(world: World) -> None:
    d = world.daemon(ME + target("a", "me") + target("b", "me", host="b.example"))
    fetched(d)
    ask = {"op": "token-by-connection", "host": "b.example", "port": None, "user": '"DBA Group"', "database": None}
    answer = d.handle(ask)
    assert answer["token"] == "tok-me-1" and answer["target"]["name"] == "b"
    assert d.handle({**ask, "port": "5432", "user": "DBA Group", "database": "postgres"})["target"]["name"] == "b"
    with pytest.raises(TokendError, match="no target in"):
        d.handle({**ask, "port": "6543"})
    with pytest.raises(TokendError, match="give at least --host and --user"):
        d.handle({**ask, "user": None})
    with pytest.raises(TokendError, match="port must be a name"):
        d.handle({**ask, "port": 5432})


def test_writes_are_counted_only_for_the_sinks_a_target_uses(world: World) -> None:
    d = world.daemon(ME + target("a", "me"))
    fetched(d)
    for w in d.workers.values():
        w.sync()
    assert set(d.workers) > {"pgpass"}  # every kind has a worker (a reload may start using it)
    assert set(d.snapshot().sink_writes) == {"pgpass"}


def test_a_proxy_listener_that_never_bound_is_named_from_the_config(tmp_path: Path) -> None:
    listen = (Listen(True, "", 6432), Listen(False, "127.0.0.1", 6432), Listen(False, "::1", 7000))
    reported = {
        "listen": [{"host": "", "port": 6432}, {"host": "127.0.0.1", "port": 6432}, {"host": "", "port": 7000}],
        "open": 0,
        "total": 0,
        "last_error": "cannot listen on [::1]:7000: address in use",
    }
    view = _proxy_view(reported, listen, tmp_path / "proxy")
    assert view is not None
    assert view.listen == ((str(tmp_path / "proxy"), 6432), ("127.0.0.1", 6432), ("::1", 7000))
    assert _proxy_view(None, listen, tmp_path) is None
    binding = _proxy_view({**reported, "last_error": None}, listen, tmp_path / "proxy")
    assert binding is not None and binding.listen[0] == ("", 6432)  # no error: an empty host means "binding"


def test_the_proxys_server_error_reaches_the_snapshot(tmp_path: Path) -> None:
    reported = {"listen": [{"host": "127.0.0.1", "port": 6432}], "open": 0, "total": 1, "last_error": None}
    view = _proxy_view({**reported, "server_error": "TLS failed"}, (Listen(False, "127.0.0.1", 6432),), tmp_path)
    assert view is not None and view.server_error == "TLS failed" and view.last_error is None
    view = _proxy_view(reported, (Listen(False, "127.0.0.1", 6432),), tmp_path)  # a proxy that does not say
    assert view is not None and view.server_error is None


def test_run_once_returns_a_line_for_each_identity_and_sink_that_failed_and_closes_the_identities(
    world: World,
) -> None:
    d = world.daemon(ME + APP + target("a", "me") + target("b", "app"))
    assert d.run_once() == [] and all(i.closed for i in world.identities)  # all of it worked: nothing to say

    d = world.daemon(ME + APP + target("a", "me") + target("b", "app"))
    app = next(i for i in world.identities if i.name == "app" and not i.closed)

    def refuse(fresh: bool = False) -> Token:
        raise IdentityUnavailable("no managed identity on this machine")

    def full(entries: object) -> None:
        raise SinkError("/home/me/.pgpass: no space left on device")

    app.fetch = refuse  # type: ignore[method-assign]
    [s for s in world.sinks if s.kind_name == "pgpass"][-1].sync = full  # type: ignore[method-assign]
    failed = d.run_once()
    assert [line.split(":")[0] for line in failed] == ["identity app", "sink pgpass"], failed
    assert "no managed identity" in failed[0] and "no space left" in failed[1]
    assert all(i.closed for i in world.identities)
