"""The emulator's HTTPS endpoints, in Entra's wire formats, with fault injection.

Entra paths: /{tenant}/v2.0/.well-known/openid-configuration, /{tenant}/oauth2/v2.0/token, …/devicecode,
/{tenant}/discovery/v2.0/keys. Managed identity (App Service flavour): /msi/token. ARM for the Azure CLI:
/arm/subscriptions, /arm/tenants. Control (tests, demo): /_emulator/*.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import secrets
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509

from tokend.emulator import ca
from tokend.emulator.directory import App, Directory, ManagedIdentity, User
from tokend.emulator.ldapcheck import LdapCheck

log = logging.getLogger("tokend.emulator")
_USER_SCOPES = {"openid", "profile", "offline_access"}


@dataclass
class Faults:
    fail: int = 0  # answer the next N requests with ``status``
    status: int = 500
    hang: int = 0  # hold the next N requests for ``hang_seconds`` and close without answering
    hang_seconds: float = 30.0


@dataclass
class DeviceFlow:
    client_id: str
    resource: str
    user_code: str
    expires: float
    upn: str | None = None


@dataclass
class AuthCode:
    client_id: str
    redirect_uri: str
    challenge: str
    upn: str
    resource: str
    nonce: str | None


@dataclass
class Grant:
    """A refresh token's meaning: which user signed in to which client."""

    upn: str
    client_id: str


class Emulator:
    """The whole emulator: HTTPS endpoints plus the token check PostgreSQL calls. In-process; start() / stop()."""

    def __init__(
        self,
        directory: Directory | None = None,
        folder: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ldap_port: int = 0,
    ) -> None:
        self.directory = directory or Directory()
        self.folder = folder or Path(tempfile.mkdtemp(prefix="tokend-emulator-"))
        self.host = host
        self.port = port
        self.faults = Faults()
        self.identity_header = secrets.token_urlsafe(16)
        self.mi_lifetime: float | None = None  # managed identity token lifetime; None: the directory's lifetime
        self.requests: list[dict[str, Any]] = []
        self.devices: dict[str, DeviceFlow] = {}
        self.grants: dict[str, Grant] = {}
        self.codes: dict[str, AuthCode] = {}
        self.browser_user: str | None = None  # who "signs in" when a browser opens the authorize page
        self.lock = threading.Lock()
        self.certs = ca.make(self.folder / "tls")
        self.ldap = LdapCheck(self.directory, host, ldap_port)
        self._http: ThreadingHTTPServer | None = None
        self._stop = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> Emulator:
        self._listen()
        self.ldap.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.refuse_connections()
        self.ldap.stop()

    def refuse_connections(self) -> None:
        """An outage: close the listening socket, so connections are refused until accept_connections()."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def accept_connections(self) -> None:
        if self._http is None:
            self._listen()

    def _listen(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.certs.cert, self.certs.key)
        server = ThreadingHTTPServer((self.host, self.port), _Handler)
        server.daemon_threads = True
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        server.emulator = self  # type: ignore[attr-defined]
        self.port = server.server_address[1]
        self._http = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="emulator-http", daemon=True
        ).start()

    # -- what tests and the demo use ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def fail_next(self, n: int, status: int = 500) -> None:
        with self.lock:
            self.faults.fail, self.faults.status = n, status

    def hang_next(self, n: int, seconds: float = 30.0) -> None:
        with self.lock:
            self.faults.hang, self.faults.hang_seconds = n, seconds

    def approve(self, user_code: str, upn: str) -> None:
        """A person signs in at the verification page and approves the device code."""
        with self.lock:
            for flow in self.devices.values():
                if flow.user_code == user_code:
                    flow.upn = upn
                    return
        raise KeyError(user_code)

    def revoke(self, upn: str) -> int:
        """Revoke every refresh token of ``upn`` (password reset, session revoked). Returns how many."""
        with self.lock:
            gone = [rt for rt, g in self.grants.items() if g.upn == upn]
            for rt in gone:
                del self.grants[rt]
        return len(gone)

    def token_requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].endswith("/token")]

    # -- token issuing ------------------------------------------------------------------------------------
    def token_endpoint(self, tenant: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type", "")
        scope = form.get("scope", "")
        resource = _resource(scope)
        client_id = form.get("client_id", "")
        d = self.directory
        if grant == "client_credentials":
            app = d.apps.get(client_id)
            if app is None:
                return _error(
                    400,
                    "unauthorized_client",
                    700016,
                    f"Application with identifier '{client_id}' was not found in the directory.",
                )
            if not self._client_ok(app, form, tenant):
                return _error(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret "
                    "being sent in the request is the client secret value.",
                )
            token, exp = d.mint(resource, app=app)
            return 200, {
                "token_type": "Bearer",
                "expires_in": exp - int(time.time()),
                "ext_expires_in": exp - int(time.time()),
                "access_token": token,
            }
        if grant == "refresh_token":
            with self.lock:
                g = self.grants.pop(form.get("refresh_token", ""), None)
            if g is None or g.upn not in d.users:
                return _error(
                    400,
                    "invalid_grant",
                    50173,
                    "The provided grant has expired due to it being revoked, "
                    "a fresh auth token is needed. The user might have "
                    "changed or reset their password.",
                )
            return 200, self._user_tokens(d.users[g.upn], g.client_id or client_id, resource, scope)
        if grant == "authorization_code":
            with self.lock:
                ac = self.codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if ac is None or ac.redirect_uri != form.get("redirect_uri") or digest != ac.challenge:
                return _error(
                    400,
                    "invalid_grant",
                    70008,
                    "The provided authorization code or refresh token has expired due to inactivity.",
                )
            return 200, self._user_tokens(d.users[ac.upn], ac.client_id, ac.resource, scope, ac.nonce)
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            with self.lock:
                flow = self.devices.get(form.get("device_code", ""))
            if flow is None or flow.expires < time.time():
                return _error(400, "expired_token", 70019, "Verification code expired.")
            if flow.upn is None:
                return _error(
                    400,
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                )
            with self.lock:
                del self.devices[form["device_code"]]
            return 200, self._user_tokens(d.users[flow.upn], flow.client_id, flow.resource, scope)
        return _error(400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'.")

    def device_code(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        code = secrets.token_urlsafe(48)
        user_code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(9))
        with self.lock:
            self.devices[code] = DeviceFlow(
                form.get("client_id", ""), _resource(form.get("scope", "")), user_code, time.time() + 900
            )
        uri = f"{self.url}/devicelogin"
        return 200, {
            "device_code": code,
            "user_code": user_code,
            "verification_uri": uri,
            "expires_in": 900,
            "interval": 1,
            "message": f"To sign in, use a web browser to open the page {uri} and enter the "
            f"code {user_code} to authenticate.",
        }

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The browser sign-in page: signs in ``browser_user`` at once and redirects back with a code (PKCE)."""
        redirect = query.get("redirect_uri", "")
        if not redirect.startswith(("http://localhost", "http://127.0.0.1")):
            return 400, {"error": "invalid_request", "error_description": "AADSTS50011: redirect URI mismatch"}
        if self.browser_user not in self.directory.users or query.get("code_challenge_method") != "S256":
            return 400, {"error": "access_denied", "error_description": "AADSTS50020: no user signed in here"}
        code = secrets.token_urlsafe(48)
        with self.lock:
            self.codes[code] = AuthCode(
                query.get("client_id", ""),
                redirect,
                query.get("code_challenge", ""),
                self.browser_user,
                _resource(query.get("scope", "")),
                query.get("nonce"),
            )
        sep = "&" if "?" in redirect else "?"
        return 302, {"Location": f"{redirect}{sep}code={code}&state={query.get('state', '')}"}

    def managed_identity(self, query: dict[str, str], header: str | None) -> tuple[int, dict[str, Any]]:
        if header != self.identity_header:
            return 401, {"statusCode": 401, "message": "Unauthorized: X-IDENTITY-HEADER missing or wrong"}
        client_id = query.get("client_id")
        d = self.directory
        mi: ManagedIdentity | None = (
            d.identities.get(client_id) if client_id else next((m for m in d.identities.values() if m.system), None)
        )
        if mi is None:
            return 400, {"statusCode": 400, "message": "No managed identity found for the request."}
        resource = query.get("resource", "")
        token, exp = d.mint(resource, mi=mi, lifetime=self.mi_lifetime)
        return 200, {
            "access_token": token,
            "expires_on": str(exp),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": mi.client_id,
        }

    def _client_ok(self, app: App, form: dict[str, str], tenant: str) -> bool:
        if "client_secret" in form:
            return app.secret is not None and secrets.compare_digest(form["client_secret"], app.secret)
        assertion = form.get("client_assertion", "")
        if not assertion:
            return False
        try:
            if app.certificate_pem is not None:
                key = x509.load_pem_x509_certificate(app.certificate_pem).public_key()
                jwt.decode(assertion, key, algorithms=["RS256", "PS256"], options={"verify_aud": False})  # type: ignore[arg-type]
                return True
            if app.federated:
                claims = jwt.decode(
                    assertion,
                    self.directory.key.public_key(),
                    algorithms=["RS256"],
                    audience="api://AzureADTokenExchange",
                )
                return claims.get("appid") == app.client_id
        except jwt.PyJWTError:
            return False
        return False

    def _user_tokens(
        self, user: User, client_id: str, resource: str, scope: str, nonce: str | None = None
    ) -> dict[str, Any]:
        d = self.directory
        token, exp = d.mint(resource, user=user, client_id=client_id)
        rt = secrets.token_urlsafe(64)
        with self.lock:
            self.grants[rt] = Grant(user.upn, client_id)
        now = int(time.time())
        id_claims = {
            "aud": client_id,
            "iss": f"{self.url}/{d.tenant_id}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": user.name,
            "oid": user.oid,
            "preferred_username": user.upn,
            "sub": user.oid,
            "tid": d.tenant_id,
            "ver": "2.0",
            **({"nonce": nonce} if nonce else {}),
        }
        id_token = jwt.encode(id_claims, d.key, algorithm="RS256")
        client_info = base64.urlsafe_b64encode(json.dumps({"uid": user.oid, "utid": d.tenant_id}).encode())
        return {
            "token_type": "Bearer",
            "scope": f"{resource}/user_impersonation {resource}/.default",
            "expires_in": exp - now,
            "ext_expires_in": exp - now,
            "access_token": token,
            "refresh_token": rt,
            "id_token": id_token,
            "client_info": client_info.rstrip(b"=").decode(),
        }

    def openid_configuration(self, tenant: str) -> dict[str, Any]:
        base = f"{self.url}/{tenant}"
        tid = self.directory.tenant_id
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "issuer": f"{self.url}/{tid}/v2.0",
            "tenant_region_scope": "NA",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "oid", "tid", "preferred_username"],
        }

    def route(
        self, method: str, path: str, query: dict[str, str], form: dict[str, str], headers: Any
    ) -> tuple[int, dict[str, Any]]:
        parts = [p for p in path.split("/") if p]
        if method == "GET" and parts[:1] == ["msi"]:
            return self.managed_identity(query, headers.get("X-IDENTITY-HEADER"))
        if method == "GET" and parts[:1] == ["arm"]:
            if parts[1:2] == ["tenants"]:
                tid = self.directory.tenant_id
                return 200, {
                    "value": [
                        {
                            "id": f"/tenants/{tid}",
                            "tenantId": tid,
                            "tenantCategory": "Home",
                            "displayName": "Emulator",
                            "defaultDomain": self.directory.domain,
                        }
                    ]
                }
            return 200, {"value": []}
        if len(parts) >= 2:
            tenant, rest = parts[0], "/".join(parts[1:])
            if method == "GET" and rest == "v2.0/.well-known/openid-configuration":
                return 200, self.openid_configuration(tenant)
            if method == "GET" and rest == "discovery/v2.0/keys":
                return 200, self.directory.jwks()
            if method == "POST" and rest == "oauth2/v2.0/token":
                return self.token_endpoint(tenant, form)
            if method == "POST" and rest == "oauth2/v2.0/devicecode":
                return self.device_code(form)
            if method == "GET" and rest == "oauth2/v2.0/authorize":
                return self.authorize(query)
        return 404, {"error": "not_found", "error_description": f"the emulator does not serve {method} {path}"}


class _Handler(BaseHTTPRequestHandler):
    server_version = "tokend-emulator"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve("GET", b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._serve("POST", self.rfile.read(length) if length else b"")

    def _serve(self, method: str, body: bytes) -> None:
        em: Emulator = self.server.emulator  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        with em.lock:
            em.requests.append({"at": time.time(), "method": method, "path": url.path, "grant": form.get("grant_type")})
            fail, hang = em.faults.fail > 0, em.faults.hang > 0
            if fail:
                em.faults.fail -= 1
            elif hang:
                em.faults.hang -= 1
        if hang and not fail:
            em._stop.wait(em.faults.hang_seconds)
            self.close_connection = True
            return
        if fail:
            status, payload = (
                em.faults.status,
                {"error": "temporarily_unavailable", "error_description": "AADSTS90033: injected fault"},
            )
        else:
            try:
                status, payload = em.route(method, url.path, query, form, self.headers)
            except Exception as e:  # keep serving; a test reads the log
                log.exception("emulator error")
                status, payload = 500, {"error": "server_error", "error_description": type(e).__name__}
        if status == 302:
            self.send_response(302)
            self.send_header("Location", payload["Location"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(data)


def _resource(scope: str) -> str:
    for s in scope.split():
        if s not in _USER_SCOPES:
            return s[: -len("/.default")] if s.endswith("/.default") else s.rsplit("/", 1)[0]
    return ""


def _error(status: int, error: str, code: int, text: str) -> tuple[int, dict[str, Any]]:
    now = dt.datetime.now(dt.timezone.utc)
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: "
        f"{corr} Timestamp: {now:%Y-%m-%d %H:%M:%SZ}",
        "error_codes": [code],
        "timestamp": f"{now:%Y-%m-%d %H:%M:%SZ}",
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": "https://login.microsoftonline.com/error?code=" + str(code),
    }
