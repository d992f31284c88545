"""The emulator speaks Entra's formats faithfully enough for the real clients, and checks tokens like Azure."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import jwt
import pytest
from azure.identity import ClientSecretCredential

from tokend.emulator import pgaadauth
from tokend.emulator.directory import TokenRejected
from tokend.emulator.postgres import Postgres

from support.builders import GROUP, RESOURCE, SECRET
from support.product import PRODUCT_PYTHON, TOKEND
from support.tenant import Tenant
from support.waits import wait_for


def fetch(url: str, bundle: str) -> dict:
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


def test_check_takes_a_members_own_name_and_a_renamed_groups_old_one(em: Tenant) -> None:
    """Group sync's logins: a member's token for their own UPN (or a service principal's display name) passes,
    anyone else's for it does not; after a rename the group's old name still passes for members (the role keeps it;
    Azure matches the role's object id)."""
    d = em.emulator.directory
    gus, hal = d.add_user("gus-check@contoso.example"), d.add_user("hal-check@contoso.example")
    d.add_group("Check Team", gus.oid, em.app.oid)
    try:
        gus_token, _ = d.mint(RESOURCE, user=gus)
        assert d.check(gus_token, gus.upn) == gus.upn
        assert d.check(d.mint(RESOURCE, app=em.app)[0], em.app.name)
        for wrong in (hal.upn, em.app.name, em.alice.upn, "gus-check@contoso.example ", "GUS-check@contoso.example"):
            with pytest.raises(TokenRejected, match="not"):
                d.check(gus_token, wrong)
        d.rename_group("Check Team", "Check Crew")
        assert d.check(gus_token, "Check Team") and d.check(gus_token, "Check Crew")
        with pytest.raises(TokenRejected):
            d.check(d.mint(RESOURCE, user=hal)[0], "Check Team")
    finally:
        d.groups.pop("Check Crew", None)
        d.users.pop(gus.upn)
        d.users.pop(hal.upn)
        d.changed()


def test_group_sync_runs_on_its_interval_while_the_parameter_is_on(em: Tenant, postgres: Postgres) -> None:
    d = em.emulator.directory
    ivy = d.add_user("ivy-sync@contoso.example")
    d.add_group("Interval Team", ivy.oid)
    postgres.sql('CREATE DATABASE "intervaldb"')
    postgres.install_pgaadauth("intervaldb", d)
    try:
        postgres.sql("SELECT pgaadauth_create_principal('Interval Team', false, false)", "intervaldb")
        assert postgres.sql("SHOW pgaadauth.enable_group_sync").strip() == "off"  # Azure's default
        sync = postgres.start_group_sync(0.2)
        wait_for(lambda: sync.runs >= 2, what="the periodic sync to run twice")
        assert sync.last_error is None and not postgres.sql(f"SELECT 1 FROM pg_roles WHERE rolname = '{ivy.upn}'")
        postgres.set_parameter(pgaadauth.SETTING, "on")
        member = (
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
            f"JOIN pg_roles g ON g.oid = m.roleid WHERE r.rolname = '{ivy.upn}' AND g.rolname = 'Interval Team'"
        )
        wait_for(lambda: postgres.sql(member).strip() == "1", what="the periodic sync to make the member's role")
        principal = postgres.sql(
            f"SELECT * FROM pgaadauth_list_principals(false) WHERE rolename = '{ivy.upn}'", "intervaldb"
        )
        assert principal.split("|")[:3] == [ivy.upn, "user", ivy.oid]
    finally:
        if postgres.group_sync is not None:
            postgres.group_sync.stop()
            postgres.group_sync = None
        postgres.set_parameter(pgaadauth.SETTING, "off")
        postgres.forget_pgaadauth("intervaldb")
        postgres.sql('DROP DATABASE "intervaldb" WITH (FORCE)')
        postgres.sql(f'DROP ROLE IF EXISTS "{ivy.upn}"; DROP ROLE IF EXISTS "Interval Team"')
        d.groups.pop("Interval Team")
        d.users.pop(ivy.upn)
        d.changed()


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
    """The user flows over raw HTTP: device code → pending → approved → tokens; refresh; revoke → invalid_grant.
    A user of its own: the session's emulator is shared, and other tests leave alice signed in."""
    bob = em.emulator.directory.add_user(f"bob-{secrets.token_hex(4)}@contoso.example", "Bob Example")
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
    em.emulator.approve(dc["user_code"], bob.upn)
    status, tokens = post("token", grant)
    assert status == 200 and {"access_token", "refresh_token", "id_token", "client_info", "scope"} <= set(tokens)
    assert em.emulator.directory.check(tokens["access_token"], bob.upn)
    status, again = post(
        "token",
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": "cli", "scope": scope},
    )
    assert status == 200 and again["access_token"] != tokens["access_token"]
    assert em.emulator.revoke(bob.upn) == 1
    status, refused = post(
        "token",
        {"grant_type": "refresh_token", "refresh_token": again["refresh_token"], "client_id": "cli", "scope": scope},
    )
    assert status == 400 and refused["error"] == "invalid_grant" and "AADSTS50173" in refused["error_description"]


def test_standalone_emulator_from_a_small_config(tmp_path, monkeypatch) -> None:
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


def test_standalone_emulator_with_postgres_syncs_groups(tmp_path, monkeypatch) -> None:
    """``--postgres --group-sync --group-sync-interval 0.3 --admin ci-app``: roles for the directory's principals,
    pgaadauth in appdb (those roles its principals), the parameter on, and the periodic sync making the group's
    members members of its role."""
    cfg = tmp_path / "emulator.toml"
    cfg.write_text(
        '[[users]]\nupn = "bob@contoso.example"\n[[apps]]\nname = "ci-app"\nsecret = "abc"\n'
        '[[groups]]\nname = "Readers"\nmembers = ["bob@contoso.example", "ci-app"]\n'
    )
    proc = subprocess.Popen(
        [
            *(PRODUCT_PYTHON, "-m", "tokend.emulator", "--config", str(cfg), "--folder", str(tmp_path / "em")),
            *("--postgres", "--group-sync", "--group-sync-interval", "0.3", "--admin", "ci-app"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(proc.stdout.readline())
        assert info["postgres"]["group_sync"] is True and info["postgres"]["group_sync_interval"] == 0.3
        bundle = tmp_path / "bundle.pem"
        bundle.write_bytes(Path(os.environ["REQUESTS_CA_BUNDLE"]).read_bytes() + Path(info["ca"]).read_bytes())
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
        cred = ClientSecretCredential(
            info["tenant_id"], info["apps"]["ci-app"], "abc", authority=info["url"], disable_instance_discovery=True
        )
        token = cred.get_token_info(f"{RESOURCE}/.default").token
        pg = info["postgres"]

        conninfo = f"host={pg['host']} port={pg['port']} dbname={pg['database']} user=ci-app sslmode=require"

        def query(sql: str) -> str:
            r = subprocess.run(
                ["psql", conninfo, "-w", "-Atc", sql],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "PGPASSWORD": token},
            )
            assert r.returncode == 0, r.stderr
            return r.stdout.strip()

        listed = query("SELECT rolename, principaltype, isadmin FROM pgaadauth_list_principals(false)")
        assert listed.splitlines() == ["Readers|group|0", "bob@contoso.example|user|0", "ci-app|service|1"]
        assert query("SHOW pgaadauth.enable_group_sync") == "on"
        wait_for(
            lambda: query("SELECT pg_has_role('bob@contoso.example', 'Readers', 'MEMBER')") == "t",
            what="the periodic sync to make bob a member of Readers",
        )
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_tokend_emulator_prints_every_ca_and_leaves_nothing_after_ctrl_c(tmp_path) -> None:
    """`tokend emulator --postgres` from the installed product: Entra's CA gets a token, the printed PostgreSQL CA
    passes psql's verify-full, and after SIGINT its temp folder (CAs, server.key) and the cluster are gone."""
    cfg = tmp_path / "emulator.toml"
    cfg.write_text('[[apps]]\nname = "ci-app"\nsecret = "abc"\n[[groups]]\nname = "Readers"\nmembers = ["ci-app"]\n')
    proc = subprocess.Popen([TOKEND, "emulator", "--config", str(cfg), "--postgres"], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        folder = Path(info["ca_bundle"]).parent
        assert folder.is_dir() and Path(info["ca"]).is_relative_to(folder)
        pg = info["postgres"]
        assert Path(pg["sslrootcert"]).is_file()
        bundle = Path(info["ca_bundle"]).read_bytes()
        assert Path(info["ca"]).read_bytes() in bundle and Path(pg["sslrootcert"]).read_bytes() in bundle
        cred = ClientSecretCredential(
            info["tenant_id"],
            info["apps"]["ci-app"],
            "abc",
            authority=info["url"],
            disable_instance_discovery=True,
            connection_verify=info["ca"],
        )
        token = cred.get_token_info(f"{RESOURCE}/.default").token
        conninfo = (
            f"host=localhost port={pg['port']} dbname={pg['database']} user=Readers "
            f"sslmode=verify-full sslrootcert={pg['sslrootcert']}"
        )
        r = subprocess.run(
            ["psql", conninfo, "-w", "-Atc", "select current_user"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PGPASSWORD": token},
        )
        assert r.returncode == 0 and r.stdout.strip() == "Readers", r.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    assert not folder.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", pg["port"]), timeout=2).close()  # the cluster is stopped too
