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


def default_config_path() -> Path:
    env = os.environ.get("TOKEND_CONFIG")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir(APP)) / "config.toml"


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
        return Path(platformdirs.user_runtime_dir(APP))


def socket_path(config_path: Path) -> Path:
    return runtime_dir() / f"{config_id(config_path)}.sock"


def lock_path(config_path: Path) -> Path:
    return runtime_dir() / f"{config_id(config_path)}.lock"


def state_dir() -> Path:
    return Path(platformdirs.user_state_dir(APP))
