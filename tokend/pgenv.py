"""``tokend exec``: a command run with the PG* variables of a target, the token as PGPASSWORD.

The token travels in the child's environment (readable only by the user and root), never in its arguments.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from tokend import system
from tokend.errors import UsageError
from tokend.ipc import TokenAnswer


def environment(answer: TokenAnswer, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with PGHOST, PGPORT, PGUSER, PGDATABASE (unless the target takes any), PGPASSWORD set, and
    PGSSLMODE=require unless already set (Azure requires TLS)."""
    t = answer.target
    env = dict(base)
    env.update(PGHOST=t["host"], PGPORT=str(t["port"]), PGUSER=t["user"], PGPASSWORD=answer.token)
    if t["database"] != "*":
        env["PGDATABASE"] = t["database"]
    env.setdefault("PGSSLMODE", "require")
    return env


def exec_with(answer: TokenAnswer, cmd: Sequence[str]) -> int:
    """Replace this process with ``cmd`` (Windows: run it and pass its exit code on)."""
    env = environment(answer, os.environ)
    sys.stdout.flush()
    if system.WINDOWS:  # pragma: no cover - no exec on Windows
        import subprocess

        return subprocess.call(list(cmd), env=env)
    try:
        os.execvpe(cmd[0], list(cmd), env)
    except FileNotFoundError:
        raise UsageError(f"command not found: {cmd[0]}") from None
    except PermissionError:
        raise UsageError(f"cannot run {cmd[0]}: permission denied") from None
    return 1  # not reached: execvpe does not return
