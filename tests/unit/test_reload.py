"""The reload plan (pure): what a new config keeps, retires, starts, rebuilds, checks and cleans, and which proxy
listeners and health endpoint move — values in, a Plan out, no daemon."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokend.config import Config, Listen, parse
from tokend.reload import Plan, Running, plan

pytestmark = pytest.mark.portable

PATH = Path("/home/alice/.config/tokend/config.toml")
ME = '[identities.me]\nsource = "azure-cli"\n'
APP = '[identities.app]\nsource = "managed-identity"\n'


def target(name: str, identity: str, sinks: str = '["pgpass"]', listen: str = "") -> str:
    text = f'[targets.{name}]\nhost = "{name}.example"\nuser = "DBA Group"\nidentity = "{identity}"\nsinks = {sinks}\n'
    return text + (f"listen = {listen}\n" if listen else "")


def config(text: str) -> Config:
    return parse(text, PATH)


def running(cfg: Config, observe: Listen | None = None) -> Running:
    """What a daemon runs after it applied ``cfg``: every used identity, every sink kind, the health endpoint."""
    used = {t.identity for t in cfg.targets.values()}
    return Running(
        identities={n: cfg.identities[n] for n in used},
        sinks={k: s.options for k, s in cfg.sinks.items()},
        config=cfg,
        observe=observe,
    )


def step(before: str, after: str, observe: Listen | None = None) -> Plan:
    return plan(running(config(before), observe), config(after))


def test_the_first_config_starts_every_used_identity_and_builds_every_sink_kind() -> None:
    new = config(ME + APP + target("a", "me"))
    p = plan(Running({}, {}, None, None), new)
    assert (p.keep, p.retire, p.start) == ((), (), ("me",))  # app is configured but unused: not started
    assert p.rebuild == tuple(new.sinks) and p.check == ("pgpass",)  # every kind runs; only the used one is checked


def test_an_unchanged_identity_is_kept_with_its_token() -> None:
    p = step(ME + target("a", "me"), ME + target("a", "me") + target("b", "me"))
    assert (p.keep, p.retire, p.start, p.rebuild) == (("me",), (), (), ())


def test_a_changed_identity_is_retired_and_started_anew_and_an_unused_one_retired() -> None:
    changed = ME.replace('"azure-cli"', '"azure-cli"\ntenant_id = "t2"')
    p = step(ME + APP + target("a", "me") + target("b", "app"), changed + APP + target("a", "me"))
    assert p.keep == () and set(p.retire) == {"me", "app"} and p.start == ("me",)


def test_an_identity_used_again_is_started() -> None:
    p = step(ME + APP + target("a", "me"), ME + APP + target("a", "me") + target("b", "app"))
    assert (p.keep, p.start) == (("me",), ("app",))


def test_a_sink_moved_to_another_place_is_rebuilt_checked_and_its_old_place_cleaned() -> None:
    p = step(
        ME + target("a", "me") + '[sinks.pgpass]\npath = "/one"\n',
        ME + target("a", "me") + '[sinks.pgpass]\npath = "/two"\n',
    )
    assert p.rebuild == ("pgpass",) and p.check == ("pgpass",) and p.keep == ("me",)
    assert p.clean({"pgpass": "/one"}, {"pgpass": "/two", "keychain": "tokend"}) == ("pgpass",)


def test_a_sink_whose_new_options_name_the_same_place_is_not_cleaned() -> None:
    p = step(
        ME + target("a", "me") + '[sinks.pgpass]\npath = "/two"\n',
        ME + target("a", "me") + '[sinks.pgpass]\npath = "/two/."\n',
    )
    assert p.rebuild == ("pgpass",)
    assert p.clean({"pgpass": "/two"}, {"pgpass": "/two"}) == ()  # cleaning would undo the new sink's write


def test_an_unused_sink_that_moves_is_rebuilt_but_not_checked() -> None:
    p = step(ME + target("a", "me"), ME + target("a", "me") + '[sinks.pg_service]\npath = "/elsewhere"\n')
    assert p.rebuild == ("pg_service",) and p.check == ()


def test_a_reload_that_changes_proxy_listeners_opens_and_closes_by_difference() -> None:
    p = step(
        ME + target("a", "me", "[]", '["127.0.0.1:6432", "unix:6432"]') + target("b", "me", "[]", '["unix:7000"]'),
        ME + target("a", "me", "[]", '["127.0.0.1:6433", "unix:6432"]') + target("c", "me", "[]", '["unix:7000"]'),
    )
    assert p.listen_open == (("a", Listen(False, "127.0.0.1", 6433)), ("c", Listen(True, "", 7000)))
    assert p.listen_close == (("a", Listen(False, "127.0.0.1", 6432)), ("b", Listen(True, "", 7000)))
    assert p.keep == ("me",) and p.rebuild == ()


def test_listeners_that_stay_are_neither_opened_nor_closed() -> None:
    text = ME + target("a", "me", "[]", '["127.0.0.1:6432"]')
    p = step(text, text + target("b", "me"))
    assert (p.listen_open, p.listen_close) == ((), ())


def test_the_health_endpoint_moves_with_its_address_and_is_retried_when_not_serving() -> None:
    here, there = Listen(False, "127.0.0.1", 9464), Listen(False, "127.0.0.1", 9465)
    base = ME + target("a", "me")
    same = step(base, base + '[observe]\nlisten = "127.0.0.1:9464"\n', observe=here)
    assert not same.move_observer
    moved = step(base, base + '[observe]\nlisten = "127.0.0.1:9465"\n', observe=here)
    assert moved.move_observer and moved.observe == there
    stopped = step(base, base, observe=here)
    assert stopped.move_observer and stopped.observe is None
    failed_before = step(base, base + '[observe]\nlisten = "127.0.0.1:9464"\n', observe=None)
    assert failed_before.move_observer and failed_before.observe == here
