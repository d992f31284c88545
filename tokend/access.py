"""Access: "ask the running daemon, else do it here" for tokens and sign-ins, in one module above ``identities/``.

Commands that need a token (``tokend token``, ``exec``, ``admin``) or change a sign-in (``login``, ``logout``) come
here. The daemon's answer is preferred — it holds the token already, and a command run in a shell without the
identity's secret still works — and only when no daemon answers for the config is the token read back from the
keychain or acquired here and now — in the daemon's environment (``fetch_here``: its ``tokend.env`` applied while
it fetches, as `tokend run` applies it, so a secret variable or HTTPS_PROXY put there counts here too). The IPC
client is passed in (``Connect``), so the logic runs in-process in tests against a fake daemon; ``identities/``
below knows nothing of IPC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from tokend import config, envfile, principal
from tokend.clock import SYSTEM, Clock
from tokend.config import Config, IdentityConfig, Target
from tokend.errors import DaemonNotRunning, UsageError
from tokend.ipc import TokenAnswer
from tokend.kinds import person_sources
from tokend.token import Token

KEYCHAIN_MIN_LIFE = 60.0  # seconds a token read back from the keychain must still have to be handed out


class Daemon(Protocol):
    """The part of ``ipc.Client`` this module uses (raises DaemonNotRunning when nobody answers)."""

    def token(self, target: str | None) -> TokenAnswer: ...

    def sign_in_changed(self, identity: str | None) -> None: ...


Connect = Callable[[Path], Daemon]  # config path -> a client of that config's daemon
Fetch = Callable[[IdentityConfig], Token]  # one token acquired here and now (fetch_here)


def fetch_here(ic: IdentityConfig) -> Token:
    """One token for ``ic`` acquired in this process, in the daemon's environment: its config's environment file
    applied while it is fetched (``envfile.applied``), so the secret variables, HTTPS_PROXY/NO_PROXY and
    REQUESTS_CA_BUNDLE the daemon would see count here too. ConfigError (exit 2) when the file is refused."""
    from tokend import identities  # azure-identity (~300 ms): only a token acquired here needs it

    with envfile.applied(ic.config_path):
        return identities.fetch_once(ic)


@dataclass(frozen=True)
class SignIn:
    """``tokend login|logout [IDENTITY]``: the config and the identity named (None: the only one a person uses)."""

    config: Path
    identity: str | None = None


def token_for(
    config_path: Path,
    name: str | None,
    connect: Connect,
    clock: Clock = SYSTEM,
    fetch: Fetch | None = None,
) -> TokenAnswer:
    """A valid token for target ``name`` (None: the only target) and the target: the running daemon's, else
    ``token_without_daemon`` (``fetch``: how a token is acquired here; default ``fetch_here``)."""
    try:
        return connect(config_path).token(name)
    except DaemonNotRunning:
        pass
    cfg = config.load(config_path)
    target = cfg.target(name)
    token = token_without_daemon(cfg, target, clock, fetch)
    return TokenAnswer(token.value, token.expires_on, principal.resolve(target, token.claims).as_dict())


def resolved_targets(
    cfg: Config, targets: list[Target], connect: Connect, clock: Clock = SYSTEM, fetch: Fetch | None = None
) -> list[Target]:
    """``targets`` with each ``user = "@principal"`` one's user resolved, as its token names it (``token_for``:
    the daemon's, else one here): for what is written once for a client to keep (GUI client profiles)."""
    out = []
    for t in targets:
        if principal.follows(t):
            user = str(token_for(cfg.path, t.name, connect, clock, fetch).target["user"])
            t = replace(t, user=user)
        out.append(t)
    return out


def token_without_daemon(cfg: Config, target: Target, clock: Clock = SYSTEM, fetch: Fetch | None = None) -> Token:
    """A valid token for ``target`` when no daemon answers: the one the daemon last left in the keychain (when the
    target keeps one there and it has over ``KEYCHAIN_MIN_LIFE`` seconds left), else one acquired here and now."""
    if "keychain" in target.sinks:
        from tokend.sinks import keychain  # imports keyring (~50 ms): only targets that keep one there need it

        kept = keychain.read_token(target.name)
        if kept is not None and kept.expires_on - clock.now() >= KEYCHAIN_MIN_LIFE:
            return kept
    return (fetch or fetch_here)(cfg.identities[target.identity])


def identity_for_sign_in(cfg: Config, name: str | None, action: str) -> IdentityConfig:
    """The identity `tokend login` / `logout` acts on: the one named, else the only one a person signs in to.
    UsageError with the fix for identities tokend does not sign in itself."""
    people = person_sources()
    if name is not None:
        if name not in cfg.identities:
            raise UsageError(f"no identity {name!r} in {cfg.path} (configured: {', '.join(cfg.identities)})")
        ic = cfg.identities[name]
    else:
        candidates = [i for i in cfg.identities.values() if i.source in people]
        if len(candidates) != 1:
            names = ", ".join(i.name for i in candidates) or "none"
            raise UsageError(f"name the identity to {action} ({', '.join(people)} ones: {names})")
        ic = candidates[0]
    if ic.source == "azure-cli":
        raise UsageError(f"identity {ic.name} follows the Azure CLI: run `az {action}`; tokend notices within seconds")
    if ic.source not in people:
        raise UsageError(f"identity {ic.name} ({ic.source}) signs in without a person; nothing to {action}")
    return ic


def tell_daemon(ic: IdentityConfig, connect: Connect) -> str:
    """Let the running daemon pick a sign-in (or sign-out) up at once; what happened, for people."""
    try:
        connect(ic.config_path).sign_in_changed(ic.name)
    except DaemonNotRunning:
        return "no daemon is running for this config; start it with `tokend run` or `tokend service install`"
    return "the running daemon has picked it up"


def sign_in(request: SignIn, say: Callable[[str], None], connect: Connect) -> str:
    """``tokend login [IDENTITY]``: the sign-in flow for the identity (``say`` shows its prompts), then the daemon
    told. Returns the summary line."""
    from tokend.identities import interactive  # imports azure-identity (~300 ms): only sign-ins need it

    ic = identity_for_sign_in(config.load(request.config), request.identity, "login")
    with envfile.applied(ic.config_path):  # the sign-in reaches Entra as the daemon will (HTTPS_PROXY, a CA bundle)
        record = interactive.login(ic, say)
    told = tell_daemon(ic, connect)
    return f"signed in as {record.username} (tenant {record.tenant_id}) for identity {ic.name}; {told}"


def sign_out(request: SignIn, connect: Connect) -> list[str]:
    """``tokend logout [IDENTITY]``: the record and cache entries forgotten, the daemon told. Returns what was done."""
    from tokend.identities import interactive  # imports azure-identity (~300 ms): only sign-ins need it

    ic = identity_for_sign_in(config.load(request.config), request.identity, "logout")
    return [*interactive.logout(ic), f"signed out of identity {ic.name}; {tell_daemon(ic, connect)}"]
