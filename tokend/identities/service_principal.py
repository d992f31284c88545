"""source = "service-principal": an app registration's client secret (named by an env var) or certificate."""

from __future__ import annotations

import os
from typing import Any

from azure.identity import CertificateCredential, ClientSecretCredential

from tokend.config import IdentityConfig
from tokend.errors import IdentityUnavailable
from tokend.identities._authority import authority_kwargs


def credential(config: IdentityConfig) -> Any:
    assert config.tenant_id and config.client_id  # config.py requires both for this source
    if config.certificate_path:
        return CertificateCredential(
            config.tenant_id, config.client_id, str(config.certificate_path), **authority_kwargs(config)
        )
    secret = os.environ.get(config.client_secret_env or "")
    if not secret:
        raise IdentityUnavailable(
            f"environment variable {config.client_secret_env} is not set where tokend runs; "
            "export it in the daemon's environment (its service or shell) and restart it"
        )
    return ClientSecretCredential(config.tenant_id, config.client_id, secret, **authority_kwargs(config))
