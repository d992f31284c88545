"""A second local user, for the tests that attack tokend as someone else on the same machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from support.product import PRODUCT_PYTHON, TOKEND

OTHER_USER = "tokend-other"
AS_OTHER_USER = ("runuser", "-u", OTHER_USER, "--")  # argv prefix: run a command as the second local user


def ensure_other_user() -> None:
    """Create OTHER_USER once (needs root; pytest processes running side by side add it once), able to run the
    installed product."""
    import fcntl
    import pwd

    with open("/tmp/tokend-test-useradd.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(OTHER_USER)
        except KeyError:
            subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER], check=True)
    open_product_for_others()


def as_other_user(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*AS_OTHER_USER, *cmd], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} as {OTHER_USER} failed: {r.stderr}")
    return r


def open_path_for_others(path: Path) -> None:
    """Let other users walk down to ``path`` (x on every parent folder); the file's own mode still decides."""
    for parent in path.parents:
        if parent == Path("/"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o011)


def open_product_for_others() -> None:
    """Let other local users (OTHER_USER, postgres) run the installed product: search permission on the folders down
    to its launcher and Python, and down to the interpreter that Python links to (a checkout cloned into a 0700
    `mktemp -d` folder, a Python under /root)."""
    for path in (Path(TOKEND), Path(PRODUCT_PYTHON), Path(os.path.realpath(PRODUCT_PYTHON))):
        open_path_for_others(path)
