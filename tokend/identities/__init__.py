"""Identities: one sign-in each, wrapping exactly one azure-identity credential.

A registry keyed by the config's ``source`` name maps to the module that builds the credential. Modules are
imported only when used, so commands that ask the daemon never import azure-identity.
"""

from __future__ import annotations

import importlib

from tokend.config import IdentityConfig
from tokend.identities.base import Identity
from tokend.token import Token

REGISTRY: dict[str, str] = {
    "azure-cli": "tokend.identities.azure_cli",
    "service-principal": "tokend.identities.service_principal",
    "managed-identity": "tokend.identities.managed_identity",
    "workload-identity": "tokend.identities.workload_identity",
    "default": "tokend.identities.default",
    "device-code": "tokend.identities.interactive",
    "browser": "tokend.identities.interactive",
}


def build(config: IdentityConfig) -> Identity:
    """The Identity for one [identities.NAME] table."""
    module = importlib.import_module(REGISTRY[config.source])
    identity = Identity(config, module.credential, login_hint=getattr(module, "login_hint", None))
    if hasattr(module, "cache_kind"):
        identity.cache = module.cache_kind(config)
    return identity


def fetch_once(config: IdentityConfig) -> Token:
    """One token from a credential built for the occasion (commands that run without the daemon)."""
    identity = build(config)
    try:
        return identity.fetch()
    finally:
        identity.close()


__all__ = ["REGISTRY", "Identity", "build", "fetch_once"]
