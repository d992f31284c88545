"""tokend/advice.py: one line of fix per kind of failure, chosen from the error texts the product really meets."""

from __future__ import annotations

import pytest

from tokend import advice
from tokend.advice import Failure


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (
            "HTTPSConnectionPool(host='login.example', port=443): Max retries exceeded (Caused by "
            "NameResolutionError(\"Failed to resolve 'login.example' ([Errno -2] Name or service not known)\"))",
            Failure.AUTHORITY_DNS,
        ),
        (
            "SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
            "self-signed certificate in certificate chain (_ssl.c:1006)'))",
            Failure.AUTHORITY_TLS,
        ),
        (
            "NewConnectionError(': Failed to establish a new connection: [Errno 111] Connection refused')",
            Failure.AUTHORITY_REFUSED,
        ),
        ("AADSTS7000215: Invalid client secret provided.", None),
        # requests 2.32 / urllib3 2 through an HTTPS_PROXY: refused, its name unknown, the tunnel denied (tinyproxy)
        (
            "Authentication failed: ('Unable to connect to proxy', NewConnectionError(\"HTTPSConnection(host="
            "'127.0.0.1', port=24420): Failed to establish a new connection: [Errno 111] Connection refused\"))",
            Failure.PROXY,
        ),
        (
            "(Caused by ProxyError('Unable to connect to proxy', NameResolutionError(\"HTTPSConnection(host="
            "'noproxy.invalid', port=3128): Failed to resolve 'noproxy.invalid' ([Errno -2] Name or service not known",
            Failure.PROXY,
        ),
        (
            "(Caused by ProxyError('Unable to connect to proxy', OSError('Tunnel connection failed: 403 Access "
            "violation')))",
            Failure.PROXY,
        ),
    ],
)
def test_token_errors_are_classified_by_what_went_wrong(message: str, kind: Failure | None) -> None:
    assert advice.classify_token_error(message) == kind


def test_token_fixes_name_the_identity_and_the_one_step() -> None:
    tls = advice.for_token_error("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", "work")
    assert "ca_bundle" in tls and "[identities.work]" in tls and "check the network" not in tls
    dns = advice.for_token_error("Failed to resolve 'login.microsoftonline.com'", "work")
    assert "authority" in dns and "DNS" in dns
    other = advice.for_token_error("AADSTS7000215: Invalid client secret provided.", "work")
    assert "[identities.work]" in other


@pytest.mark.parametrize(
    ("message", "user", "needle"),
    [
        (
            'connection to server at "db.example" (10.0.0.7), port 5432 failed: FATAL:  password authentication '
            'failed for user "DBA Group"',
            "DBA Group",
            "member of the group 'DBA Group'",
        ),
        (
            'FATAL:  password authentication failed for user "alice@contoso.com"',
            "alice@contoso.com",
            "pgaadauth_create_principal",
        ),
        (
            "SSL error: certificate verify failed",
            "DBA Group",
            "set the target's sslrootcert (in [targets.prod])",
        ),
        ('could not translate host name "nowhere.invalid" to address', "u", "DNS"),
        ("connection refused", "u", "firewall"),
        ("server does not support SSL, but SSL was required", "u", "Azure requires TLS"),
    ],
)
def test_login_errors_get_the_same_fix_wherever_they_are_seen(message: str, user: str, needle: str) -> None:
    assert needle in advice.for_login_error(message, "prod", "db.example", user)


def test_the_proxy_hint_for_server_tls_is_the_one_used_everywhere() -> None:
    hint = advice.server_tls("prod", "db.example")
    assert hint.startswith("set the target's sslrootcert")
    assert hint == advice.for_login_error("certificate verify failed", "prod", "db.example", "u")


def test_every_kind_has_a_line() -> None:
    for kind in Failure:
        text = advice.fix(kind, identity="i", target="t", host="h", user="u", path="/p", config="/c")
        assert text and "\n" not in text, kind
    assert advice.fix(Failure.NO_DAEMON, config="/c.toml").count("--config /c.toml") == 2
    assert advice.fix(Failure.PGPASS_MODE, path="/h/.pgpass") == "chmod 600 /h/.pgpass"


@pytest.mark.parametrize(
    ("principal", "user", "other"),
    [
        ("bob@contoso.com", "alice@contoso.com", True),
        ("Alice@Contoso.com", "alice@contoso.com", False),
        ("bob@contoso.com", "DBA Group", False),  # a group: membership is the server's to judge
        ("11111111-2222-3333-4444-555555555555", "my-app", False),
        ("live.com#bob@gmail.com", "bob_gmail.com#EXT#@contoso.onmicrosoft.com", False),
    ],
)
def test_another_account_is_only_judged_between_two_upns(principal: str, user: str, other: bool) -> None:
    assert advice.other_account(principal, user) is other
