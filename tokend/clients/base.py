"""What every client module is given: one request for ``setup`` and ``undo``, so ``tokend clients`` dispatches
through the table in ``tokend.kinds.CLIENTS`` with no knowledge of any client."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokend.config import Target


@dataclass(frozen=True)
class Request:
    owner: str  # the config's id: what tokend adds is known again by it
    config_path: Path  # the config the entries name (pgAdmin's password command carries it)
    targets: Sequence[Target] = ()  # setup: the targets to add
    names: Sequence[str] | None = None  # undo: the targets to take out; None: every one of this config's
    output: Path | None = None  # the file or folder named by --output, if any
    shared: bool = False  # pgAdmin 8.14+: one password command for every server
    server_mode: bool = False  # pgAdmin in server mode: the named command (SERVER_PASSEXEC_COMMANDS)
    margin: float = 240.0  # the config's refresh margin (seconds): how long pgAdmin may reuse a token follows it
