"""tests/run.sh itself: a normal user without sudo learns on screen, before anything is installed, that the missing
Debian packages need root or sudo (exit 1), instead of exit 127 with the reason in a log file."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from support.product import REPO
from support.users import OTHER_USER, open_path_for_others


def test_a_user_without_root_or_sudo_is_told_on_screen(other_user, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "tests").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "run.sh", checkout / "tests" / "run.sh")
    tools = tmp_path / "bin"  # the shell's basics only: no psql, no postgres, no sudo
    tools.mkdir()
    for tool in ("bash", "id", "ls", "dirname", "printf", "getent", "tail"):
        found = shutil.which(tool)
        if found:
            (tools / tool).symlink_to(found)
    open_path_for_others(tools / "bash")
    for p in (checkout, checkout / "tests", tools):
        os.chmod(p, 0o755)
    subprocess.run(["chown", "-R", OTHER_USER, str(checkout)], check=True)
    r = other_user("env", f"PATH={tools}", "bash", str(checkout / "tests" / "run.sh"), check=False)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "needs root or sudo" in r.stdout and "postgresql-client" in r.stdout and "apt-get install" in r.stdout
    assert not (checkout / ".venv").exists()  # nothing installed before saying so
