"""pgAdmin 4: a servers.json for File → Import Servers, one server per target, whose password comes from
``PasswordExecCommand`` = the absolute ``tokend token TARGET --config …`` command.

``PasswordExecExpiration`` (seconds pgAdmin reuses the command's answer) is kept below the shortest life a token
handed out by tokend can have left: tokend replaces tokens 4 minutes before they expire, so 180 s.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokend.config import Target

EXPIRATION = 180  # seconds
GROUP = "tokend"


def servers_json(targets: Iterable[Target], tokend: Path, config: Path) -> str:
    servers: dict[str, Any] = {}
    for i, t in enumerate(targets, 1):
        command = " ".join(shlex.quote(str(a)) for a in (tokend, "token", t.name, "--config", config.absolute()))
        servers[str(i)] = {
            "Name": t.name, "Group": GROUP, "Host": t.host, "Port": t.port,
            "MaintenanceDB": "postgres" if t.database == "*" else t.database, "Username": t.user,
            "SSLMode": "require", "ConnectionParameters": {"sslmode": "require", "connect_timeout": 10},
            "PasswordExecCommand": command, "PasswordExecExpiration": EXPIRATION,
        }
    return json.dumps({"Servers": servers}, indent=2) + "\n"
