"""The emulator's directory: tokens minted as real RS256 JWTs shaped like Entra's v1 ossrdbms tokens, verifiable
with the published JWKS, and checked the way Azure's PostgreSQL checks them (principal or group member, audience,
expiry, tenant)."""

from __future__ import annotations

import base64
import hashlib
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tokend.emulator.directory import RESOURCES, Directory, TokenRejected
from tokend.token import Token, group_ids

RESOURCE = RESOURCES[0]


@pytest.fixture(scope="module")
def d() -> Directory:
    d = Directory(domain="contoso.example")
    alice = d.add_user("alice@contoso.example", "Alice Smith")
    d.add_user("bob@contoso.example")
    app = d.add_app("Report Writer", secret="s3cret")
    mi = d.add_managed_identity("etl-identity")
    d.add_group("DBA Group", alice.oid, mi.oid)
    d.add_group("Readers", app.oid)
    return d


def header(token: str) -> dict[str, str]:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))


def verify(d: Directory, token: str, audience: str = RESOURCE) -> dict[str, object]:
    """Verify as a client of the directory would: with the key its JWKS publishes for the token's kid."""
    (jwk,) = d.jwks()["keys"]
    assert header(token)["kid"] == jwk["kid"]
    key = jwt.PyJWK(jwk).key
    return jwt.decode(token, key, algorithms=["RS256"], audience=audience)


def test_a_users_token_verifies_with_the_jwks_and_carries_entras_v1_claims(d: Directory) -> None:
    alice = d.users["alice@contoso.example"]
    token, exp = d.mint(RESOURCE + "/", user=alice)
    claims = verify(d, token)
    assert claims["aud"] == RESOURCE  # a trailing slash on the resource is not part of the audience
    assert claims["iss"] == f"https://sts.windows.net/{d.tenant_id}/" and claims["tid"] == d.tenant_id
    assert (claims["oid"], claims["upn"], claims["name"], claims["ver"]) == (alice.oid, alice.upn, "Alice Smith", "1.0")
    assert claims["exp"] == exp and claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]
    assert (claims["given_name"], claims["family_name"], claims["scp"]) == ("Alice", "Smith", "user_impersonation")
    assert header(token)["alg"] == "RS256" and header(token)["x5t"] == d.kid
    assert 1500 <= len(token) <= 2600  # the size of a real ossrdbms token (DESIGN.md: about 1.5-2.5 KB)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_apps_and_managed_identities_get_app_tokens(d: Directory) -> None:
    app = next(iter(d.apps.values()))
    mi = next(iter(d.identities.values()))
    a = verify(d, d.mint(RESOURCE, app=app)[0])
    assert (a["oid"], a["appid"], a["idtyp"], a["appidacr"]) == (app.oid, app.client_id, "app", "1") and "upn" not in a
    m = verify(d, d.mint(RESOURCE, mi=mi)[0])
    assert (m["oid"], m["appid"], m["appidacr"]) == (mi.oid, mi.client_id, "2")
    assert str(m["xms_mirid"]).endswith("/userAssignedIdentities/etl-identity")


def test_the_kid_is_the_sha1_thumbprint_of_the_public_key(d: Directory) -> None:
    der = d.key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert d.kid == base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
    (jwk,) = d.jwks()["keys"]
    assert (jwk["kty"], jwk["use"], jwk["x5t"]) == ("RSA", "sig", d.kid) and "d" not in jwk  # public part only


def test_every_minted_token_is_recorded_with_its_principal(d: Directory) -> None:
    before = len(d.issued)
    token, exp = d.mint(RESOURCE, user=d.users["bob@contoso.example"], lifetime=60)
    record = d.issued[before]
    assert record["token"] == token and record["principal"] == "bob@contoso.example"
    assert record["exp"] == exp and exp - record["iat"] == 60 and record["aud"] == RESOURCE


def test_tokend_reads_the_display_claims_of_a_minted_token(d: Directory) -> None:
    alice = d.users["alice@contoso.example"]
    token, exp = d.mint(RESOURCE, user=alice)
    t = Token.from_jwt(token, exp, exp - 3600)
    assert t.principal == alice.upn and t.claims["tid"] == d.tenant_id and t.claims["aud"] == RESOURCE


@pytest.mark.parametrize(
    ("who", "role", "principal"),
    [
        ("alice", "alice@contoso.example", "alice@contoso.example"),  # as herself
        ("alice", "DBA Group", "alice@contoso.example"),  # as a group she is in
        ("app", "Report Writer", "app"),  # an app by its display name
        ("app", "Readers", "app"),
        ("mi", "etl-identity", "mi"),
        ("mi", "DBA Group", "mi"),
    ],
)
def test_check_accepts_the_principal_and_members_of_the_roles_group(
    d: Directory, who: str, role: str, principal: str
) -> None:
    app, mi = next(iter(d.apps.values())), next(iter(d.identities.values()))
    kwargs = {"alice": {"user": d.users["alice@contoso.example"]}, "app": {"app": app}, "mi": {"mi": mi}}[who]
    token, _ = d.mint(RESOURCE, **kwargs)  # type: ignore[arg-type]
    want = {"app": app.client_id, "mi": mi.client_id}.get(principal, principal)
    assert d.check(token, role) == want


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not a member", 'principal is not "DBA Group" nor a member of a group of that name'),
        ("expired", "The access token has expired. Please acquire a new token and retry."),
        ("wrong audience", "does not have a valid audience claim"),
        ("another tenant", "The access token is not valid (InvalidSignatureError)."),
        ("garbage", "The access token is not valid (DecodeError)."),
        ("unsigned", "The access token is not valid"),
    ],
)
def test_check_refuses_with_azures_words(d: Directory, case: str, message: str) -> None:
    bob = d.users["bob@contoso.example"]
    alice = d.users["alice@contoso.example"]
    if case == "not a member":
        token = d.mint(RESOURCE, user=bob)[0]
    elif case == "expired":
        token = d.mint(RESOURCE, user=alice, lifetime=-60)[0]
    elif case == "wrong audience":
        token = d.mint("https://management.azure.com", user=alice)[0]
    elif case == "another tenant":
        other = Directory()
        token = other.mint(RESOURCE, user=other.add_user("alice@contoso.example"))[0]
    elif case == "garbage":
        token = "not-a-token"
    else:
        claims = jwt.decode(d.mint(RESOURCE, user=alice)[0], options={"verify_signature": False})
        token = jwt.encode(claims, key=None, algorithm="none")
    with pytest.raises(TokenRejected) as e:
        d.check(token, "DBA Group")
    assert message in str(e.value)


def test_a_token_of_the_same_key_but_another_tenant_id_is_refused(d: Directory) -> None:
    twin = Directory(key=d.key)  # same signing key, another tenant
    token = twin.mint(RESOURCE, user=twin.add_user("alice@contoso.example"))[0]
    with pytest.raises(TokenRejected, match="issued by another tenant"):
        d.check(token, "alice@contoso.example")


def test_a_federated_assertion_is_for_token_exchange_and_names_the_app(d: Directory) -> None:
    app = next(iter(d.apps.values()))
    claims = verify(d, d.mint_federated(app), audience="api://AzureADTokenExchange")
    assert claims["sub"] == "system:serviceaccount:default:Report Writer" and claims["appid"] == app.client_id
    assert claims["exp"] - claims["iat"] == 3600


def test_the_groups_claim_names_each_group_of_the_principal_only_when_asked_for() -> None:

    d = Directory()
    alice, bob = d.add_user("alice@contoso.example"), d.add_user("bob@contoso.example")
    app = d.add_app("Report Writer", secret="s")
    dba, readers = d.add_group("DBA Group", alice.oid, app.oid), d.add_group("Readers", alice.oid)
    assert group_ids(d.mint(RESOURCE, user=alice)[0]) is None  # off by default, as in Entra
    d.groups_claim = True
    assert group_ids(d.mint(RESOURCE, user=alice)[0]) == tuple(sorted([dba.oid, readers.oid]))
    assert group_ids(d.mint(RESOURCE, app=app)[0]) == (dba.oid,)
    assert group_ids(d.mint(RESOURCE, user=bob)[0]) == ()
