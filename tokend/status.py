"""``tokend status``: the status JSON (the contract in DESIGN.md) rendered from a daemon's ``Snapshot``
(``to_json``), and for people that JSON as a compact table, problems indented under the line they concern with their
fix (``render``). Pure: takes a Snapshot, or the status dict and ``now``; tested on hand-made ones. The CLI asks the
daemon, prints, and follows it for ``--watch``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tokend.snapshot import IdentityView, ProxyView, SinkView, Snapshot, TargetView

Paint = Callable[[str, str], str]
COLOURS = {
    "ok": "32",
    "retrying": "33",
    "pending": "33",
    "starting": "33",
    "empty": "33",
    "login-required": "31",
    "failed": "31",
    "ignored": "31",
    "unavailable": "31",
}


def to_json(snap: Snapshot) -> dict[str, Any]:
    """The status JSON of ``snap``: times as whole Unix epoch seconds, an identity's ``expires_on`` from the true
    remaining life of its token (``Token.remaining``), whatever the wall clock did since it arrived."""
    return {
        "config": snap.config,
        "config_error": snap.config_error,
        "pid": snap.pid,
        "started_at": int(snap.started_at),
        "identities": [_identity(i, snap.now) for i in snap.identities],
        "targets": [_target(t) for t in snap.targets],
    }


def _identity(i: IdentityView, now: float) -> dict[str, Any]:
    return {
        "name": i.name,
        "source": i.source,
        "state": i.state,
        "principal": i.principal,
        "expires_on": int(now + i.remaining) if i.remaining is not None else None,
        "refresh_at": int(now + max(0.0, i.due_in)),
        "last_error": i.last_error,
        "cache": i.cache,
        "inherited": i.inherited,
    }


def _target(t: TargetView) -> dict[str, Any]:
    return {**t.public, "sinks": {k: _sink(v) for k, v in t.sinks.items()}, "proxy": _proxy(t.proxy)}


def _sink(s: SinkView) -> dict[str, Any]:
    return {"state": s.state, "location": s.location, "last_write": s.last_write, "last_error": s.last_error}


def _proxy(p: ProxyView | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {
        "listen": [{"host": host, "port": port} for host, port in p.listen],
        "open": p.open,
        "total": p.total,
        "last_error": p.last_error or p.server_error,  # a listener's, else the proxy's last login to the server
        "certificate": p.certificate,
    }


def painter(stream: Any = None, environ: Mapping[str, str] | None = None) -> Paint:
    """Colour only on a terminal (and never with NO_COLOR): ``stream`` (default stdout) and ``environ`` (default
    the process's) are the ones the output goes to and the command runs in."""
    stream = stream or sys.stdout
    environ = os.environ if environ is None else environ
    on = stream.isatty() and not environ.get("NO_COLOR")
    return lambda text, code: f"\033[{code}m{text}\033[0m" if on else text


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def until(epoch: float | None, now: float) -> str:
    if epoch is None:
        return "no token"
    left = epoch - now
    if left <= 0:
        return "expired"
    return f"expires in {left / 60:.0f} m" if left >= 120 else f"expires in {left:.0f} s"


def ago(epoch: float | None, now: float) -> str:
    if not epoch:
        return ""
    seconds = max(0, now - epoch)
    return f"{seconds / 60:.0f} m ago" if seconds >= 120 else f"{seconds:.0f} s ago"


def table(rows: Sequence[Sequence[str]], header: Sequence[str], paint_col: dict[int, Paint] | None = None) -> list[str]:
    """Rows in columns as wide as their longest cell (colour codes added after the padding)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)).rstrip()]
    for row in rows:
        cells = []
        for i, (cell, w) in enumerate(zip(row, widths, strict=False)):
            text = cell.ljust(w)
            cells.append(paint_col[i](text, cell) if paint_col and i in paint_col else text)
        out.append("  ".join(cells).rstrip())
    return out


def render(status: dict[str, Any], now: float, paint: Paint | None = None) -> str:
    paint = paint or (lambda text, _code: text)

    def state(text: str, word: str) -> str:
        return paint(text, COLOURS.get(word.strip(), "0"))

    idents, targets = status["identities"], status["targets"]
    lines = [
        f"tokend pid {status['pid']} · config {status['config']} · "
        f"{plural(len(idents), 'identity', 'identities')}, {plural(len(targets), 'target')}"
    ]
    if status.get("config_error"):
        lines.append(
            paint(f"  ! config change refused, still serving the previous one: {status['config_error']}", "31")
        )
    rows, notes = [], {}
    for i in idents:
        source = i["source"] + (" (unencrypted cache)" if i.get("cache") == "unencrypted" else "")
        token = until(i["expires_on"], now) + (" (inherited)" if i.get("inherited") else "")
        rows.append([i["name"], i["state"], source, i["principal"] or "-", token])
        if i["last_error"]:
            notes[len(rows) - 1] = [f"    ! {i['last_error']}"]
    lines.append("")
    lines += _with_notes(table(rows, ["IDENTITY", "STATE", "SOURCE", "PRINCIPAL", "TOKEN"], {1: state}), notes)
    rows, notes = [], {}
    for t in targets:
        user = t["user"]
        if user.startswith("@"):  # user = "@principal": who it is now ("@principal → alice@…")
            user = f"{user} → {t.get('resolved_user') or '(not yet known)'}"
        where = f"{user}@{t['host']}:{t['port']}/{t['database']}"
        places = [
            f"{k} {v['state']}" + (f" ({ago(v['last_write'], now)})" if v["last_write"] else "")
            for k, v in t["sinks"].items()
        ]
        proxy = t.get("proxy")
        if proxy:
            places.append(
                "proxy " + ", ".join(f"{a['host']}:{a['port']}" for a in proxy["listen"]) + f" ({proxy['open']} open)"
            )
        rows.append([t["name"], where, ", ".join(places) or "-"])
        problems = [f"    ! {k}: {v['last_error']}" for k, v in t["sinks"].items() if v["last_error"]]
        if proxy and proxy.get("last_error"):
            problems.append(f"    ! proxy: {proxy['last_error']}")
        if problems:
            notes[len(rows) - 1] = problems
    lines.append("")
    lines += _with_notes(table(rows, ["TARGET", "CONNECTS AS", "WHERE THE TOKEN IS"]), notes)
    return "\n".join(lines)


def _with_notes(lines: list[str], notes: dict[int, list[str]]) -> list[str]:
    """The table lines (header first) with each row's notes under it."""
    out = [lines[0]]
    for i, line in enumerate(lines[1:]):
        out.append(line)
        out += notes.get(i, [])
    return out
