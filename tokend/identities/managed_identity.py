"""source = "managed-identity": the Azure host's identity; user-assigned when ``client_id`` is set.

Tokens live about 24 h and come with ``refresh_on`` (half-life), which the refresh policy honours.
"""

from __future__ import annotations

from typing import Any

from azure.identity import ManagedIdentityCredential

from tokend.config import IdentityConfig
from tokend.identities._authority import transport_kwargs


def credential(config: IdentityConfig) -> Any:
    if config.client_id:
        return ManagedIdentityCredential(client_id=config.client_id, **transport_kwargs(config))
    return ManagedIdentityCredential(**transport_kwargs(config))
