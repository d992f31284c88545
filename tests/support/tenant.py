"""The emulator's test tenant: the Entra emulator with the principals the tests sign in as."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tokend.emulator.directory import App, ManagedIdentity, User
from tokend.emulator.server import Emulator

from support.builders import GROUP, SECRET


@dataclass
class Tenant:
    """The emulator with its directory, plus the principals the tests use."""

    emulator: Emulator
    alice: User
    app: App
    cert_app: App
    cert_pem: Path
    wi_app: App
    mi: ManagedIdentity
    bundle: Path  # the system's roots plus the emulator's CA: what REQUESTS_CA_BUNDLE must name

    @property
    def url(self) -> str:
        return self.emulator.url

    @property
    def tenant_id(self) -> str:
        return self.emulator.directory.tenant_id


def start(folder: Path) -> Tenant:
    """A running emulator in ``folder`` with alice, three apps (secret, certificate, federated), a managed identity
    and the group GROUP holding all of them."""
    em = Emulator(folder=folder).start()
    d = em.directory
    alice = d.add_user("alice@contoso.example", "Alice Example")
    app = d.add_app("tokend-ci-app", secret=SECRET)
    cert_pem, cert_path = _cert_pem(folder)
    cert_app = d.add_app("tokend-cert-app", certificate_pem=cert_pem)
    wi_app = d.add_app("tokend-wi-app", federated=True)
    mi = d.add_managed_identity("tokend-mi", system=True)
    d.add_group(GROUP, alice.oid, app.oid, cert_app.oid, wi_app.oid, mi.oid)
    system = os.environ.get("REQUESTS_CA_BUNDLE") or __import__("certifi").where()
    bundle = folder / "bundle.pem"
    bundle.write_bytes(Path(system).read_bytes() + b"\n" + em.certs.ca_cert.read_bytes())
    return Tenant(em, alice, app, cert_app, cert_path, wi_app, mi, bundle)


def _cert_pem(folder: Path) -> tuple[bytes, Path]:
    """A self-signed certificate for the certificate credential: returns (cert PEM, path of key+cert PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokend-cert-app")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    path = folder / "cert-app.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert_pem
    )
    path.chmod(0o600)
    return cert_pem, path
