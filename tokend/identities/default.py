"""source = "default": azure-identity's DefaultAzureCredential chain, never prompting.

For machines whose identity is set by the environment (AZURE_* variables, workload identity, managed identity,
Azure CLI / azd / PowerShell sign-ins). Interactive browser sign-in is excluded: the daemon never prompts.
"""

from __future__ import annotations

from typing import Any

from azure.identity import DefaultAzureCredential

from tokend.config import IdentityConfig
from tokend.identities._authority import authority_kwargs


def credential(config: IdentityConfig) -> Any:
    kwargs: dict[str, Any] = {"exclude_interactive_browser_credential": True, **authority_kwargs(config)}
    if config.tenant_id:
        kwargs["tenant_id"] = config.tenant_id
    if config.client_id:
        kwargs["managed_identity_client_id"] = config.client_id
        kwargs["workload_identity_client_id"] = config.client_id
    return DefaultAzureCredential(**kwargs)
