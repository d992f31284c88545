"""source = "service-principal": an app registration's client secret or certificate.

The secret comes from exactly one place (``tokend.client_secrets``): an environment variable, a mounted file or the
OS keychain. The variable and the file are read again at each token request, so a rotated secret (a Kubernetes
mount swapped, the environment file changed and reloaded) is used from the next request on without a restart; the
keychain is read when the credential is built (at start, and when the daemon asks for a fresh token).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from azure.identity import CertificateCredential, ClientSecretCredential

from tokend import client_secrets
from tokend.config import IdentityConfig
from tokend.identities._authority import authority_kwargs


class RereadSecretCredential:
    """A ClientSecretCredential whose secret is read at each request; a changed secret gets a new credential (MSAL
    keeps its token cache per credential, so an unchanged secret keeps the cached token)."""

    def __init__(self, config: IdentityConfig, read: Callable[[], str]) -> None:
        self._config = config
        self._read = read
        self._secret: str | None = None
        self._inner: ClientSecretCredential | None = None

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        secret = self._read()
        if self._inner is None or secret != self._secret:
            self.close()
            assert self._config.tenant_id and self._config.client_id  # config.py requires both for this source
            self._inner = ClientSecretCredential(
                self._config.tenant_id, self._config.client_id, secret, **authority_kwargs(self._config)
            )
            self._secret = secret
        return self._inner.get_token_info(*scopes, options=options)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
        self._inner = None


def credential(config: IdentityConfig) -> Any:
    assert config.tenant_id and config.client_id  # config.py requires both for this source
    if config.certificate_path:
        return CertificateCredential(
            config.tenant_id, config.client_id, str(config.certificate_path), **authority_kwargs(config)
        )
    if config.client_secret_keychain:
        kept = client_secrets.read_keychain(config)  # read at start: a keychain can prompt, a file cannot
        return RereadSecretCredential(config, lambda: kept)
    return RereadSecretCredential(config, lambda: client_secrets.read(config))
