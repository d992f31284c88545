"""TLS with libpq's meanings: verify-full verifies the chain (the target's CA file alone, else the system's roots) and
the host name, require encrypts and verifies nothing; one verifying context per CA file, shared, rebuilt when the
file changes and dropped when no target names it; a CA file that cannot be read is a reason, said once."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from tokend.pg import tls

from support.pgserver import server_tls


def test_verify_full_checks_the_chain_and_the_host_with_only_the_targets_ca(tmp_path: Path) -> None:
    _, cert = server_tls(tmp_path)
    ctx = tls.context("verify-full", cert)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert len(ctx.get_ca_certs()) == 1
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_require_encrypts_and_verifies_nothing() -> None:
    ctx = tls.context("require")
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert ctx.get_ca_certs() == []  # nothing read: the system's store costs 18 ms and 0.85 MB
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("mode", ["prefer", "disable", "verify-ca", ""])
def test_other_sslmodes_are_not_tokends(mode: str) -> None:
    with pytest.raises(ValueError, match="is not one of require, verify-full"):
        tls.context(mode)


def test_the_name_for_sni_and_verification_is_the_targets_host() -> None:
    assert tls.server_hostname("contoso.postgres.database.azure.com") == "contoso.postgres.database.azure.com"
    assert tls.server_hostname("127.0.0.1") == "127.0.0.1"  # ssl sends no SNI for an address, as libpq does not


def test_one_context_per_ca_file_rebuilt_when_the_file_changes(tmp_path: Path) -> None:
    _, cert = server_tls(tmp_path / "a")
    _, other = server_tls(tmp_path / "b")
    contexts = tls.Contexts()
    first = contexts.get(cert)
    assert isinstance(first, ssl.SSLContext)
    assert all(contexts.get(cert) is first for _ in range(100))  # never one per connection
    cert.write_bytes(other.read_bytes())
    st = os.stat(cert)
    os.utime(cert, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = contexts.get(cert)
    assert isinstance(second, ssl.SSLContext) and second is not first
    assert len(contexts) == 2
    contexts.keep({cert})  # the old content's context goes
    assert len(contexts) == 1 and contexts.get(cert) is second
    contexts.keep(set())
    assert len(contexts) == 0


def test_the_systems_roots_are_one_context_too() -> None:
    contexts = tls.Contexts()
    system = contexts.get(None)
    assert isinstance(system, ssl.SSLContext) and contexts.get(None) is system
    contexts.keep({None})
    assert len(contexts) == 1


def test_a_ca_file_that_cannot_be_read_is_a_reason_said_once(tmp_path: Path) -> None:
    heard: list[str] = []
    contexts = tls.Contexts(heard.append)
    missing = tmp_path / "missing.pem"
    assert contexts.get(missing) == f"cannot load the CA file {missing}: No such file or directory"
    assert contexts.get(missing) == heard[0] and len(heard) == 1
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    why = contexts.get(garbage)
    assert isinstance(why, str) and why.startswith(f"cannot load the CA file {garbage}: ") and len(heard) == 2
