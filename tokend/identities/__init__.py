"""Identities: one sign-in each, wrapping exactly one azure-identity credential.

The module that builds each source's credential is named in ``tokend.kinds.SOURCES``. Modules are imported only
when used, so commands that ask the daemon never import azure-identity. This package imports nothing above it
(config, token, errors, clouds, clock, paths): asking the daemon first is ``tokend.access``'s job.
"""

from __future__ import annotations

import importlib

from tokend.clock import SYSTEM, Clock
from tokend.config import IdentityConfig
from tokend.identities.base import Identity
from tokend.kinds import SOURCES
from tokend.token import Token


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


__all__ = ["Identity", "build", "fetch_once"]
