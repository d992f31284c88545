"""Fixtures, and nothing else: a private HOME for every test; the real parts end-to-end tests start (the Entra
emulator over HTTPS with its own CA, a PostgreSQL that checks tokens like Azure, the real Azure CLI, a Secret Service,
tokend daemons from the installed product, a second local user, a shifted wall clock).

Every test runs in its own temporary HOME with its own XDG folders, PGPASSFILE, AZURE_CONFIG_DIR and runtime folder:
nothing touches the real ~/.pgpass, ~/.azure or keychain. What tests share besides fixtures lives in tests/support/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tokend.emulator.postgres import Postgres

from support import tenant as tenant_mod
from support.azcli import find_az
from support.builders import GROUP, RESOURCE, SECRET, SECRET_ENV
from support.daemon import DaemonProcess
from support.tenant import Tenant
from support.users import as_other_user, ensure_other_user
from support.waits import wait_for


@pytest.fixture(scope="session")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenant]:
    t = tenant_mod.start(tmp_path_factory.mktemp("emulator"))
    yield t
    t.emulator.stop()


@pytest.fixture
def em(tenant: Tenant) -> Iterator[Tenant]:
    """The session's emulator, reset after the test (lifetimes, faults, connections)."""
    yield tenant
    e = tenant.emulator
    e.accept_connections()
    e.fail_next(0)
    e.hang_next(0)
    e.directory.lifetime = 3600.0
    e.mi_lifetime = None
    e.browser_user = None


@pytest.fixture(scope="session")
def postgres(tenant: Tenant) -> Iterator[Postgres]:
    pg = Postgres(tenant.emulator.ldap.port).start()
    pg.add_roles([GROUP, tenant.alice.upn, tenant.app.name])
    yield pg
    pg.stop()


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    """A private HOME and private XDG folders for every test."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    runtime = Path(tempfile.mkdtemp(prefix="tkd-"))  # short: Unix socket paths are limited to ~100 bytes
    runtime.chmod(0o700)
    request.addfinalizer(lambda: shutil.rmtree(runtime, ignore_errors=True))
    for var in (
        "PGPASSFILE",
        "PGPASSWORD",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGSERVICEFILE",
        "TOKEND_CONFIG",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "MSI_ENDPOINT",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_AUTHORITY_HOST",
        "AZURE_CLIENT_SECRET",
        "DBUS_SESSION_BUS_ADDRESS",
        "BROWSER",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local/state"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local/share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(home / ".azure"))
    monkeypatch.setenv("APPDATA", str(home / "AppData" / "Roaming"))  # Windows' profile folders, moved too
    monkeypatch.setenv("LOCALAPPDATA", str(home / "AppData" / "Local"))
    monkeypatch.setenv("USERPROFILE", str(home))
    # Away from the checkout: `python -c …` started from it would import the source tree, not the installed tokend.
    monkeypatch.chdir(tmp_path)
    if "tenant" in request.fixturenames:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(request.getfixturevalue("tenant").bundle))
    return home


@pytest.fixture
def pgpass(home: Path) -> Path:
    return home / ".pgpass"


@pytest.fixture
def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """Writes a config text to a file of the test's; the secret variable the builders' configs name is set."""
    monkeypatch.setenv(SECRET_ENV, SECRET)

    def write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Starts daemons of the installed product; each is stopped when the test ends."""
    started: list[DaemonProcess] = []

    def start(config: Path, *args: str, env: dict[str, str] | None = None) -> DaemonProcess:
        d = DaemonProcess(config, tmp_path / f"daemon-{len(started)}.log", *args, env=env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def no_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing a client could read a password from: no pgpass (a path that does not exist), no PGPASSWORD."""
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    monkeypatch.delenv("PGPASSWORD", raising=False)


@pytest.fixture
def secret_service(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real Secret Service for this test only: gnome-keyring, unlocked, on a private D-Bus session bus."""
    missing = [t for t in ("dbus-daemon", "gnome-keyring-daemon") if not shutil.which(t)]
    try:
        import gi

        gi.require_version("Secret", "1")
    except (ImportError, ValueError):
        missing.append("PyGObject with Secret-1")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"missing for the Secret Service tests: {missing}; tests/run.sh installs them")
        pytest.skip(f"no Secret Service here ({', '.join(missing)})")
    bus = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert bus.stdout is not None
    address = bus.stdout.readline().strip()
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
    keyring = subprocess.Popen(
        ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert keyring.stdin is not None
    keyring.stdin.write(b"test-keyring-password")
    keyring.stdin.close()

    def ready() -> bool:
        probe = subprocess.run(
            [
                "dbus-send",
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.secrets",
            ],
            capture_output=True,
            text=True,
        )
        return "boolean true" in probe.stdout

    wait_for(ready, timeout=15, what="gnome-keyring on the private bus")
    yield address
    keyring.terminate()
    bus.terminate()
    keyring.wait(5)
    bus.wait(5)


@pytest.fixture
def az(em: Tenant, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """The real Azure CLI (from PyPI), with its own AZURE_CONFIG_DIR, registered against the emulator's cloud,
    and on PATH for the daemon (alone in a folder, so its Python does not shadow ours)."""
    path = find_az()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("the Azure CLI is not installed; .ci/run installs it")
        pytest.skip("Azure CLI not installed (set TOKEND_TEST_AZ)")
    bindir = tmp_path / "azbin"
    bindir.mkdir()
    (bindir / "az").symlink_to(path)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("AZURE_CORE_COLLECT_TELEMETRY", "false")
    monkeypatch.setenv("AZURE_CORE_SURVEY_MESSAGE", "false")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([path, *args], capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"az {' '.join(args[:2])} failed: {r.stderr[-2000:]}")
        return r

    cloud = {
        "endpoints": {
            "activeDirectory": em.url,
            "resourceManager": em.url + "/arm/",
            "activeDirectoryResourceId": "https://management.core.windows.net/",
            "ossrdbmsResourceId": RESOURCE,
            "microsoftGraphResourceId": "https://graph.microsoft.com/",
        }
    }
    cloud_file = tmp_path / "cloud.json"
    cloud_file.write_text(json.dumps(cloud))
    run("cloud", "register", "-n", "Emulator", "--skip-endpoint-discovery", "--cloud-config", f"@{cloud_file}")
    run("cloud", "set", "-n", "Emulator")
    run("config", "set", "core.instance_discovery=false")
    return run


@pytest.fixture
def other_user() -> Callable[..., subprocess.CompletedProcess[str]]:
    """A second local user (created once; tests run as root in CI), and a way to run a command as that user."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the tests that act as a second local user need root (CI runs them as root)")
        pytest.skip("creating a second local user needs root (CI runs as root)")
    ensure_other_user()
    return as_other_user


@pytest.fixture
def faketime(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment that runs a process under libfaketime with a wall-clock offset read from a file (the test
    writes "+2h", "-2h"…), the monotonic and boot clocks left real. The file sits in a folder of its own: libfaketime
    reads it at every clock call, and the daemon watches its config's folder."""
    lib = next(iter(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1")), Path("/nonexistent"))
    if not lib.exists():
        if os.environ.get("CI"):
            pytest.fail("libfaketime missing; tests/run.sh installs Debian's faketime")
        pytest.skip("libfaketime not installed")
    (tmp_path / "clock").mkdir()
    offset = tmp_path / "clock" / "faketime"
    offset.write_text("+0\n")
    env = {
        **os.environ,
        "LD_PRELOAD": str(lib),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "DONT_FAKE_MONOTONIC": "1",
    }
    return env, offset
