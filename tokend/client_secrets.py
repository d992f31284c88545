"""Where a service principal's client secret comes from: exactly one of an environment variable
(``client_secret_env``), a mounted file (``client_secret_file``) or the OS keychain (``client_secret = "keychain"``,
put there by ``tokend secret set IDENTITY``). Every reader returns the secret or raises IdentityUnavailable with the
fix; no message ever holds the secret.

A mounted secret file is accepted as the platforms really make it:
- Kubernetes (a ``secret`` volume): ``/mnt/s/KEY`` → ``..data/KEY`` → ``..2024_…/KEY``, symlinks and files owned by
  root, mode 0644 (the volume's ``defaultMode``), in root-owned folders. Rotation swaps ``..data`` atomically.
- Docker (``/run/secrets/NAME``): root-owned 0444 (swarm), or a bind mount of the user's own file (compose).
So: every link on the way and the file belong to the user or root; a file of the user's (not root) must be private
(no group or other bits: the same rule as the environment file); a root-owned one may be world-readable (the
platform made it, inside the container's own mount; a daemon running as root reads it too) but never writable by
group or others; no folder on the way may be writable by
others unless sticky. The file is read at each token request, so a rotated mount is picked up without a restart.
"""

from __future__ import annotations

import getpass
import os
import stat
import sys
from pathlib import Path
from typing import TextIO

from tokend import config, envfile, paths, system
from tokend.config import IdentityConfig
from tokend.errors import IdentityUnavailable, TokendError, UsageError

SERVICE = "tokend-secret"  # keychain service of the secrets tokend reads (its tokens are under "tokend")
MAX_SECRET_BYTES = 64 * 1024  # Entra client secrets are about 40 characters; anything huge is the wrong file
_MAX_LINKS = 40


def keychain_user(config_path: Path, identity: str) -> str:
    """The keychain entry's user name: the identity within this config (two configs never share a secret)."""
    return f"{paths.config_id(config_path)}:{identity}"


def describe(ic: IdentityConfig) -> str:
    """Where the identity's secret comes from, for people (status, errors); never the value."""
    if ic.client_secret_file is not None:
        return f"the file {ic.client_secret_file}"
    if ic.client_secret_keychain:
        return "the OS keychain"
    return f"the environment variable {ic.client_secret_env}"


def read(ic: IdentityConfig) -> str:
    """The identity's client secret from its one source. IdentityUnavailable (retried) with the fix."""
    if ic.client_secret_file is not None:
        return read_file(ic.client_secret_file)
    if ic.client_secret_keychain:
        return read_keychain(ic)
    value = os.environ.get(ic.client_secret_env or "")
    if not value:
        raise IdentityUnavailable(
            f"environment variable {ic.client_secret_env} is not set where tokend runs; put "
            f"{ic.client_secret_env}=… in the daemon's environment file ({envfile.path_for(ic.config_path)}, "
            "mode 0600) and run `tokend reload`, or export it where the daemon starts"
        )
    return value


def read_file(path: Path) -> str:
    """The secret in ``path`` (one trailing newline dropped), checked as the module's doc says."""
    real = _resolve(path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        raise IdentityUnavailable(f"client_secret_file {path}: no such file; mount the secret there") from None
    except OSError as e:
        raise IdentityUnavailable(f"client_secret_file {path}: cannot open it ({e.strerror or e})") from None
    with os.fdopen(fd, "rb") as f:
        _check_file(path, os.fstat(f.fileno()))
        data = f.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise IdentityUnavailable(f"client_secret_file {path}: larger than {MAX_SECRET_BYTES} bytes; not a secret")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise IdentityUnavailable(f"client_secret_file {path}: not UTF-8 text") from None
    text = text[:-1] if text.endswith("\n") else text
    text = text[:-1] if text.endswith("\r") else text
    if not text:
        raise IdentityUnavailable(f"client_secret_file {path}: empty; write the client secret into it")
    return text


def _trusted(uid: int) -> bool:
    return system.WINDOWS or uid in (os.getuid(), 0)


def _resolve(path: Path) -> Path:
    """``path`` with every symlink followed, each one the user's or root's, and no folder on the way writable by
    others (unless sticky)."""
    p = Path(os.path.abspath(Path(path).expanduser()))
    for _ in range(_MAX_LINKS):
        _check_folder(path, p.parent)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            raise IdentityUnavailable(f"client_secret_file {path}: no such file; mount the secret there") from None
        except OSError as e:
            raise IdentityUnavailable(f"client_secret_file {path}: cannot look at {p} ({e.strerror})") from None
        if not stat.S_ISLNK(st.st_mode):
            return p
        if not _trusted(st.st_uid):
            raise IdentityUnavailable(
                f"client_secret_file {path}: {p} is a symlink of another user (uid {st.st_uid}); "
                "tokend follows only yours or root's"
            )
        p = Path(os.path.abspath(p.parent / os.readlink(p)))
    raise IdentityUnavailable(f"client_secret_file {path}: too many symlinks; give the file's own path")


def _check_folder(path: Path, folder: Path) -> None:
    if system.WINDOWS:
        return
    try:
        st = os.stat(folder)
    except OSError as e:
        raise IdentityUnavailable(f"client_secret_file {path}: cannot look at {folder} ({e.strerror})") from None
    if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
        raise IdentityUnavailable(
            f"client_secret_file {path}: folder {folder} is writable by every user, so anyone could swap the "
            "secret; keep it in a folder only you (or root) can write"
        )


def _check_file(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise IdentityUnavailable(f"client_secret_file {path}: not a regular file; give the secret file's path")
    if system.WINDOWS:
        return
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == 0:  # the platform's mount (also a daemon running as root in a container)
        if mode & 0o022:
            raise IdentityUnavailable(
                f"client_secret_file {path}: root's file is writable by others (mode {mode:04o}); "
                "mount it read-only (Kubernetes: defaultMode 0440 or 0400)"
            )
    elif st.st_uid == os.getuid():
        if mode & 0o077:
            raise IdentityUnavailable(
                f"client_secret_file {path}: mode {mode:04o} lets other users read the secret; fix: chmod 600 {path}"
            )
    else:
        raise IdentityUnavailable(
            f"client_secret_file {path}: belongs to another user (uid {st.st_uid}); tokend reads only your own "
            "secret files or root's mounts"
        )


def read_keychain(ic: IdentityConfig) -> str:
    """The secret `tokend secret set` stored for this identity of this config."""
    try:
        import keyring  # here: only the daemon and `tokend secret` need the keychain (start-up time)

        value = keyring.get_keyring().get_password(SERVICE, keychain_user(ic.config_path, ic.name))
    except Exception as e:
        raise IdentityUnavailable(
            f"identity {ic.name}: the OS keychain does not answer ({type(e).__name__}); start your keychain "
            "(Secret Service) in the daemon's session"
        ) from None
    if not value:
        raise IdentityUnavailable(
            f"identity {ic.name}: no secret in the OS keychain yet; fix: tokend secret set {ic.name} "
            "(it reads the secret from your terminal or stdin)"
        )
    return value


def _identity(config_path: Path, name: str) -> IdentityConfig:
    cfg = config.load(config_path)
    if name not in cfg.identities:
        raise UsageError(f"no identity {name!r} in {config_path} (configured: {', '.join(cfg.identities) or 'none'})")
    ic = cfg.identities[name]
    if ic.source != "service-principal":
        raise UsageError(f"identity {name} ({ic.source}) takes no client secret; only service-principal ones do")
    return ic


def set_secret(config_path: Path, name: str, stdin: TextIO | None = None) -> str:
    """``tokend secret set IDENTITY``: the secret read from the terminal (not echoed) or from stdin, never from
    argv, and kept in the OS keychain. Returns what was done, for people."""
    ic = _identity(config_path, name)
    stdin = stdin or sys.stdin
    if stdin.isatty():
        value = getpass.getpass(f"client secret for identity {name} (not shown): ")
    else:
        value = stdin.read(MAX_SECRET_BYTES + 1)
        value = value[:-1] if value.endswith("\n") else value
        value = value[:-1] if value.endswith("\r") else value
    if not value or len(value) > MAX_SECRET_BYTES or "\n" in value:
        raise UsageError("give the secret as one line on stdin (e.g. from a file: tokend secret set NAME < FILE)")
    try:
        import keyring  # see read_keychain

        keyring.get_keyring().set_password(SERVICE, keychain_user(config_path, name), value)
    except Exception as e:
        raise TokendError(
            f"could not store the secret in the OS keychain ({type(e).__name__}); is it running?"
        ) from None
    note = "" if ic.client_secret_keychain else f'; set client_secret = "keychain" under [identities.{name}] to use it'
    return f"stored the client secret of identity {name} in the OS keychain{note}; restart the daemon to use it"


def remove_secret(config_path: Path, name: str) -> str:
    """``tokend secret remove IDENTITY``."""
    try:
        import keyring  # see read_keychain
        from keyring.errors import PasswordDeleteError  # with keyring (see read_keychain)

        try:
            keyring.get_keyring().delete_password(SERVICE, keychain_user(config_path, name))
        except PasswordDeleteError:
            return f"no secret of identity {name} was in the OS keychain"
    except Exception as e:
        raise TokendError(f"the OS keychain does not answer ({type(e).__name__}); is it running?") from None
    return f"removed the client secret of identity {name} from the OS keychain"
