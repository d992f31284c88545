"""The OS keychain through keyring: one entry per target, service "tokend", user name = the target's name.

Readable with ``keyring get tokend TARGET``, ``secret-tool lookup service tokend username TARGET`` (Linux),
``security find-generic-password -s tokend -a TARGET -w`` (macOS) or Windows Credential Manager.
Windows Credential Manager holds 2560 bytes per credential and keyring writes UTF-16, so about 1280 characters:
a longer token is stored in chunks (``TARGET#1``, ``TARGET#2``, …) under a small manifest at ``TARGET``, and
``read()`` (what ``tokend token`` uses) puts it back together. The chunking is the same code on every OS; only the
limit differs (none elsewhere, so there ``keyring get`` shows the token itself).
Which entries tokend wrote is kept in its state folder, so removed targets are deleted and nothing else in the
keychain is ever touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tokend import paths
from tokend.config import Target
from tokend.errors import SinkUnavailable
from tokend.sinks import Entry, Sink
from tokend.sinks.atomic import write_private
from tokend.token import Token, display_claims, expiry

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

SERVICE = "tokend"
MANIFEST = "tokend-chunks:v1:"
WINDOWS_LIMIT = 1280  # characters: 2560 bytes of UTF-16 (jaraco/keyring#355)


def backend() -> KeyringBackend:
    import keyring  # start-up time: keyring loads its backends (~0.3-0.6 s); only keychain users pay it

    return keyring.get_keyring()


def value_limit(kr: KeyringBackend) -> int | None:
    """The longest value ``kr`` stores whole, in characters, or None when it has no small limit."""
    if type(kr).__module__.startswith("keyring.backends.Windows"):
        return WINDOWS_LIMIT
    return getattr(kr, "max_value_chars", None)


def store(kr: KeyringBackend, name: str, value: str) -> int:
    """Store ``value`` for ``name``; returns the number of chunks used (0: stored whole)."""
    limit = value_limit(kr)
    if limit is None or len(value) <= limit:
        kr.set_password(SERVICE, name, value)
        return 0
    chunks = [value[i : i + limit] for i in range(0, len(value), limit)]
    for i, chunk in enumerate(chunks, 1):
        kr.set_password(SERVICE, f"{name}#{i}", chunk)
    kr.set_password(SERVICE, name, f"{MANIFEST}{len(chunks)}:{_digest(value)}")
    return len(chunks)


def read(name: str, kr: KeyringBackend | None = None) -> str | None:
    """The value stored for ``name``, chunks put back together; None when missing or torn mid-write."""
    kr = kr or backend()
    value = kr.get_password(SERVICE, name)
    if value is None or not value.startswith(MANIFEST):
        return value
    count, _, digest = value[len(MANIFEST) :].partition(":")
    parts = [kr.get_password(SERVICE, f"{name}#{i}") for i in range(1, int(count) + 1)]
    if any(p is None for p in parts):
        return None
    whole = "".join(parts)  # type: ignore[arg-type]
    return whole if _digest(whole) == digest else None


def read_token(name: str) -> Token | None:
    """The token the daemon last left for target ``name`` (its expiry read from the token itself), or None when
    there is none or no usable keychain here."""
    try:
        value = read(name)
    except Exception:  # no usable keychain here: the caller acquires one directly instead
        return None
    exp = expiry(value) if value else None
    if value is None or exp is None:
        return None
    return Token(value, exp, time.time(), None, display_claims(value))


def remove(kr: KeyringBackend, name: str, chunks: int) -> None:
    from keyring.errors import PasswordDeleteError  # start-up time: importing keyring loads its backends

    for key in [name, *(f"{name}#{i}" for i in range(1, chunks + 1))]:
        with contextlib.suppress(PasswordDeleteError):
            kr.delete_password(SERVICE, key)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


class KeychainSink(Sink):
    kind = "keychain"

    def __init__(self, options: Mapping[str, Any], owner: str, kr: KeyringBackend | None = None) -> None:
        super().__init__(options, owner)
        self._kr = kr
        self.index_path = paths.state_dir() / owner / "keychain.json"

    @property
    def kr(self) -> KeyringBackend:
        if self._kr is None:
            self._kr = backend()
        return self._kr

    def location(self) -> str:
        kr = self.kr
        return f"keychain ({type(kr).__module__.rsplit('.', 1)[-1]}.{type(kr).__name__}), service {SERVICE}"

    def check(self) -> None:
        from keyring.backends import fail  # start-up time: importing keyring loads its backends

        kr = self.kr
        if isinstance(kr, fail.Keyring) or getattr(kr, "priority", 1) <= 0:
            raise SinkUnavailable(
                "no usable keychain here (keyring found none): on Linux start a Secret Service "
                "(GNOME Keyring or KWallet) in your session; on macOS unlock the login keychain; "
                'or take "keychain" out of this target\'s sinks'
            )

    def sync(self, entries: Sequence[Entry]) -> None:
        old = self._index()
        if not entries and not old:
            return  # nothing of ours there: do not even open the keychain
        self.check()
        new: dict[str, int] = {}
        try:
            for e in entries:
                new[e.target.name] = store(self.kr, e.target.name, e.token.value)
                if old.get(e.target.name, 0) > new[e.target.name]:  # fewer chunks now: drop the extra ones
                    for i in range(new[e.target.name] + 1, old[e.target.name] + 1):
                        remove(self.kr, f"{e.target.name}#{i}", 0)
            for name, chunks in old.items():
                if name not in new:
                    remove(self.kr, name, chunks)
        except Exception as e:  # backends raise assorted types (KeyringLocked, D-Bus errors, WinError 1783, …)
            self._save_index({**old, **new})
            raise SinkUnavailable(
                f"keychain write failed ({type(e).__name__}: {str(e)[:160]}); unlock the "
                "keychain or start a Secret Service"
            ) from None
        self._save_index(new)

    def purge(self) -> str | None:
        """The entries tokend wrote (its index says which) deleted; None, without opening the keychain, when it
        wrote none (a session with no keychain at all has nothing of tokend's in it)."""
        old = self._index()
        if not old:
            return None
        self.sync([])
        return f"removed {len(old)} entr{'y' if len(old) == 1 else 'ies'} of this config's from {self.location()}"

    def read_back(self, targets: Sequence[Target]) -> dict[str, str]:
        """What this owner's entries hold (those its index lists); the keychain is not opened when it lists none."""
        index = self._index()
        out = {}
        for t in targets:
            if t.name in index:
                with contextlib.suppress(Exception):  # a locked or missing keychain holds nothing we can adopt
                    value = read(t.name, self.kr)
                    if value:
                        out[t.name] = value
        return out

    def _index(self) -> dict[str, int]:
        try:
            return {str(k): int(v) for k, v in json.loads(self.index_path.read_text()).items()}
        except (FileNotFoundError, ValueError, AttributeError):
            return {}

    def _save_index(self, index: dict[str, int]) -> None:
        paths.private_dir(self.index_path.parent)
        write_private(self.index_path, json.dumps(index))
