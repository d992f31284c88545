"""A frozen picture of the running daemon, taken under its lock in one go (``Daemon.snapshot()``), for everything
that reports on it: the status JSON (``status.to_json``), IPC's ``status`` and the health and metrics endpoint.

Readers never reach into the daemon: they get a ``Snapshot`` of plain values, so they cannot race its threads or
hold its lock, and they can be tested against a hand-made one. Times are Unix epoch seconds; durations seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class IdentityView:
    name: str
    source: str  # the config's source kind (azure-cli, …)
    state: str  # starting | ok | retrying | unavailable | failed | login-required | unused (no target uses it)
    principal: str | None  # of the valid token held, if any
    remaining: float | None  # seconds of life left in the valid token held; None without one
    due_in: float  # seconds until the next token request (negative: overdue)
    last_error: str | None
    cache: str | None  # the sign-in cache's kind ("unencrypted" is shown as a warning), if it has one
    requests: Mapping[str, int] = field(default_factory=dict)  # token requests by answer: new, same, failed, …
    inherited: bool = False  # the valid token held is one the previous daemon left (none of its own yet)


@dataclass(frozen=True)
class SinkView:
    """One sink's truth about one target: ok (holds the current token), pending, empty (no token), failed,
    ignored (written, but clients will not read it: ``last_error`` says why and the fix)."""

    state: str
    location: str
    last_write: int | None  # when the token it holds for the target was written
    last_error: str | None


@dataclass(frozen=True)
class ProxyView:
    """One target's proxy listeners."""

    listen: tuple[tuple[str, int], ...]  # (host or folder, port) per listener
    open: int  # connections open now
    total: int  # connections accepted since the listener opened
    last_error: str | None  # why a listener does not listen; names hosts and ports: status only, never /readyz
    certificate: str | None  # the local TLS certificate clients may pin, if one was made
    server_error: str | None = None  # the last failure of the proxy's own login to the server (TLS, refused):
    # cleared by the next login that works; shown as the status JSON's last_error when the listeners are fine


@dataclass(frozen=True)
class TargetView:
    name: str
    public: Mapping[str, Any]  # the target's keys as status and scripts see them (``Target.as_dict``)
    sinks: Mapping[str, SinkView]  # by sink kind, in the target's order
    proxy: ProxyView | None


@dataclass(frozen=True)
class Snapshot:
    now: float  # wall clock when it was taken
    config: str  # the config file's path
    config_error: str | None  # why the last config change was refused, until one is accepted
    pid: int
    started_at: float
    identities: tuple[IdentityView, ...]
    targets: tuple[TargetView, ...]
    sink_writes: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # by kind, by result (ok, failed)
    reloads: Mapping[str, int] = field(default_factory=dict)  # config changes: accepted, refused
    proxy_running: bool = False  # the proxy has started (its metrics are served from then on)

    def problems(self) -> list[str]:
        """Why the daemon is not ready (empty: ready), in config names and fixed words: identity states and sink
        states are words of tokend's own; a proxy's error (which names hosts and ports) is only "not listening"."""
        out = [f"identity {i.name}: {i.state}" for i in self.identities if i.remaining is None and i.state != "unused"]
        for t in self.targets:
            out += [f"target {t.name} sink {k}: {v.state}" for k, v in t.sinks.items() if v.state != "ok"]
            if t.proxy is not None and t.proxy.last_error:
                out.append(f"target {t.name} proxy: not listening")
        return out
