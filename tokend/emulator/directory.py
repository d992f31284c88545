"""The emulator's tenant: users, apps (service principals), managed identities and groups; minting and checking
access tokens shaped like Entra's v1 tokens for the ossrdbms resource.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

RESOURCES = (
    "https://ossrdbms-aad.database.windows.net",
    "https://ossrdbms-aad.database.usgovcloudapi.net",
    "https://ossrdbms-aad.database.chinacloudapi.cn",
)


def _oid() -> str:
    return str(uuid.uuid4())


@dataclass
class User:
    upn: str
    name: str = ""
    oid: str = field(default_factory=_oid)


@dataclass
class App:
    """An app registration with its service principal. ``name`` is the display name PostgreSQL roles use."""

    client_id: str
    name: str
    secret: str | None = None
    certificate_pem: bytes | None = None
    federated: bool = False  # accepts the emulator's own federated (workload identity) assertions
    oid: str = field(default_factory=_oid)


@dataclass
class ManagedIdentity:
    name: str
    client_id: str = field(default_factory=_oid)
    oid: str = field(default_factory=_oid)
    system: bool = False


@dataclass
class Group:
    name: str
    members: set[str] = field(default_factory=set)  # object ids
    oid: str = field(default_factory=_oid)
    former_names: set[str] = field(default_factory=set)  # before a rename: roles made under them still log in


class TokenRejected(Exception):
    """Why a token does not log in; the message reads like Azure's FATAL text."""


@dataclass
class Directory:
    tenant_id: str = field(default_factory=_oid)
    domain: str = "contoso.example"
    lifetime: float = 3600.0  # access token lifetime, seconds
    users: dict[str, User] = field(default_factory=dict)  # by upn
    apps: dict[str, App] = field(default_factory=dict)  # by client id
    identities: dict[str, ManagedIdentity] = field(default_factory=dict)  # by client id
    groups: dict[str, Group] = field(default_factory=dict)  # by name
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    issuer_base: str = "https://sts.windows.net"
    issued: list[dict[str, Any]] = field(default_factory=list)  # one record per token minted, value included
    # called after each change made through the methods below (the token-checking PostgreSQL's pgaadauth tables
    # follow the directory this way); a listener must not change the directory
    listeners: list[Callable[[Directory], None]] = field(default_factory=list, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # the groups claim (an app registration's groupMembershipClaims = "SecurityGroup"): the object ids of the groups
    # a principal is a direct member of, in each token; off by default, as in Entra
    groups_claim: bool = False

    # -- directory ---------------------------------------------------------------------------------------------
    def add_user(self, upn: str, name: str = "") -> User:
        with self.lock:
            self.users[upn] = u = User(upn, name or upn.split("@")[0].title())
        self.changed()
        return u

    def add_app(
        self, name: str, secret: str | None = None, certificate_pem: bytes | None = None, federated: bool = False
    ) -> App:
        app = App(_oid(), name, secret, certificate_pem, federated)
        with self.lock:
            self.apps[app.client_id] = app
        self.changed()
        return app

    def add_managed_identity(self, name: str, system: bool = False) -> ManagedIdentity:
        mi = ManagedIdentity(name, system=system)
        with self.lock:
            self.identities[mi.client_id] = mi
        self.changed()
        return mi

    def add_group(self, name: str, *members: str) -> Group:
        with self.lock:
            self.groups[name] = g = Group(name, set(members))
        self.changed()
        return g

    def add_member(self, group: str, oid: str) -> None:
        """Put the principal with object id ``oid`` into ``group`` (Entra: Groups → Members → Add members)."""
        with self.lock:
            self.groups[group].members.add(oid)
        self.changed()

    def remove_member(self, group: str, oid: str) -> None:
        with self.lock:
            self.groups[group].members.discard(oid)
        self.changed()

    def rename_group(self, old: str, new: str) -> Group:
        """Change a group's display name; its object id stays, so roles made for it keep working under the old
        name (Azure maps roles to object ids and does not sync a rename)."""
        with self.lock:
            g = self.groups.pop(old)
            g.former_names.add(old)
            g.name = new
            self.groups[new] = g
        self.changed()
        return g

    def changed(self) -> None:
        """Tell the listeners; call it after changing the dataclasses above by hand."""
        for listener in list(self.listeners):
            listener(self)

    @property
    def kid(self) -> str:
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()

    def jwks(self) -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk.update(kid=self.kid, use="sig", x5t=self.kid)
        return {"keys": [jwk]}

    # -- minting ----------------------------------------------------------------------------------------------
    def mint(
        self,
        resource: str,
        *,
        user: User | None = None,
        app: App | None = None,
        mi: ManagedIdentity | None = None,
        client_id: str | None = None,
        lifetime: float | None = None,
    ) -> tuple[str, int]:
        """An access token for ``resource`` and its expiry (epoch seconds)."""
        now = int(time.time())
        exp = now + int(lifetime if lifetime is not None else self.lifetime)
        claims: dict[str, Any] = {
            "aud": resource.rstrip("/"),
            "iss": f"{self.issuer_base}/{self.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": exp,
            "aio": _noise(160),
            "idp": f"{self.issuer_base}/{self.tenant_id}/",
            "rh": f"1.{_noise(70)}.",
            "tid": self.tenant_id,
            "uti": _noise(22),
            "ver": "1.0",
            "xms_ftd": _noise(64),
            "xms_idrel": "7 24",
        }
        if user is not None:
            first, _, last = user.name.partition(" ")
            claims.update(
                oid=user.oid,
                sub=_noise(43),
                upn=user.upn,
                unique_name=user.upn,
                name=user.name,
                given_name=first,
                family_name=last or first,
                amr=["pwd", "mfa"],
                acr="1",
                appid=client_id or "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
                appidacr="0",
                scp="user_impersonation",
                ipaddr="203.0.113.7",
                puid=_noise(16).upper(),
                xms_cc=["CP1"],
                xms_tcdt=1600000000,
                wids=[_oid()],
            )
        elif app is not None:
            claims.update(oid=app.oid, sub=app.oid, appid=app.client_id, appidacr="1", idtyp="app")
        elif mi is not None:
            claims.update(
                oid=mi.oid,
                sub=mi.oid,
                appid=mi.client_id,
                appidacr="2",
                idtyp="app",
                xms_mirid=f"/subscriptions/{_oid()}/resourcegroups/rg/providers/"
                f"Microsoft.ManagedIdentity/userAssignedIdentities/{mi.name}",
            )
        if self.groups_claim and "oid" in claims:
            with self.lock:
                claims["groups"] = sorted(g.oid for g in self.groups.values() if claims["oid"] in g.members)
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid, "x5t": self.kid})
        who = user.upn if user else app.name if app else mi.name if mi else "?"
        with self.lock:
            self.issued.append(
                {
                    "token": token,
                    "principal": who,
                    "oid": claims.get("oid"),
                    "aud": claims["aud"],
                    "exp": exp,
                    "iat": now,
                }
            )
        return token, exp

    def mint_federated(self, app: App, audience: str = "api://AzureADTokenExchange", lifetime: int = 3600) -> str:
        """A federated credential (what Kubernetes projects into AZURE_FEDERATED_TOKEN_FILE) for ``app``."""
        now = int(time.time())
        return jwt.encode(
            {
                "iss": "https://oidc.emulator.example/",
                "sub": f"system:serviceaccount:default:{app.name}",
                "aud": audience,
                "iat": now,
                "nbf": now,
                "exp": now + lifetime,
                "appid": app.client_id,
            },
            self.key,
            algorithm="RS256",
            headers={"kid": self.kid},
        )

    # -- checking, as the PostgreSQL server does ---------------------------------------------------------------
    def check(self, token: str, role: str, resources: tuple[str, ...] = RESOURCES) -> str:
        """Return the principal when ``token`` may log in as ``role``; raise TokenRejected otherwise."""
        try:
            claims = jwt.decode(
                token,
                self.key.public_key(),
                algorithms=["RS256"],
                audience=list(resources),
                options={"require": ["exp", "nbf", "aud", "oid", "tid"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("The access token has expired. Please acquire a new token and retry.") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected(
                "The access token does not have a valid audience claim. Please acquire a new token "
                f'for the resource "{resources[0]}"'
            ) from None
        except jwt.PyJWTError as e:
            raise TokenRejected(f"The access token is not valid ({type(e).__name__}).") from None
        if claims["tid"] != self.tenant_id:
            raise TokenRejected("The access token was issued by another tenant.")
        oid = claims["oid"]
        names = {claims.get("upn")} | {a.name for a in self.apps.values() if a.oid == oid}
        names |= {m.name for m in self.identities.values() if m.oid == oid}
        with self.lock:
            groups = [g for g in self.groups.values() if oid in g.members]
        names |= {n for g in groups for n in {g.name} | g.former_names}
        if role not in names:
            raise TokenRejected(f'The token\'s principal is not "{role}" nor a member of a group of that name.')
        return claims.get("upn") or claims.get("appid", oid)


def _noise(n: int) -> str:
    return secrets.token_urlsafe(n)[:n]
