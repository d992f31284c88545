"""Keyword arguments that point an MSAL-based credential at the identity's authority, over a bounded transport
that trusts the identity's ``ca_bundle``."""

from __future__ import annotations

from typing import Any

from tokend.config import IdentityConfig

# A token service that hangs must not hold a refresher for minutes: bound each HTTP request (seconds) and the
# retries azure-core adds on top, so one attempt ends within about a minute and tokend's own backoff takes over.
TRANSPORT: dict[str, Any] = {"connection_timeout": 10, "read_timeout": 15, "retry_total": 2}


def transport_kwargs(config: IdentityConfig) -> dict[str, Any]:
    """The transport bounds, and ``connection_verify`` (azure-core's CA bundle for requests) when the identity
    names a ``ca_bundle``: TLS-inspecting proxies, private clouds, the emulator — no REQUESTS_CA_BUNDLE needed."""
    kwargs = dict(TRANSPORT)
    if config.ca_bundle is not None:
        kwargs["connection_verify"] = str(config.ca_bundle)
    return kwargs


def authority_kwargs(config: IdentityConfig) -> dict[str, Any]:
    """``authority`` for the cloud, and the transport; an overridden authority (custom cloud, emulator) also
    turns instance discovery off, since only Microsoft's own hosts answer it."""
    kwargs: dict[str, Any] = {"authority": config.authority, **transport_kwargs(config)}
    if config.authority_override:
        kwargs["disable_instance_discovery"] = True
    return kwargs
