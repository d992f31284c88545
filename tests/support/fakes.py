"""Stand-ins for the daemon's identities and sinks, behind the same interfaces (``TokenSource``, ``Sink``), so the
daemon's own decisions can be watched step by step in-process (tests/unit/test_daemon.py, test_runtime.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokend.clock import Clock
from tokend.config import IdentityConfig, parse
from tokend.daemon import Daemon
from tokend.errors import SinkError
from tokend.sinks import Entry, Sink
from tokend.token import Token

ME = '[identities.me]\nsource = "azure-cli"\n'
APP = '[identities.app]\nsource = "managed-identity"\n'


class FakeIdentity:
    """Hands out numbered tokens; counts fetches; knows when it was closed."""

    def __init__(self, config: IdentityConfig, clock: Clock) -> None:
        self.config, self.clock, self.cache = config, clock, None
        self.fetches = 0
        self.closed = False

    @property
    def name(self) -> str:
        return self.config.name

    def fetch(self, fresh: bool = False) -> Token:
        self.fetches += 1
        now = self.clock.now()
        return Token(f"tok-{self.name}-{self.fetches}", now + 3600, now, received=self.clock.boot())

    def close(self) -> None:
        self.closed = True


class MemorySink(Sink):
    """Holds what it was told to hold; its place is its path option; path "/bad" fails its check."""

    kind = "memory"
    synced: list[tuple[str, list[str]]]

    def __init__(self, kind: str, options: Mapping[str, Any], owner: str) -> None:
        super().__init__(options, owner)
        self.kind_name = kind
        self.held: list[str] = []
        self.syncs = 0

    def location(self) -> str:
        return f"{self.kind_name}:{self.options.get('path', 'default')}"

    def check(self) -> None:
        if self.options.get("path") == "/bad":
            raise SinkError("/bad: folder does not exist; create it or set another path")

    def sync(self, entries: Sequence[Entry]) -> None:
        self.syncs += 1
        self.held = [f"{e.target.name}={e.token.value}" for e in entries]


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "config.toml"
        self.identities: list[FakeIdentity] = []
        self.sinks: list[MemorySink] = []

    def identity(self, config: IdentityConfig, clock: Clock) -> FakeIdentity:
        i = FakeIdentity(config, clock)
        self.identities.append(i)
        return i

    def sink(self, kind: str, options: Mapping[str, Any], owner: str) -> MemorySink:
        s = MemorySink(kind, options, owner)
        self.sinks.append(s)
        return s

    def daemon(self, text: str) -> Daemon:
        self.path.write_text(text)
        return Daemon(parse(text, self.path), build_identity=self.identity, build_sink=self.sink)

    def edit(self, d: Daemon, text: str) -> None:
        self.path.write_text(text)
        d.reload("test")


def target(name: str, identity: str, sinks: str = '["pgpass"]', host: str = "h.example") -> str:
    return f'[targets.{name}]\nhost = "{host}"\nuser = "DBA Group"\nidentity = "{identity}"\nsinks = {sinks}\n'


def fetched(d: Daemon) -> None:
    for r in d.refreshers.values():
        r.step()


def jwt(**claims: object) -> str:
    """An unsigned JWT carrying ``claims``: what tokend reads of a token (expiry, audience, principal) without
    judging it (the server does)."""

    def part(d: Mapping[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.c2ln"
