"""`tokend clients`: which PostgreSQL clients are on this machine, whether tokend has set them up, and setting each
up (or undoing it) with one command.

| client | how tokend serves it | module |
| VS Code PostgreSQL | profiles for the target's local proxy, no password | vscode |
| DBeaver | connections with PostgreSQL pgpass authentication | dbeaver |
| DataGrip | data sources with pgpass authentication (printed, or added to a project's files) | datagrip |
| pgAdmin 4 | servers.json whose password command is `tokend token` | pgadmin |
| Azure Data Studio (retired) | profiles that take the password from pgpass | ads |
Commands that produce a file for another program print it to stdout unless given --output. Reading the config for
names and hosts only, no identity is built and no secret is needed.
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

from tokend import paths
from tokend.config import Config, Target
from tokend.errors import TokendError, UsageError

CLIENTS = ("vscode", "dbeaver", "datagrip", "pgadmin", "ads")
EDITED = ("vscode", "dbeaver", "ads")  # their own settings files, edited in place: install(owner, targets), uninstall


def _module(client: str) -> ModuleType:
    return importlib.import_module(f"tokend.clients.{client}")


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


def detect(owner: str) -> list[Client]:
    from tokend.clients import ads, dbeaver, pgadmin, vscode

    home = Path.home()
    code, dbeaver_state, ads_state = (_state(functools.partial(m.set_up, owner)) for m in (vscode, dbeaver, ads))
    jetbrains = sorted(paths.app_config_dir("JetBrains").glob("DataGrip*"))
    return [
        Client(
            "psql / libpq",
            "",
            shutil.which("psql"),
            None,
            "nothing to do: the pgpass sink (or `tokend exec TARGET -- psql`)",
        ),
        Client(
            "VS Code PostgreSQL",
            "vscode",
            _first(shutil.which("code"), vscode.settings_path().parent),
            code[0],
            "tokend clients vscode",
            code[1],
        ),
        Client(
            "DBeaver",
            "dbeaver",
            _first(shutil.which("dbeaver"), dbeaver.workspace()),
            dbeaver_state[0],
            "tokend clients dbeaver",
            dbeaver_state[1],
        ),
        Client(
            "DataGrip",
            "datagrip",
            _first(shutil.which("datagrip"), *jetbrains[-1:]),
            None,
            "tokend clients datagrip --output PROJECT_FOLDER",
        ),
        Client(
            "pgAdmin 4",
            "pgadmin",
            _first(shutil.which("pgadmin4"), home / ".pgadmin", Path("/usr/pgadmin4")),
            pgadmin.set_up(),
            "tokend clients pgadmin --shared-command --output servers.json, then import it",
        ),
        Client(
            "Azure Data Studio (retired)",
            "ads",
            _first(shutil.which("azuredatastudio"), ads.user_dir().parent),
            ads_state[0],
            "tokend clients ads",
            ads_state[1],
        ),
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


def run(
    client: str | None,
    names: list[str],
    config_path: Path,
    output: Path | None,
    shared: bool = False,
    as_json: bool = False,
    server_mode: bool = False,
) -> Iterator[str]:
    """``tokend clients [CLIENT] [TARGET…]``: list the clients here, or set one up; yields lines for people."""
    from tokend import config

    owner = paths.config_id(config_path)
    if client is None:
        yield from listing(owner, as_json)
        return
    cfg = config.load(config_path)
    targets = _targets(cfg, names)
    if client in EDITED:
        yield from _module(client).install(owner, targets)
    elif client == "datagrip":
        from tokend.clients import datagrip

        if output is not None:
            yield from datagrip.install(output, owner, targets)
        else:
            shared_xml, local_xml = datagrip.documents(owner, targets)
            sys.stdout.write(
                f"<!-- .idea/dataSources.xml -->\n{shared_xml}\n<!-- .idea/dataSources.local.xml -->\n{local_xml}"
            )
    elif client == "pgadmin":
        from tokend.clients import pgadmin
        from tokend.service import tokend_executable

        entries = pgadmin.servers(
            owner, targets, tokend_executable(), config_path, shared, cfg.refresh_margin, server_mode
        )
        if server_mode:  # the config_local.py lines first, then servers.json (as for datagrip: two documents)
            sys.stdout.write(pgadmin.config_local(tokend_executable(), config_path))
        if output is None:
            sys.stdout.write(("# servers.json\n" if server_mode else "") + pgadmin.update("", entries))
        else:
            yield from pgadmin.install(output, entries)
    else:
        raise UsageError(f"unknown client {client!r}; use one of: {', '.join(CLIENTS)}")


def remove(client: str, names: list[str], config_path: Path, output: Path | None = None) -> Iterator[str]:
    """``tokend clients remove CLIENT [TARGET…]``: undo exactly what ``tokend clients CLIENT`` added."""
    owner = paths.config_id(config_path)
    if names:
        from tokend import config

        cfg = config.load(config_path)
        names = [cfg.target(n).name for n in names]
    chosen = names or None
    if client in EDITED:
        yield from _module(client).uninstall(owner, chosen)
    elif client in ("pgadmin", "datagrip"):
        if output is None:
            what = "servers.json file" if client == "pgadmin" else "project folder"
            raise UsageError(f"name the {what} tokend wrote: tokend clients remove {client} --output PATH")
        yield from _module(client).uninstall(output, owner, chosen)
    else:
        raise UsageError(f"unknown client {client!r}; use one of: {', '.join(CLIENTS)}")
