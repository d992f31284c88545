"""tokend demo: the README's "see it work" command, end to end."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from conftest import tokend


@pytest.mark.slow
def test_demo_rotates_and_leaves_nothing_behind(tmp_path: Path) -> None:
    r = tokend("demo", "--duration", "90", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    folder = Path(re.search(r"tokend demo in (\S+)", out)[1])
    assert re.search(r"(\d+) rotations", out) and int(re.search(r"(\d+) rotations", out)[1]) >= 2
    assert "0 failed" in out and "psql as 'DBA Group' through pgpass: ok" in out
    assert not folder.exists()
    pid = int(re.search(r"daemon pid (\d+)", out)[1])
    assert not Path(f"/proc/{pid}").exists()
    for port in (int(re.search(r"https://127\.0\.0\.1:(\d+)", out)[1]),
                 int(re.search(r"PostgreSQL on 127\.0\.0\.1:(\d+)", out)[1])):
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(2)
            s.connect(("127.0.0.1", port))
