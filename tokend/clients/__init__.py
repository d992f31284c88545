"""`tokend clients`: which PostgreSQL clients are on this machine and how tokend serves each.

Commands that produce a file for another program print it to stdout unless given --output FILE.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tokend.errors import UsageError


@dataclass(frozen=True)
class Client:
    name: str
    found: str | None  # where it was found, or None
    how: str


def _config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def _first(*candidates: str | Path | None) -> str | None:
    for c in candidates:
        if c and (Path(c).exists() if isinstance(c, Path) else True):
            return str(c)
    return None


def detect() -> list[Client]:
    from tokend.clients import ads

    home, conf = Path.home(), _config_home()
    jetbrains = sorted(conf.glob("JetBrains/DataGrip*")) + sorted(
        (home / "Library" / "Application Support" / "JetBrains").glob("DataGrip*"))
    return [
        Client("psql / libpq", shutil.which("psql"),
               "pgpass (sink pgpass); `psql service=TARGET` with the pg_service sink"),
        Client("Azure Data Studio", _first(shutil.which("azuredatastudio"), ads.user_dir().parent),
               "`tokend clients ads`: profiles that take the password from pgpass"),
        Client("pgAdmin 4", _first(shutil.which("pgadmin4"), home / ".pgadmin", Path("/usr/pgadmin4")),
               "`tokend clients pgadmin > servers.json`, then File → Import Servers"),
        Client("DBeaver", _first(shutil.which("dbeaver"), home / ".local/share/DBeaverData",
                                 home / "Library/DBeaverData"),
               "connection → Authentication \"PostgreSQL pgpass\""),
        Client("DataGrip", _first(shutil.which("datagrip"), *jetbrains[-1:]),
               "data source → Authentication \"pgpass\""),
        Client("VS Code PostgreSQL", _first(shutil.which("code"), conf / "Code"),
               "password authentication with an empty password: libpq reads pgpass"),
        Client("scripts", sys.executable, "`tokend token TARGET`, `tokend exec TARGET -- CMD`, or the keychain sink"),
    ]


def run(client: str | None, names: list[str], config_path: Path, output: Path | None) -> Iterator[str]:
    """``tokend clients [CLIENT] [TARGET…]``: list the clients here, or set one up; yields lines for people.
    Reads the config for names and hosts only (no identity is built, no secret needed)."""
    from tokend import config

    if client is None:
        for c in detect():
            yield f"{c.name:<20} {('found: ' + c.found) if c.found else 'not found':<48} {c.how}"
        return
    cfg = config.load(config_path)
    targets = [cfg.target(n) for n in names] or list(cfg.targets.values())
    if not targets:
        raise UsageError(f"no targets in {config_path}; add a [targets.NAME] table first")
    if client == "ads":
        from tokend.clients import ads

        yield from ads.install(targets)
        return
    from tokend.clients import pgadmin
    from tokend.service import tokend_executable

    text = pgadmin.servers_json(targets, tokend_executable(), config_path)
    if output is None:
        sys.stdout.write(text)
        return
    from tokend.sinks.atomic import write_private

    write_private(output, text)
    print(f"wrote {output}: import it in pgAdmin with Tools → Import/Export Servers", file=sys.stderr)
