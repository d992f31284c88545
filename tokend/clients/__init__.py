"""`tokend clients`: which PostgreSQL clients are on this machine, whether tokend has set them up, and setting each
up (or undoing it) with one command.

The clients are the table ``tokend.kinds.CLIENTS``: each row names its module, whose ``setup(Request)`` and
``undo(Request)`` return lines for people (or the document to print) and never print; this module dispatches
through the table and knows no client. Commands that produce a file for another program print it to stdout unless
given --output. Reading the config for names and hosts only, no identity is built and no secret is needed.
A client counts as found (listed with where, and set up at all) when its program is on PATH or one of the folders
its module's ``places()`` names exists — the folders the client makes the first time it runs. A client that edits
its settings in place and is not found is refused before anything is written, so tokend never makes those folders
itself and a later listing never reports a client "found" in files tokend wrote.
The listing reads each client's settings file to say whether tokend set it up; one it cannot read (malformed, not
UTF-8, too large, unsafe) is still listed, with "unreadable", and the listing then ends with one line naming each
such file and exit code 2 (bad input, as for every file tokend is given): the client needs that file fixed, and a
script must not take "not set up" for an answer.
"""

from __future__ import annotations

import functools
import importlib
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

from tokend import access, config, ipc, paths
from tokend.clients.base import Request
from tokend.config import Config, Target
from tokend.errors import TokendError, UsageError
from tokend.kinds import CLIENTS, ClientKind

__all__ = ["CLIENTS", "Client", "Request", "detect", "kind", "listing", "remove", "run"]


def _module(row: ClientKind) -> ModuleType:
    """The client's module, imported when it is used (reading the table imports no client)."""
    return importlib.import_module(row.module)


@dataclass(frozen=True)
class Client:
    name: str
    key: str  # the name `tokend clients` takes, or "" for clients with nothing to set up
    found: str | None  # where it was found, or None
    set_up: bool | None  # tokend's entries are there (None: cannot tell)
    how: str  # the one command (or step) that sets it up
    problem: str = ""  # why its settings file could not be read (then set_up is None)


def _state(set_up: Callable[[], bool | None]) -> tuple[bool | None, str]:
    """(whether tokend's entries are there, "") or (None, why the file could not be read)."""
    try:
        return set_up(), ""
    except TokendError as e:
        return None, str(e)


def _first(*candidates: str | Path | None) -> str | None:
    for c in candidates:
        if c and (Path(c).exists() if isinstance(c, Path) else True):
            return str(c)
    return None


def _row(row: ClientKind, owner: str) -> Client:
    """What the listing says of one client: found where, set up or not (or why its file is unreadable), and how."""
    module = _module(row)
    state, problem = _state(functools.partial(module.set_up, owner))
    return Client(row.label, row.name, _first(shutil.which(row.program), *module.places()), state, row.how, problem)


def detect(owner: str) -> list[Client]:
    """psql, every client of the table, and scripts, in that order."""
    return [
        Client(
            "psql / libpq",
            "",
            shutil.which("psql"),
            None,
            "nothing to do: the pgpass sink (or `tokend exec TARGET -- psql`)",
        ),
        *(_row(row, owner) for row in CLIENTS.values()),
        Client("scripts", "", sys.executable, None, "`tokend token TARGET`, `tokend exec TARGET -- CMD`"),
    ]


def listing(owner: str, as_json: bool) -> Iterator[str]:
    """The clients here, a line each (or JSON); then UsageError naming each settings file that could not be read."""
    found = detect(owner)
    if as_json:
        yield json.dumps([asdict(c) for c in found], indent=2)
    else:
        width = max(len(c.name) for c in found)
        for c in found:
            where = f"found: {c.found}" if c.found else "not found"
            state = "unreadable" if c.problem else {True: "set up", False: "not set up", None: ""}[c.set_up]
            yield f"{c.name:<{width}}  {where:<48} {state:<11} {c.how}"
    problems = [c.problem for c in found if c.problem]
    if problems:
        raise UsageError("; ".join(problems))


def _targets(cfg: Config, names: list[str]) -> list[Target]:
    targets = [cfg.target(n) for n in names] or list(cfg.targets.values())
    if not targets:
        raise UsageError(f"no targets in {cfg.path}; add a [targets.NAME] table first")
    return targets


def kind(client: str) -> ClientKind:
    """The row of ``tokend.kinds.CLIENTS`` for ``client``; UsageError naming the choices."""
    if client not in CLIENTS:
        raise UsageError(f"unknown client {client!r}; use one of: {', '.join(CLIENTS)}")
    return CLIENTS[client]


def run(
    client: str | None,
    names: list[str],
    config_path: Path,
    output: Path | None,
    shared: bool = False,
    as_json: bool = False,
    server_mode: bool = False,
) -> Iterator[str]:
    """``tokend clients [CLIENT] [TARGET…]``: list the clients here, or set one up; yields lines (or the document
    to print) for the CLI, which prints each."""
    owner = paths.config_id(config_path)
    if client is None:
        yield from listing(owner, as_json)
        return
    row = kind(client)
    _require_installed(row, output)
    cfg = config.load(config_path)
    # user = "@principal": a profile keeps the signed-in principal's own name (a new sign-in: run it again)
    targets = access.resolved_targets(cfg, _targets(cfg, names), ipc.Client)
    request = Request(
        owner,
        config_path,
        targets,
        output=output,
        shared=shared,
        server_mode=server_mode,
        margin=cfg.refresh_margin,
    )
    yield from _module(row).setup(request)


def _require_installed(row: ClientKind, output: Path | None) -> None:
    """UsageError when ``row`` edits its own settings in place and is not installed here (see the module's
    docstring for how that is decided): writing its files would invent an installation."""
    if not row.edits_in_place or output is not None:
        return
    places = [str(p) for p in _module(row).places()]
    if _first(shutil.which(row.program), *(Path(p) for p in places)) is None:
        raise UsageError(
            f"{row.label} is not installed here (no `{row.program}` on PATH, no {' or '.join(places) or 'folder'}): "
            "install it and start it once, then run this again"
        )


def remove(client: str, names: list[str], config_path: Path, output: Path | None = None) -> Iterator[str]:
    """``tokend clients remove CLIENT [TARGET…]``: undo exactly what ``tokend clients CLIENT`` added."""
    row = kind(client)
    owner = paths.config_id(config_path)
    if names:
        cfg = config.load(config_path)
        names = [cfg.target(n).name for n in names]
    if row.needs_output and output is None:
        raise UsageError(f"name the {row.output} tokend wrote: tokend clients remove {client} --output PATH")
    yield from _module(row).undo(Request(owner, config_path, names=names or None, output=output))
