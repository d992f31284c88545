"""Keyword arguments that point an MSAL-based credential at the identity's authority."""

from __future__ import annotations

from typing import Any

from tokend.config import IdentityConfig


def authority_kwargs(config: IdentityConfig) -> dict[str, Any]:
    """``authority`` for the cloud; an overridden authority (custom cloud, emulator) also turns instance discovery
    off, since only Microsoft's own hosts answer it."""
    kwargs: dict[str, Any] = {"authority": config.authority}
    if config.authority_override:
        kwargs["disable_instance_discovery"] = True
    return kwargs
