"""Health and metrics over HTTP, opt-in per config (``[observe] listen = "127.0.0.1:9464"``), for the kubelet's
probes and Prometheus.

- ``/healthz``: 200 while the daemon's loop answers (liveness).
- ``/readyz``: 200 when every identity in use holds a valid token, every sink holds what it should and every proxy
  listener listens; else 503 with the reasons, one per line, in config names and fixed words (readiness): any
  local user can read them, so the detail (hosts, ports, Entra's errors) stays in ``tokend status``.
- ``/metrics``: Prometheus text format, through prometheus-client's exposition, from a collector that takes a
  ``Snapshot`` at scrape time.
The endpoint knows the daemon only as a ``Callable[[], Snapshot]``: it never imports it or holds its lock.
Labels are config names (identity, target, sink kind) and fixed words; no token, secret, user name or host
appears in any response. Served on the daemon's loop; each request is one GET, answered and closed.

Any local user can connect, so what a connection may hold is bounded: at most ``limits.Shares.health`` (128) at
once (inside the daemon's descriptor reserve; when full, the oldest one that has not sent its request is closed for
the newcomer), ``MAX_REQUEST`` bytes of request head within ``REQUEST_TIMEOUT`` seconds, ``WRITE_TIMEOUT`` seconds
to take the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from tokend import __version__, limits
from tokend.config import Listen
from tokend.ioloop import IOLoop, run_on
from tokend.logs import Aggregated
from tokend.snapshot import Snapshot

log = logging.getLogger("tokend.observe")
MAX_REQUEST = 8192  # bytes of request head
REQUEST_TIMEOUT = 5.0  # seconds for the request head to arrive
WRITE_TIMEOUT = 10.0  # seconds for the client to take the answer


Snapshots = Callable[[], Snapshot]


class _Collector:
    def __init__(self, snapshots: Snapshots) -> None:
        self.snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshots()
        info = GaugeMetricFamily("tokend_build_info", "tokend's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        left = GaugeMetricFamily(
            "tokend_token_expiry_seconds",
            "Seconds until the identity's token expires (0 without a valid token)",
            labels=["identity"],
        )
        requests = CounterMetricFamily(
            "tokend_token_requests",
            "Token requests by identity and answer (new, same, failed, unavailable, login-required)",
            labels=["identity", "result"],
        )
        for i in snap.identities:
            left.add_metric([i.name], max(0.0, i.remaining) if i.remaining is not None else 0.0)
            for result, n in sorted(i.requests.items()):
                requests.add_metric([i.name, result], n)
        yield left
        yield requests
        writes = CounterMetricFamily(
            "tokend_sink_writes", "Sink writes by sink kind and result", labels=["sink", "result"]
        )
        for kind, by_result in snap.sink_writes.items():
            for result, n in sorted(by_result.items()):
                writes.add_metric([kind, result], n)
        yield writes
        reloads = CounterMetricFamily("tokend_config_reloads", "Config changes accepted or refused", labels=["result"])
        for result in ("accepted", "refused"):
            reloads.add_metric([result], snap.reloads.get(result, 0))
        yield reloads
        if snap.proxy_running:
            open_ = GaugeMetricFamily("tokend_proxy_connections_open", "Open proxy connections", labels=["target"])
            total = CounterMetricFamily("tokend_proxy_connections", "Proxy connections accepted", labels=["target"])
            for t in snap.targets:
                if t.proxy is not None:
                    open_.add_metric([t.name], t.proxy.open)
                    total.add_metric([t.name], t.proxy.total)
            yield open_
            yield total
        ready = GaugeMetricFamily(
            "tokend_ready", "1 when every identity holds a valid token and every sink and listener is in order"
        )
        ready.add_metric([], 0.0 if snap.problems() else 1.0)
        yield ready


class Observer:
    """The HTTP endpoint, on the daemon's loop."""

    def __init__(self, snapshots: Snapshots, where: Listen) -> None:
        self.snapshots = snapshots
        self.where = where
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(snapshots))
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = limits.Pending(limits.shares(limits.file_limit()).health)
        self._quiet = Aggregated(log)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._serve, self.where.host, self.where.port, limit=MAX_REQUEST)
        log.info("health and metrics on http://%s/", self.where)

    def close(self) -> None:
        """Stop serving (from any thread)."""
        server, self._server = self._server, None
        if server is not None:
            run_on(self._loop, server.close)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ticket = self._pending.admit(writer.transport.abort)
        if ticket is None:
            self._quiet.warning(
                "busy", "health: closed a connection: %d others are being answered", self._pending.limit
            )
            writer.transport.abort()
            return
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            ticket.busy()
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            status, ctype, body = await asyncio.get_running_loop().run_in_executor(
                None, self._answer, method, path.split("?")[0]
            )
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\nCache-Control: no-store\r\n\r\n".encode()
                + body
            )
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except (OSError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            ticket.release()
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1)

    def _answer(self, method: str, path: str) -> tuple[str, str, bytes]:
        text = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", text, b"GET only\n"
        if path == "/healthz":
            return "200 OK", text, b"ok\n"
        if path == "/readyz":
            why = self.snapshots().problems()
            if why:
                return "503 Service Unavailable", text, ("\n".join(why) + "\n").encode()
            return "200 OK", text, b"ready\n"
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
        return "404 Not Found", text, b"/healthz, /readyz or /metrics\n"


def start(snapshots: Snapshots, io: IOLoop, where: Listen) -> Observer:
    """An observer serving on ``io``'s loop at ``where``; OSError when the address cannot be had."""
    o = Observer(snapshots, where)
    io.run(o.start())
    return o
