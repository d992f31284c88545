"""TLS for the proxy's client leg (loopback TCP only): a self-signed certificate of this user's, made on first use
and kept in the config's state folder (key 0600), so clients that insist on ``sslmode=require`` work unchanged; its
path is shown in ``tokend status`` for clients that want to verify it (``sslrootcert``, ``sslmode=verify-full``).
The server leg's TLS is the one login's (``tokend.pg.tls``: verify-full, one context per CA file).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tokend import paths
from tokend.sinks.atomic import write_private

NAMES = ("localhost", "127.0.0.1", "::1")
VALID_DAYS = 825  # the longest a TLS server certificate may live for most clients


def local_certificate(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) for the proxy's loopback listeners, made once in ``folder`` (renewed when near its end)."""
    cert, key = folder / "proxy-cert.pem", folder / "proxy-key.pem"
    if cert.exists() and key.exists() and _days_left(cert) > 30:
        return cert, key
    paths.private_dir(folder)
    now = dt.datetime.now(dt.timezone.utc)
    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokend local proxy")])
    alt: list[x509.GeneralName] = []
    for n in NAMES:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    c = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(k, hashes.SHA256())
    )
    write_private(
        key,
        k.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )
    write_private(cert, c.public_bytes(serialization.Encoding.PEM).decode())
    return cert, key


def local_context(folder: Path) -> tuple[ssl.SSLContext, Path]:
    cert, key = local_certificate(folder)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx, cert


def _days_left(cert: Path) -> float:
    try:
        end = x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc
    except (ValueError, OSError):
        return 0
    return (end - dt.datetime.now(dt.timezone.utc)).total_seconds() / 86400
