"""A real tokend daemon as a process (the installed product), and a person's `tokend login` in a terminal."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokend.emulator.server import Emulator
from tokend.errors import TokendError
from tokend.ipc.client import Client

from support.product import TOKEND
from support.waits import wait_for

# How long a daemon may take to start and answer. Python with azure-identity imported costs ~1.5 CPU-seconds; on CI's
# two cores shared by twenty soaks and three test workers, that was over 10 s of wall time.
STARTUP = 30.0


class DaemonProcess:
    def __init__(self, config: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [TOKEND, "run", "--config", str(config), *args], stdout=self._log, stderr=subprocess.STDOUT, env=env
        )

    def status(self) -> dict[str, Any] | None:
        """What `tokend status --json` prints (it prints this same answer of the daemon's socket), asked from this
        process: waits poll it every 0.05-0.1 s, and a Python started for each poll kept a core busy while waiting.
        None while no daemon answers. The CLI's own `status --json` has tests of its own."""
        try:
            return Client(self.config).status()
        except (TokendError, OSError):
            return None

    def wait_status(self, condition: Callable[[dict[str, Any]], Any], what: str, timeout: float = STARTUP) -> Any:
        """Poll the daemon's status until ``condition`` of it is truthy and return that, within a deadline that
        allows for its start; fails at once, with its log, if the daemon exits."""

        def answered() -> Any:
            assert self.proc.poll() is None, f"daemon exited early:\n{self.log()}"
            s = self.status()
            return condition(s) if s else None

        return wait_for(answered, timeout, 0.1, what)

    def wait_ready(self, timeout: float = STARTUP) -> dict[str, Any]:
        """Every identity holds its token and every sink has had its first write (none still "pending": ok, or
        failed or ignored with its reason), as /readyz counts a sink; the status at that moment."""

        def ready(s: dict[str, Any]) -> dict[str, Any] | None:
            if any(i["state"] != "ok" for i in s["identities"]):
                return None
            return None if any(k["state"] == "pending" for t in s["targets"] for k in t["sinks"].values()) else s

        return self.wait_status(ready, "daemon ready", timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        return self.proc.returncode


def started(d: DaemonProcess, target: int = 0) -> dict[str, Any]:
    """``d`` ready and its target number ``target``'s proxy listening: that target's status ``proxy`` object."""

    def proxy(s: dict[str, Any]) -> dict[str, Any] | None:
        p = s["targets"][target]["proxy"]
        return p if p and len(p["listen"]) and not p["last_error"] else None

    d.wait_ready()
    return d.wait_status(proxy, "the proxy listening")


def login(
    cfg: Path,
    emulator: Emulator,
    upn: str,
    identity: str | None = None,
    env: dict[str, str] | None = None,
    exe: str = TOKEND,
) -> subprocess.CompletedProcess[str]:
    """`tokend login` as a person would run it; the emulator approves the code shown in the terminal."""
    cmd = [exe, "login", *([identity] if identity else []), "--config", str(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    code = re.search(r"enter the code (\w+)", line)
    assert code, line + proc.stderr.read()
    emulator.approve(code[1], upn)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, line + err)
