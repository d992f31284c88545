"""Every default path tokend uses, from platformdirs, so HOME and XDG_* move all of them.

Per-config files (IPC socket, instance lock) carry a short hash of the config's absolute path, so two daemons
with different configs never collide.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import platformdirs

APP = "tokend"
# No separate "author" folder on Windows; the config roams with the user there (%APPDATA%\tokend).
_DIRS = platformdirs.PlatformDirs(APP, appauthor=False, roaming=True)


def config_dir() -> Path:
    return Path(_DIRS.user_config_dir)


def default_config_path() -> Path:
    env = os.environ.get("TOKEND_CONFIG")
    if env:
        return Path(env).expanduser()
    return config_dir() / "config.toml"


def config_id(config_path: Path) -> str:
    """A short stable name for one config file: the first 12 hex digits of SHA-256 of its absolute path."""
    return hashlib.sha256(str(Path(config_path).expanduser().absolute()).encode()).hexdigest()[:12]


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) with mode 0700 and return it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def runtime_dir() -> Path:
    """The per-user runtime folder (0700) for sockets and instance locks."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to a private /tmp folder: that is fine.
        warnings.simplefilter("ignore")
        return Path(_DIRS.user_runtime_dir)


def socket_path(config_path: Path) -> Path:
    return runtime_dir() / f"{config_id(config_path)}.sock"


def lock_path(config_path: Path) -> Path:
    return runtime_dir() / f"{config_id(config_path)}.lock"


def state_dir() -> Path:
    return Path(_DIRS.user_state_dir)


def data_dir() -> Path:
    return Path(platformdirs.PlatformDirs(APP, appauthor=False).user_data_dir)  # local, not roaming, on Windows


def cache_dir() -> Path:
    return Path(_DIRS.user_cache_dir)


def log_dir() -> Path:
    return Path(_DIRS.user_log_dir)
