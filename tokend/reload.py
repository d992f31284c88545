"""The reload plan: what must change in a running daemon to make it match a new config. Pure — values in, a
``Plan`` out, no threads, no I/O — so every decision is tested in milliseconds (tests/unit/test_reload.py) and
``Daemon.apply`` only carries it out.

The rules, in order:
1. An identity is kept (its refresher, its token, no new sign-in) when a target still uses it and its settings are
   the same; else it is retired (nobody uses it, or its settings changed: a new sign-in) and, when used, started
   anew. A token never outlives the settings it was got with.
2. A sink is rebuilt when it runs for the first time or its options changed; every kind runs, used or not, so what
   an earlier config wrote there is cleaned up. Only the rebuilt kinds that some target uses are checked (a failed
   check refuses the whole config before anything changed).
3. A rebuilt sink's old place is cleaned only when no running sink writes that place any more: options that differ
   but name the same place (``/two`` and ``/two/.``) must not undo the new sink's write (``Plan.clean``).
4. Proxy listeners are opened and closed by difference, per (target, address); the proxy always gets the new
   config, since a changed target's settings are used by its next connections.
5. The health endpoint moves when its address changed, or when it is not serving (a start that failed is retried).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokend.config import Config, IdentityConfig, Listen

Address = tuple[str, Listen]  # (target name, one of its listen addresses)


@dataclass(frozen=True)
class Running:
    """What runs now, as plain values."""

    identities: Mapping[str, IdentityConfig]  # the settings each running refresher was built with, by name
    sinks: Mapping[str, Mapping[str, Any]]  # the options each running sink was built with, by kind
    config: Config | None  # the config running now (None: nothing runs yet)
    observe: Listen | None  # where the health endpoint serves now (None: it does not)


@dataclass(frozen=True)
class Plan:
    keep: tuple[str, ...]  # identities that keep their refresher and token
    retire: tuple[str, ...]  # identities whose refresher stops (unused, or settings changed)
    start: tuple[str, ...]  # identities that get a new refresher (new, or settings changed)
    rebuild: tuple[str, ...]  # sink kinds built anew (first run, or options changed); their old sinks retire
    check: tuple[str, ...]  # of those, the kinds some target uses: checked before anything changes
    listen_open: tuple[Address, ...]  # proxy addresses to open
    listen_close: tuple[Address, ...]  # proxy addresses to close
    move_observer: bool  # the health endpoint is (re)started where ``observe`` says, or stopped
    observe: Listen | None

    def clean(self, retired: Mapping[str, str], places: Mapping[str, str]) -> tuple[str, ...]:
        """Rule 3: of the retired sinks (kind → the place it wrote), the kinds whose place no sink writes now
        (``places``: kind → place of every sink running after the swap)."""
        now = set(places.values())
        return tuple(kind for kind, place in retired.items() if place not in now)


def plan(running: Running, new: Config) -> Plan:
    """What it takes to go from ``running`` to ``new``."""
    used = {t.identity for t in new.targets.values()}
    same = {n for n, settings in running.identities.items() if n in used and new.identities.get(n) == settings}
    rebuild = tuple(k for k, sink in new.sinks.items() if running.sinks.get(k) != sink.options)
    used_kinds = {k for t in new.targets.values() for k in t.sinks}
    before, after = _addresses(running.config), _addresses(new)
    return Plan(
        keep=tuple(sorted(same)),
        retire=tuple(n for n in running.identities if n not in same),
        start=tuple(sorted(used - same)),
        rebuild=rebuild,
        check=tuple(k for k in rebuild if k in used_kinds),
        listen_open=tuple(a for a in after if a not in before),
        listen_close=tuple(a for a in before if a not in after),
        move_observer=running.observe is None or running.observe != new.observe,
        observe=new.observe,
    )


def _addresses(config: Config | None) -> tuple[Address, ...]:
    if config is None:
        return ()
    return tuple((t.name, a) for t in config.targets.values() for a in t.listen)
