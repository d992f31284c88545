"""source = "workload-identity": a federated token file (Kubernetes workload identity, CI OIDC).

Tenant, client id and token file default to AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE.
"""

from __future__ import annotations

from typing import Any

from azure.identity import WorkloadIdentityCredential

from tokend.config import IdentityConfig
from tokend.identities._authority import authority_kwargs


def credential(config: IdentityConfig) -> Any:
    kwargs = authority_kwargs(config)
    if config.tenant_id:
        kwargs["tenant_id"] = config.tenant_id
    if config.client_id:
        kwargs["client_id"] = config.client_id
    if config.token_file:
        kwargs["token_file_path"] = str(config.token_file)
    return WorkloadIdentityCredential(**kwargs)
