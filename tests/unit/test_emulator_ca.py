"""The emulator's throwaway CA: a server certificate for loopback that a client trusting only ca.pem verifies, and a
private key file only its owner can read."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from tokend.emulator import ca


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> ca.CertFiles:
    return ca.make(tmp_path_factory.mktemp("ca") / "certs")


def chain(files: ca.CertFiles, name: x509.DNSName | x509.IPAddress) -> list[x509.Certificate]:
    root = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    leaf = x509.load_pem_x509_certificate(files.cert.read_bytes())
    store = Store([root])
    verifier = PolicyBuilder().store(store).time(dt.datetime.now(dt.timezone.utc)).build_server_verifier(name)
    return verifier.verify(leaf, [])


@pytest.mark.parametrize(
    "name",
    [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ],
    ids=["localhost", "127.0.0.1", "::1"],
)
def test_the_server_certificate_verifies_against_the_ca_for_every_loopback_name(
    files: ca.CertFiles, name: x509.DNSName | x509.IPAddress
) -> None:
    assert len(chain(files, name)) == 2


def test_it_is_not_valid_for_any_other_name(files: ca.CertFiles) -> None:
    with pytest.raises(VerificationError):
        chain(files, x509.DNSName("login.microsoftonline.com"))


def test_the_key_is_private_and_matches_the_certificate(files: ca.CertFiles) -> None:
    assert stat.S_IMODE(os.stat(files.key).st_mode) == 0o600
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.cert, files.key)  # raises when key and certificate do not belong together
    client = ssl.create_default_context(cafile=str(files.ca_cert))
    assert [c["subject"] for c in client.get_ca_certs()] == [((("commonName", "tokend emulator CA"),),)]


def test_the_certificates_are_valid_now_and_for_weeks(files: ca.CertFiles) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    for path in (files.ca_cert, files.cert):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        assert cert.not_valid_before_utc < now < cert.not_valid_after_utc - dt.timedelta(days=28)


def test_other_hosts_can_be_named(tmp_path: Path) -> None:
    files = ca.make(tmp_path / "c", hosts=("emulator.test", "10.0.0.5"))
    assert len(chain(files, x509.DNSName("emulator.test"))) == 2
    assert len(chain(files, x509.IPAddress(ipaddress.ip_address("10.0.0.5")))) == 2
    with pytest.raises(VerificationError):
        chain(files, x509.DNSName("localhost"))
