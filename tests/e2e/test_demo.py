"""tokend demo: the README's "see it work" command, end to end."""

from __future__ import annotations

import glob
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from support.product import TOKEND, tokend


@pytest.mark.soak
@pytest.mark.slow
def test_a_minute_of_demo_succeeds_and_leaves_nothing_behind() -> None:
    r = tokend("demo", "--duration", "60", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "replaces each one after ~30 s; in 60 s expect about 1 rotation" in out
    folder = Path(re.search(r"tokend demo in (\S+)", out)[1])
    m = re.search(r"(\d+) rotations?, (\d+) logins?, (\d+) failed", out)
    assert m and int(m[1]) >= 1 and m[3] == "0"
    # what matters, whatever the machine's speed: every login worked, and logins happened on both sides of a
    # rotation (with the first token and with a later one); not how many fit in the minute
    logins = [line for line in out.splitlines() if "through pgpass:" in line]
    assert logins and len(logins) == int(m[2]) and all("psql as 'DBA Group' through pgpass: ok" in x for x in logins)
    tokens = {int(t[1]) for line in logins if (t := re.search(r"token #(\d+)", line))}
    assert 1 in tokens and max(tokens) >= 2, logins
    assert not folder.exists()
    pid = int(re.search(r"daemon pid (\d+)", out)[1])
    assert not Path(f"/proc/{pid}").exists()
    for port in (
        int(re.search(r"https://127\.0\.0\.1:(\d+)", out)[1]),
        int(re.search(r"PostgreSQL on 127\.0\.0\.1:(\d+)", out)[1]),
    ):
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(2)
            s.connect(("127.0.0.1", port))


@pytest.mark.soak
@pytest.mark.slow
def test_a_demo_whose_logins_fail_exits_1_and_says_which() -> None:
    proc = subprocess.Popen(
        [TOKEND, "demo", "--duration", "40"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    seen, port = [], None
    for line in proc.stdout:
        seen.append(line)
        if m := re.search(r"PostgreSQL on 127\.0\.0\.1:(\d+)", line):
            port = m[1]
        if "through pgpass: ok" in line:
            break
    assert port, "".join(seen)
    # the demo's PostgreSQL dies under it: every later login fails
    for pidfile in glob.glob("/tmp/tokend-pg-*/data/postmaster.pid"):
        lines = Path(pidfile).read_text().splitlines()
        if len(lines) > 3 and lines[3].strip() == port:
            os.kill(int(lines[0]), signal.SIGKILL)
    rest = proc.stdout.read()
    assert proc.wait(120) == 1, "".join(seen) + rest
    assert "FAILED" in rest and "login failures (the first):" in rest and re.search(r"[1-9]\d* failed", rest)


@pytest.mark.parametrize("duration", ["-5", "0", "nan", "inf"])
def test_a_duration_that_is_not_a_positive_number_is_refused(duration: str) -> None:
    r = tokend("demo", "--duration", duration, timeout=60)
    assert r.returncode == 2 and "--duration must be a positive number" in r.stderr, (r.returncode, r.stderr)
    assert "tokend demo in" not in r.stdout  # refused before anything is started
