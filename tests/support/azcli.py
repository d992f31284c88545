"""The real Azure CLI (from PyPI, in a venv of its own: tests/run.sh makes .venv-az)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from support.installs import wait_installed
from support.product import REPO


def find_az() -> str | None:
    wait_installed("az")
    for candidate in (os.environ.get("TOKEND_TEST_AZ"), str(REPO / ".venv-az" / "bin" / "az"), shutil.which("az")):
        if candidate and Path(candidate).exists():
            return candidate
    return None
