"""Every default path tokend uses, from platformdirs, so HOME and XDG_* move all of them.

Per config (named by ``config_id``, a short hash of the config file's absolute path), so two daemons with
different configs never collide and ``service uninstall --purge`` can remove exactly one config's files:
  runtime/<id>.sock, runtime/<id>.lock   the IPC socket and the one-daemon-per-config lock
  runtime/<id>/                          the local proxy's Unix sockets (libpq: host=that folder)
  state/<id>/                            what tokend wrote where (keychain index), the proxy's TLS certificate
  data/<id>/records/                     sign-in records of device-code and browser identities
  log/<service name>.log                 the daemon's log file (when no journal collects it)
Every folder tokend creates is 0700; one that holds a secret is checked for its owner and mode every time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import warnings
from pathlib import Path

import platformdirs

from tokend import handoff, system
from tokend.errors import TokendError

APP = handoff.APP
log = logging.getLogger("tokend.paths")
# No separate "author" folder on Windows; the config roams with the user there (%APPDATA%\tokend).
_DIRS = platformdirs.PlatformDirs(APP, appauthor=False, roaming=True)


class UnsafeFolder(TokendError):
    """A folder that would hold a secret belongs to someone else, or cannot be made private."""


def config_dir() -> Path:
    return Path(_DIRS.user_config_dir)


def app_config_dir(app: str) -> Path:
    """Another application's settings folder: %APPDATA%\\APP, ~/Library/Application Support/APP, or
    $XDG_CONFIG_HOME/APP (VS Code, Azure Data Studio and JetBrains keep theirs there)."""
    return Path(platformdirs.user_config_dir(app, appauthor=False, roaming=True))


def app_data_dir(app: str) -> Path:
    """Another application's data folder: %APPDATA%\\APP, ~/Library/Application Support/APP, or
    $XDG_DATA_HOME/APP."""
    return Path(platformdirs.user_data_dir(app, appauthor=False, roaming=True))


def default_config_path() -> Path:
    env = os.environ.get("TOKEND_CONFIG")
    if env:
        return Path(env).expanduser()
    return config_dir() / "config.toml"


def config_id(config_path: Path) -> str:
    """A short stable name for one config file: the first 12 hex digits of SHA-256 of its absolute path."""
    return handoff.config_id(str(config_path))


def private_dir(path: Path) -> Path:
    """``path`` as a folder only this user can use: missing folders are made 0700 (whatever the umask); an existing
    one must belong to this user (or root, for parents), and loses any group/other access, with a log line.
    Raises UnsafeFolder when another user owns it or it is not a folder."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
        if not system.WINDOWS:
            os.chmod(folder, 0o700)
    if system.WINDOWS:  # pragma: no cover - the profile folders' ACLs already admit only the user
        return path
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeFolder(
            f"{path} is not a folder (a {'symlink' if stat.S_ISLNK(st.st_mode) else 'file'}); "
            "move it away and run tokend again"
        )
    if st.st_uid != os.getuid():
        raise UnsafeFolder(
            f"{path} belongs to another user (uid {st.st_uid}); tokend keeps secrets only in its "
            "own folders: remove it, or set XDG_* / HOME to folders of yours"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        log.warning("%s was mode %04o; made it 0700 (only you may open it)", path, stat.S_IMODE(st.st_mode))
        os.chmod(path, 0o700)
    return path


def runtime_dir() -> Path:
    """The per-user runtime folder for sockets and locks: ``$XDG_RUNTIME_DIR/tokend`` when that variable names a
    private folder of this user's, else platformdirs' choice (the rule ``tokend token``'s hand-off follows too)."""
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    if base and os.path.isabs(base) and not os.path.lexists(base):
        with contextlib.suppress(OSError):  # a container's volume: the folder is ours to make (0700), as systemd would
            private_dir(Path(base))
    xdg = handoff.xdg_runtime_dir()
    if xdg is not None:
        return Path(xdg)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to a private folder: that is fine.
        warnings.simplefilter("ignore")
        return Path(_DIRS.user_runtime_dir)


def socket_path(config_path: Path) -> Path:
    return Path(handoff.socket_file(str(runtime_dir()), str(config_path)))


def pipe_name(config_path: Path) -> str:
    """Windows: the named pipe of the daemon for ``config_path``."""
    return rf"\\.\pipe\{APP}-{config_id(config_path)}"


def lock_path(config_path: Path) -> Path:
    return runtime_dir() / f"{config_id(config_path)}.lock"


def proxy_dir(config_path: Path) -> Path:
    """Where the local proxy puts its Unix sockets (``.s.PGSQL.PORT``) for this config."""
    return runtime_dir() / config_id(config_path)


def state_dir() -> Path:
    return Path(_DIRS.user_state_dir)


def config_state_dir(config_path: Path) -> Path:
    return state_dir() / config_id(config_path)


def data_dir() -> Path:
    return Path(platformdirs.PlatformDirs(APP, appauthor=False).user_data_dir)  # local, not roaming, on Windows


def config_data_dir(config_path: Path) -> Path:
    return data_dir() / config_id(config_path)


def log_dir() -> Path:
    return Path(_DIRS.user_log_dir)


def log_file(config_path: Path) -> Path:
    """``tokend.log`` for the default config, ``tokend-<id>.log`` for others: one file per daemon."""
    return log_dir() / f"{service_name(config_path)}.log"


def service_name(config_path: Path) -> str:
    """``tokend`` for the default config; ``tokend-<config id>`` for others, so several can run side by side."""
    default = config_dir() / "config.toml"
    if os.path.abspath(os.path.expanduser(str(config_path))) == os.path.abspath(default):
        return APP
    return f"{APP}-{config_id(config_path)}"


def identity_cache_name(config_path: Path, identity: str) -> str:
    """The MSAL persistent cache of one identity of one config."""
    return f"{APP}.{config_id(config_path)}.{identity}"
