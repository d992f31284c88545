"""Shared set-up for benchmarks: an emulator tenant, a private HOME, a config, a running daemon, the Azure CLI."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tokend.emulator.server import Emulator

# What tests and benchmarks share lives in tests/support (the installed product, process probes, the Azure CLI).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.azcli import find_az  # noqa: F401 - re-exported for the benchmarks
from support.builders import RESOURCE
from support.procs import cpu_seconds, rss_mb  # noqa: F401 - re-exported for the benchmarks
from support.product import TOKEND

SECRET = "bench-secret-value"


@dataclass
class Bench:
    emulator: Emulator
    home: Path
    env: dict[str, str]
    app_id: str

    def config(self, text: str, name: str = "config.toml") -> Path:
        path = self.home / name
        path.write_text(text)
        return path

    def sp_identity(self, name: str = "sp") -> str:
        d = self.emulator.directory
        return (
            f'[identities.{name}]\nsource = "service-principal"\ntenant_id = "{d.tenant_id}"\n'
            f'client_id = "{self.app_id}"\nclient_secret_env = "BENCH_SECRET"\nauthority = "{self.emulator.url}"\n'
        )


@contextlib.contextmanager
def bench_env() -> Iterator[Bench]:
    # A benchmark stopped with SIGTERM still stops what it started (daemons, PostgreSQL) and removes its folders.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    em = Emulator().start()
    app = em.directory.add_app("bench-app", secret=SECRET)
    em.directory.add_group("DBA Group", app.oid)
    home = Path(tempfile.mkdtemp(prefix="tokend-bench-"))
    runtime = Path(tempfile.mkdtemp(prefix="tkb-"))
    bundle = home / "bundle.pem"
    system = os.environ.get("REQUESTS_CA_BUNDLE") or __import__("certifi").where()
    bundle.write_bytes(Path(system).read_bytes() + b"\n" + em.certs.ca_cert.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AZURE_", "TOKEND_"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".state"),
        XDG_RUNTIME_DIR=str(runtime),
        AZURE_CONFIG_DIR=str(home / ".azure"),
        REQUESTS_CA_BUNDLE=str(bundle),
        BENCH_SECRET=SECRET,
        AZURE_CORE_COLLECT_TELEMETRY="false",
    )
    try:
        yield Bench(em, home, env, app.client_id)
    finally:
        em.stop()
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)


@contextlib.contextmanager
def running_daemon(b: Bench, config: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    log = open(b.home / f"daemon-{config.stem}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [TOKEND, "run", "--config", str(config), *args], env=b.env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            r = subprocess.run([TOKEND, "status", "--json", "--config", str(config)], env=b.env, capture_output=True)
            if r.returncode == 0 and all(i["state"] == "ok" for i in json.loads(r.stdout)["identities"]):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"daemon not ready: {(b.home / f'daemon-{config.stem}.log').read_text()}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def az_login(b: Bench, az: str) -> None:
    cloud = {
        "endpoints": {
            "activeDirectory": b.emulator.url,
            "resourceManager": b.emulator.url + "/arm/",
            "activeDirectoryResourceId": "https://management.core.windows.net/",
            "ossrdbmsResourceId": RESOURCE,
        }
    }
    (b.home / "cloud.json").write_text(json.dumps(cloud))
    for args in (
        ["cloud", "register", "-n", "Emu", "--skip-endpoint-discovery", "--cloud-config", f"@{b.home / 'cloud.json'}"],
        ["cloud", "set", "-n", "Emu"],
        ["config", "set", "core.instance_discovery=false"],
        [
            "login",
            "--service-principal",
            "-u",
            b.app_id,
            f"--password={SECRET}",
            "--tenant",
            b.emulator.directory.tenant_id,
            "--allow-no-subscriptions",
        ],
    ):
        subprocess.run([az, *args], env=b.env, check=True, capture_output=True)


@contextlib.contextmanager
def released_tokend() -> Iterator[str]:
    """tokend as users get it: a regular (not editable) install of this checkout in a fresh venv."""
    folder = Path(tempfile.mkdtemp(prefix="tokend-bench-venv-"))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run(
            [str(folder / "bin" / "python"), "-m", "pip", "install", "-q", str(Path(__file__).resolve().parent.parent)],
            check=True,
            capture_output=True,
        )
        yield str(folder / "bin" / "tokend")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def time_command(cmd: list[str], env: dict[str, str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
    return out


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def machine() -> str:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    return f"{os.cpu_count()} cores, {cpu}, Python {sys.version.split()[0]}"
