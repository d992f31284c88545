"""source = "device-code" | "browser": a person signs in once with `tokend login`; the daemon refreshes silently.

`tokend login` runs the flow in the person's terminal (a device code shown there, or the browser opened), then keeps
the AuthenticationRecord (who signed in where; no secret) in tokend's data folder (0600) and the MSAL token cache
in azure-identity's persistent cache: DPAPI on Windows, the Keychain on macOS, the Secret Service (libsecret) on
Linux. Where Linux has no Secret Service, login refuses unless the identity sets ``allow_unencrypted_cache = true``;
then the cache is a 0600 file. The daemon rebuilds the credential from the record with automatic authentication
off, so it never prompts: when a person is needed it reports ``login-required``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from azure.identity import (
    AuthenticationRecord,
    DeviceCodeCredential,
    InteractiveBrowserCredential,
    TokenCachePersistenceOptions,
)

from tokend import paths, system
from tokend.clouds import scope_for
from tokend.config import IdentityConfig
from tokend.errors import LoginRequired, TokendError
from tokend.identities._authority import authority_kwargs, transport_kwargs
from tokend.identities.base import one_line
from tokend.sinks.atomic import write_private

# The Azure CLI's public client: pre-authorised for the ossrdbms resource in every tenant.
DEFAULT_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"


def login_hint(config: IdentityConfig) -> str:
    return f"run `tokend login {config.name}`"


def cache_name(config: IdentityConfig) -> str:
    """One MSAL cache per identity of each config, so identities in different tenants (or configs) never share
    entries, and purging one config leaves the others' sign-ins alone."""
    return paths.identity_cache_name(config.config_path, config.name)


def record_path(config: IdentityConfig) -> Path:
    return paths.config_data_dir(config.config_path) / "records" / f"{config.name}.json"


def cache_folder() -> Path:
    """Where msal-extensions keeps the cache files (and their lock files) on Linux and macOS."""
    return Path.home() / ".IdentityService"


def _private_cache_folder() -> None:
    """The sign-in cache folder holds refresh tokens (or their lock files): it must be ours and private — made so
    when it is missing or too open, refused when another user owns it (paths.private_dir)."""
    if not system.WINDOWS:  # Windows: %LOCALAPPDATA% is the user's own, and the cache is DPAPI-encrypted
        paths.private_dir(cache_folder())


def encrypted_cache_problem() -> str | None:
    """Why the persistent cache cannot be encrypted here, or None when it can."""
    if not system.LINUX:
        return None  # DPAPI (Windows) and the Keychain (macOS) are always there
    try:
        import msal_extensions  # azure-identity's optional dependency: only the probe needs it

        msal_extensions.LibsecretPersistence(
            str(cache_folder() / ".probe"), "tokend.probe", {"MsalClientID": "tokend.probe"}, label="probe"
        )
    except Exception as e:
        said = " ".join(str(e).split())[:120]  # one line: libsecret's errors span several
        return f"no usable Secret Service for an encrypted cache ({type(e).__name__}: {said})"
    return None


def cache_kind(config: IdentityConfig) -> str:
    """'encrypted' or 'unencrypted': what this identity's sign-in cache is, shown by `tokend status`."""
    return "encrypted" if encrypted_cache_problem() is None else "unencrypted"


def _options(config: IdentityConfig) -> TokenCachePersistenceOptions:
    return TokenCachePersistenceOptions(
        name=cache_name(config), allow_unencrypted_storage=config.allow_unencrypted_cache
    )


def _common(config: IdentityConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "client_id": config.client_id or DEFAULT_CLIENT_ID,
        "cache_persistence_options": _options(config),
        **transport_kwargs(config),
    }
    if config.tenant_id:
        kwargs["tenant_id"] = config.tenant_id
    return kwargs


def _cls(config: IdentityConfig) -> type:
    if config.source == "device-code":
        return DeviceCodeCredential
    if system.WINDOWS or system.MACOS:  # pragma: no cover - the platform broker (WAM, Company Portal)
        try:
            from azure.identity.broker import InteractiveBrowserBrokerCredential  # the [broker] extra

            return InteractiveBrowserBrokerCredential
        except ImportError:
            pass
    return InteractiveBrowserCredential


def credential(config: IdentityConfig) -> Any:
    """The daemon's credential: rebuilt from the stored record, never prompting."""
    _private_cache_folder()
    path = record_path(config)
    try:
        record = AuthenticationRecord.deserialize(path.read_text())
    except FileNotFoundError:
        raise LoginRequired(f"not signed in yet — fix: {login_hint(config)}", signed_out=True) from None
    except (ValueError, KeyError, json.JSONDecodeError):
        raise LoginRequired(f"the sign-in record {path} is damaged — fix: {login_hint(config)}") from None
    kwargs = _common(config)
    if config.authority_override:
        kwargs["disable_instance_discovery"] = True  # the record carries the authority itself
    return _cls(config)(authentication_record=record, disable_automatic_authentication=True, **kwargs)


def login(config: IdentityConfig, say: Callable[[str], None]) -> AuthenticationRecord:
    """Run the sign-in flow in this terminal and store the record. Raises TokendError with the fix."""
    _private_cache_folder()
    problem = encrypted_cache_problem()
    if problem and not config.allow_unencrypted_cache:
        raise TokendError(
            f"identity {config.name}: {problem}; start a Secret Service (e.g. gnome-keyring) in your "
            f"session, or set allow_unencrypted_cache = true under [identities.{config.name}] to keep "
            "the sign-in cache in a file only you can read"
        )
    kwargs = {**_common(config), **authority_kwargs(config)}
    if config.source == "device-code":
        kwargs["prompt_callback"] = lambda uri, code, _expires: say(f"To sign in, open {uri} and enter the code {code}")
    cred = _cls(config)(**kwargs)
    try:
        record = cred.authenticate(scopes=[scope_for(config.resource)])
    except Exception as e:  # azure-identity's errors: one line, no token in them
        raise TokendError(f"identity {config.name}: sign-in failed: {one_line(e)}") from None
    finally:
        cred.close()
    paths.private_dir(record_path(config).parent)
    write_private(record_path(config), record.serialize())
    return record


def logout(config: IdentityConfig) -> list[str]:
    """Forget the record and this identity's cache entries. Returns what was removed."""
    done = []
    path = record_path(config)
    if path.exists():
        path.unlink()
        done.append(f"removed the sign-in record {path}")
    from azure.identity import _persistent_cache  # the same storage azure-identity uses for this cache name

    for suffix in (".cae", ".nocae"):
        name = cache_name(config) + suffix
        with contextlib.suppress(Exception):
            _persistent_cache._get_persistence(config.allow_unencrypted_cache, "MSALCache", name).save("{}")
        location = cache_folder() / name
        if location.exists():
            location.unlink()
            done.append(f"cleared the cache {name}")
    return done
