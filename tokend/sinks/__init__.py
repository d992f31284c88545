"""Sinks: the places clients read a password from. One module per kind, registered by the config's name.

A sink is told the whole set of (target, token) entries it should hold and makes its place hold exactly those:
new tokens replace old ones, entries of removed targets or expired tokens disappear. Sinks never fetch tokens and
never know about each other. ``check()`` test-writes when the sink is built, so a bad path fails at start.
``diagnose()`` is the sink explaining itself to ``tokend doctor`` (keyring's viability that explains itself):
findings with the evidence and the fix, so doctor holds no knowledge of any sink.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tokend import paths
from tokend.config import Target
from tokend.errors import TokendError
from tokend.findings import Finding
from tokend.kinds import SINKS
from tokend.token import Token


@dataclass(frozen=True)
class Entry:
    target: Target
    token: Token


class Sink(ABC):
    kind: ClassVar[str]

    def __init__(self, options: Mapping[str, Any], owner: str) -> None:
        """``owner`` names this config's entries (the config id), so two tokend configs can share one place."""
        self.options = options
        self.owner = owner

    @abstractmethod
    def location(self) -> str:
        """Where this sink writes, for status and error texts."""

    def place(self) -> str:
        """What identifies the place written, so two sinks writing the same one are recognised (a file's resolved
        path). Default: its location."""
        return self.location()

    def watched(self) -> list[Path]:
        """Files whose changes by others should make the sink write again (a pgpass replaced by a dotfile
        manager). Default: none."""
        return []

    @abstractmethod
    def check(self) -> None:
        """Raise SinkError with the human reason and the fix when this sink cannot work here."""

    @abstractmethod
    def sync(self, entries: Sequence[Entry]) -> None:
        """Make the place hold exactly ``entries`` (and every byte that is not ours, unchanged)."""

    def purge(self) -> str | None:
        """Remove every entry of this config's here (``tokend service uninstall --purge``). Returns what was
        removed, for people, or None when nothing of this config's was here (so purge never reports a removal it
        did not do). Default: write no entries and say so."""
        self.sync([])
        return f"removed this config's entries from {self.location()}"

    def unread(self) -> str | None:
        """Why clients will not read this place although it is written (libpq ignores a pgpass others can read),
        with the fix; None when nothing is known against it. Cheap (a stat at most): status asks it once per
        snapshot, and shows the sink's targets as "ignored". Default: None."""
        return None

    def read_back(self, targets: Sequence[Target]) -> dict[str, str]:
        """The passwords this owner's entries hold now for ``targets``, by target name: what a previous daemon
        left, for a starting one to adopt (``tokend.adopt``). Default: none (a sink that cannot read its place back).
        Never raises: an unreadable place holds nothing."""
        return {}

    def diagnose(self, targets: Sequence[Target], reported: Mapping[str, Mapping[str, Any]] | None) -> list[Finding]:
        """What ``tokend doctor`` says about this sink for the ``targets`` that use it. ``reported``: what the
        running daemon says of this sink per target name (status JSON's ``{"state", "last_error", …}``), or None
        when no daemon answers. Default: nothing when no target uses it, else whether ``check()`` passes."""
        if not targets:
            return []
        try:
            self.check()
        except TokendError as e:
            return [Finding(self.kind, "fail", str(e), "see the evidence")]
        return [Finding(self.kind, "ok", self.location())]


def build(kind: str, options: Mapping[str, Any], owner: str) -> Sink:
    """The sink of ``kind`` (a name in ``tokend.kinds.SINKS``) for this config's ``owner`` id."""
    module, _, cls = SINKS[kind].factory.partition(":")
    sink: Sink = getattr(importlib.import_module(module), cls)(options, owner)
    return sink


def lock_dir() -> Path:
    """tokend's private folder for writers' lock files (shared by every config of this user)."""
    return paths.private_dir(paths.runtime_dir() / "locks")
