"""The installed product the end-to-end tests run: the `tokend` launcher of a venv that holds nothing but a wheel of
this checkout (tests/run.sh builds it as .venv-product), never the source tree."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
WINDOWS = os.name == "nt"
TOKEND = os.environ.get("TOKEND_TEST_BIN") or str(
    REPO / ".venv-product" / ("Scripts" if WINDOWS else "bin") / ("tokend.cmd" if WINDOWS else "tokend")
)
PRODUCT_PYTHON = str(Path(TOKEND).with_name("python.exe" if WINDOWS else "python"))


def missing() -> str | None:
    """Why the installed product cannot be run, or None."""
    if Path(TOKEND).exists():
        return None
    return (
        f"no installed tokend at {TOKEND}: run the tests with `bash tests/run.sh`, which builds the wheel and "
        "installs it (or set TOKEND_TEST_BIN)"
    )


def tokend(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed `tokend` with ``args``, its output captured."""
    return subprocess.run([TOKEND, *args], capture_output=True, text=True, env=env, timeout=timeout)


def doctor(cfg: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, dict]]:
    """`tokend doctor --json` for ``cfg``: its exit code and its checks by name (the report's ``ok`` agrees with the
    code)."""
    r = tokend("doctor", "--json", "--config", str(cfg), *args, env=env, timeout=120)
    report = json.loads(r.stdout)
    assert report["ok"] == (r.returncode == 0), r.stderr
    return r.returncode, {c["name"]: c for c in report["checks"]}
