"""The real clients the tests drive are installed by tests/run.sh in the background, beside the tests that need none
of them: pgAdmin 4 and pgcli into .venv-clients ("clients"), the Azure CLI into .venv-az ("az"). A test that needs one
waits here until its install has ended (run.sh leaves ``.test-installs/NAME.pid`` while it runs and
``NAME.rc`` when it ends); with no install running (none started, or its run.sh is gone) it goes on at once."""

from __future__ import annotations

import os

from support.product import REPO
from support.waits import wait_for

INSTALLS = REPO / ".test-installs"


def wait_installed(name: str, timeout: float = 1200.0) -> None:
    """Wait while tests/run.sh still installs ``name`` ("clients" or "az"); what the install left is the caller's to
    check (a failed one leaves its log in .test-install-NAME.log)."""
    pid_file, rc_file = INSTALLS / f"{name}.pid", INSTALLS / f"{name}.rc"

    def ended() -> bool:
        if rc_file.exists():
            return True
        try:
            os.kill(int(pid_file.read_text()), 0)
        except (OSError, ValueError):
            return True  # no install of that name is running
        return False

    wait_for(ended, timeout, 1.0, f"tests/run.sh's background install of .venv-{name} ({pid_file.name})")
