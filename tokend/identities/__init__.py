"""Identities: one sign-in each, wrapping exactly one azure-identity credential.

The module that builds each source's credential is named in ``tokend.kinds.SOURCES``. Modules are imported only
when used, so commands that ask the daemon never import azure-identity.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from tokend.clock import SYSTEM, Clock
from tokend.config import Config, IdentityConfig, Target
from tokend.errors import DaemonNotRunning
from tokend.identities.base import Identity
from tokend.kinds import SOURCES
from tokend.token import Token

if TYPE_CHECKING:
    from tokend.ipc import TokenAnswer

KEYCHAIN_MIN_LIFE = 60.0  # seconds a token read back from the keychain must still have to be handed out


def build(config: IdentityConfig, clock: Clock = SYSTEM) -> Identity:
    """The Identity for one [identities.NAME] table."""
    module = importlib.import_module(SOURCES[config.source].module)
    cache_kind = getattr(module, "cache_kind", None)
    identity = Identity(
        config,
        module.credential,
        clock,
        login_hint=getattr(module, "login_hint", None),
        persistent_cache=cache_kind is not None,
    )
    if cache_kind is not None:
        identity.cache = cache_kind(config)
    return identity


def fetch_once(config: IdentityConfig) -> Token:
    """One token from a credential built for the occasion (commands that run without the daemon)."""
    identity = build(config)
    try:
        return identity.fetch()
    finally:
        identity.close()


def token_for(config_path: Path, name: str | None) -> TokenAnswer:
    """A valid token for target ``name`` and the target: the running daemon's, else ``token_without_daemon``."""
    from tokend import config, ipc

    try:
        return ipc.Client(config_path).token(name)
    except DaemonNotRunning:
        pass
    cfg = config.load(config_path)
    target = cfg.target(name)
    token = token_without_daemon(cfg, target)
    return ipc.TokenAnswer(token.value, token.expires_on, target.as_dict())


def token_without_daemon(config: Config, target: Target, clock: Clock = SYSTEM) -> Token:
    """A valid token for ``target`` when no daemon answers: the one the daemon last left in the keychain (when the
    target keeps one there and it has over a minute left), else one acquired here and now."""
    if "keychain" in target.sinks:
        from tokend.sinks import keychain

        kept = keychain.read_token(target.name)
        if kept is not None and kept.expires_on - clock.now() >= KEYCHAIN_MIN_LIFE:
            return kept
    return fetch_once(config.identities[target.identity])


__all__ = ["Identity", "build", "fetch_once", "token_for", "token_without_daemon"]
