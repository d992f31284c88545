"""The emulator speaks Entra's formats faithfully enough for the real clients, and checks tokens like Azure."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import jwt
import pytest
from azure.identity import ClientSecretCredential

from tokend.emulator.directory import TokenRejected

from support.builders import GROUP, RESOURCE, SECRET
from support.product import PRODUCT_PYTHON
from support.tenant import Tenant


def fetch(url: str, bundle: str) -> dict:
    import ssl

    ctx = ssl.create_default_context(cafile=bundle)
    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
        return json.load(r)


def credential(t: Tenant) -> ClientSecretCredential:
    return ClientSecretCredential(
        t.tenant_id, t.app.client_id, SECRET, authority=t.url, disable_instance_discovery=True
    )


def test_tokens_look_like_real_ossrdbms_tokens(em: Tenant) -> None:
    d = em.emulator.directory
    user_token, _ = d.mint(RESOURCE, user=em.alice)
    app_token, _ = d.mint(RESOURCE, app=em.app)
    mi_token, _ = d.mint(RESOURCE, mi=em.mi)
    for token in (user_token, app_token, mi_token):
        assert 1500 <= len(token) <= 2600, len(token)
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "RS256" and header["kid"]
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["ver"] == "1.0" and claims["aud"] == RESOURCE
        assert claims["iss"] == f"https://sts.windows.net/{d.tenant_id}/"
        assert {"oid", "tid", "iat", "nbf", "exp", "appid"} <= set(claims)
    assert jwt.decode(user_token, options={"verify_signature": False})["upn"] == em.alice.upn


def test_discovery_and_jwks_verify_an_issued_token(em: Tenant) -> None:
    oidc = fetch(f"{em.url}/{em.tenant_id}/v2.0/.well-known/openid-configuration", str(em.bundle))
    assert oidc["token_endpoint"] == f"{em.url}/{em.tenant_id}/oauth2/v2.0/token"
    keys = fetch(oidc["jwks_uri"], str(em.bundle))
    token = credential(em).get_token_info(f"{RESOURCE}/.default").token
    key = jwt.PyJWK(keys["keys"][0]).key
    assert jwt.decode(token, key, algorithms=["RS256"], audience=RESOURCE)["appid"] == em.app.client_id


def test_check_accepts_members_and_refuses_the_rest(em: Tenant) -> None:
    d = em.emulator.directory
    token, _ = d.mint(RESOURCE, app=em.app)
    assert d.check(token, GROUP) and d.check(token, em.app.name)
    with pytest.raises(TokenRejected, match="not"):
        d.check(token, "Other Group")
    expired, _ = d.mint(RESOURCE, app=em.app, lifetime=-1)
    with pytest.raises(TokenRejected, match="expired"):
        d.check(expired, GROUP)
    wrong_aud, _ = d.mint("https://management.core.windows.net", app=em.app)
    with pytest.raises(TokenRejected, match="audience"):
        d.check(wrong_aud, GROUP)
    with pytest.raises(TokenRejected):
        d.check(token[:-4] + "AAAA", GROUP)


def test_faults_fail_then_recover(em: Tenant) -> None:
    e = em.emulator
    e.fail_next(2)  # azure-core retries 500s: two are absorbed inside one call
    before = len(e.requests)
    t0 = time.monotonic()
    token = credential(em).get_token_info(f"{RESOURCE}/.default")
    assert token.token and e.faults.fail == 0
    assert len(e.requests) - before >= 4  # discovery and token, plus the two that failed
    assert time.monotonic() - t0 < 10


def test_refused_connections_fail_fast_and_come_back(em: Tenant) -> None:
    e = em.emulator
    e.refuse_connections()
    with pytest.raises(Exception, match=r"(?i)connect|refused"):
        credential(em).get_token_info(f"{RESOURCE}/.default")
    e.accept_connections()
    assert credential(em).get_token_info(f"{RESOURCE}/.default").token


def test_device_code_and_refresh_token_flow(em: Tenant) -> None:
    """The user flows over raw HTTP: device code → pending → approved → tokens; refresh; revoke → invalid_grant."""
    import ssl
    import urllib.parse

    ctx = ssl.create_default_context(cafile=str(em.bundle))

    def post(path: str, form: dict[str, str]) -> tuple[int, dict]:
        req = urllib.request.Request(
            f"{em.url}/{em.tenant_id}/oauth2/v2.0/{path}", urllib.parse.urlencode(form).encode()
        )
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    scope = f"{RESOURCE}/.default offline_access openid profile"
    status, dc = post("devicecode", {"client_id": "cli", "scope": scope})
    assert status == 200 and {"device_code", "user_code", "verification_uri", "interval", "message"} <= set(dc)
    grant = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": dc["device_code"],
        "client_id": "cli",
    }
    status, pending = post("token", grant)
    assert status == 400 and pending["error"] == "authorization_pending"
    em.emulator.approve(dc["user_code"], em.alice.upn)
    status, tokens = post("token", grant)
    assert status == 200 and {"access_token", "refresh_token", "id_token", "client_info", "scope"} <= set(tokens)
    assert em.emulator.directory.check(tokens["access_token"], em.alice.upn)
    status, again = post(
        "token",
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": "cli", "scope": scope},
    )
    assert status == 200 and again["access_token"] != tokens["access_token"]
    assert em.emulator.revoke(em.alice.upn) == 1
    status, refused = post(
        "token",
        {"grant_type": "refresh_token", "refresh_token": again["refresh_token"], "client_id": "cli", "scope": scope},
    )
    assert status == 400 and refused["error"] == "invalid_grant" and "AADSTS50173" in refused["error_description"]


def test_standalone_emulator_from_a_small_config(tmp_path, monkeypatch) -> None:
    import os
    import subprocess

    cfg = tmp_path / "emulator.toml"
    cfg.write_text(
        'lifetime = 120\n[[users]]\nupn = "bob@contoso.example"\n[[apps]]\nname = "ci-app"\n'
        'client_id = "11111111-2222-3333-4444-555555555555"\nsecret = "abc"\n'
        '[[groups]]\nname = "Readers"\nmembers = ["bob@contoso.example", "ci-app"]\n'
    )
    proc = subprocess.Popen(
        [PRODUCT_PYTHON, "-m", "tokend.emulator", "--config", str(cfg), "--folder", str(tmp_path / "em")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(proc.stdout.readline())
        assert info["apps"] == {"ci-app": "11111111-2222-3333-4444-555555555555"}
        bundle = tmp_path / "bundle.pem"
        bundle.write_bytes(Path(os.environ["REQUESTS_CA_BUNDLE"]).read_bytes() + Path(info["ca"]).read_bytes())
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
        cred = ClientSecretCredential(
            info["tenant_id"], info["apps"]["ci-app"], "abc", authority=info["url"], disable_instance_discovery=True
        )
        token = cred.get_token_info(f"{RESOURCE}/.default")
        assert 100 < token.expires_on - time.time() <= 120
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
