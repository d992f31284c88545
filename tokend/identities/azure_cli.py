"""source = "azure-cli": the signed-in Azure CLI (``az account get-access-token``).

The credential caches nothing; every call spawns ``az`` (about 0.7 s of CPU), so the daemon calls it only when a
new token is due. The CLI's own cloud setting decides the authority; ``tenant_id`` picks a tenant of the sign-in.
"""

from __future__ import annotations

from typing import Any

from azure.identity import AzureCliCredential

from tokend.config import IdentityConfig


def login_hint(config: IdentityConfig) -> str:
    return f"run `az login{' --tenant ' + config.tenant_id if config.tenant_id else ''}`"


def credential(config: IdentityConfig) -> Any:
    return AzureCliCredential(tenant_id=config.tenant_id or "", process_timeout=20)
