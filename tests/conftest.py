"""Fixtures that start real parts: the Entra emulator (HTTPS, own CA), a PostgreSQL that checks tokens like Azure,
the real Azure CLI, and real tokend daemons. Every test runs in its own temporary HOME with its own XDG folders,
PGPASSFILE, AZURE_CONFIG_DIR and runtime folder: nothing touches the real ~/.pgpass, ~/.azure or keychain.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tokend.emulator.directory import App, ManagedIdentity, User
from tokend.emulator.postgres import Postgres
from tokend.emulator.server import Emulator

REPO = Path(__file__).resolve().parent.parent
# The `tokend` users get: installed from a wheel of this checkout into a venv of its own (tests/run.sh makes it).
WINDOWS = os.name == "nt"
TOKEND = os.environ.get("TOKEND_TEST_BIN") or str(
    REPO / ".venv-product" / ("Scripts" if WINDOWS else "bin") / ("tokend.cmd" if WINDOWS else "tokend")
)
if not Path(TOKEND).exists():
    raise SystemExit(
        f"no installed tokend at {TOKEND}: run the tests with `bash tests/run.sh`, which builds the "
        "wheel and installs it (or set TOKEND_TEST_BIN)"
    )
PRODUCT_PYTHON = str(Path(TOKEND).with_name("python.exe" if WINDOWS else "python"))
RESOURCE = "https://ossrdbms-aad.database.windows.net"
GROUP = "DBA Group"
SECRET = "emulator-secret-value-1"  # the test app's client secret (test data, not a real secret)


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


@dataclass
class Tenant:
    """The emulator with its directory, plus the principals the tests use."""

    emulator: Emulator
    alice: User
    app: App
    cert_app: App
    cert_pem: Path
    wi_app: App
    mi: ManagedIdentity
    bundle: Path

    @property
    def url(self) -> str:
        return self.emulator.url

    @property
    def tenant_id(self) -> str:
        return self.emulator.directory.tenant_id


def _cert_pem(folder: Path) -> tuple[bytes, Path]:
    """A self-signed certificate for the certificate credential: returns (cert PEM, path of key+cert PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokend-cert-app")])
    now = __import__("datetime").datetime.now(__import__("datetime").timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + __import__("datetime").timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    path = folder / "cert-app.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert_pem
    )
    path.chmod(0o600)
    return cert_pem, path


@pytest.fixture(scope="session")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenant]:
    folder = tmp_path_factory.mktemp("emulator")
    em = Emulator(folder=folder).start()
    d = em.directory
    alice = d.add_user("alice@contoso.example", "Alice Example")
    app = d.add_app("tokend-ci-app", secret=SECRET)
    cert_pem, cert_path = _cert_pem(folder)
    cert_app = d.add_app("tokend-cert-app", certificate_pem=cert_pem)
    wi_app = d.add_app("tokend-wi-app", federated=True)
    mi = d.add_managed_identity("tokend-mi", system=True)
    d.add_group(GROUP, alice.oid, app.oid, cert_app.oid, wi_app.oid, mi.oid)
    system = os.environ.get("REQUESTS_CA_BUNDLE") or __import__("certifi").where()
    bundle = folder / "bundle.pem"
    bundle.write_bytes(Path(system).read_bytes() + b"\n" + em.certs.ca_cert.read_bytes())
    yield Tenant(em, alice, app, cert_app, cert_path, wi_app, mi, bundle)
    em.stop()


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


def pgpass_token(pgpass: Path, user: str = GROUP) -> str | None:
    """The password of the first pgpass line for ``user``, as libpq would pick it; None when there is none."""
    from tokend.sinks.pgpass import parse

    try:
        lines = parse(pgpass.read_text())
    except FileNotFoundError:
        return None
    return next((ln[4] for ln in lines if ln[3] == user), None)


def sp_config(t: Tenant, pg_port: int, *, extra: str = "", targets: str | None = None, source: str = "sp") -> str:
    """A config with a service-principal identity and one target (the group on the test PostgreSQL)."""
    identities = {
        "sp": f'[identities.sp]\nsource = "service-principal"\ntenant_id = "{t.tenant_id}"\n'
        f'client_id = "{t.app.client_id}"\nclient_secret_env = "TOKEND_TEST_SECRET"\nauthority = "{t.url}"\n',
    }
    targets = (
        targets
        if targets is not None
        else (
            f'[targets.db]\nhost = "127.0.0.1"\nport = {pg_port}\ndatabase = "appdb"\nuser = "{GROUP}"\n'
            f'identity = "{source}"\n'
        )
    )
    return identities.get(source, "") + "\n" + targets + "\n" + extra


@pytest.fixture
def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    monkeypatch.setenv("TOKEND_TEST_SECRET", SECRET)

    def write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def device_identity(name: str, em_url: str, tenant_id: str) -> str:
    return (
        f'[identities.{name}]\nsource = "device-code"\ntenant_id = "{tenant_id}"\nauthority = "{em_url}"\n'
        "allow_unencrypted_cache = true\n"
    )


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


class DaemonProcess:
    def __init__(self, config: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [TOKEND, "run", "--config", str(config), *args], stdout=self._log, stderr=subprocess.STDOUT, env=env
        )

    def status(self) -> dict[str, Any] | None:
        r = tokend("status", "--json", "--config", str(self.config))
        return json.loads(r.stdout) if r.returncode == 0 else None

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            assert self.proc.poll() is None, f"daemon exited early:\n{self.log()}"
            s = self.status()
            return s if s and all(i["state"] == "ok" for i in s["identities"]) else None

        return wait_for(ready, timeout, 0.1, "daemon ready")

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


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(config: Path, *args: str, env: dict[str, str] | None = None) -> DaemonProcess:
        d = DaemonProcess(config, tmp_path / f"daemon-{len(started)}.log", *args, env=env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def tokend(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOKEND, *args], capture_output=True, text=True, env=env, timeout=timeout)


def psql(
    pg_port: int, user: str = GROUP, env: dict[str, str] | None = None, extra: str = ""
) -> subprocess.CompletedProcess[str]:
    """psql with no password given: libpq must find the token in pgpass."""
    e = dict(env or os.environ)
    e.pop("PGPASSWORD", None)
    conninfo = f"host=127.0.0.1 port={pg_port} dbname=appdb user='{user}' sslmode=require {extra}"
    return subprocess.run(
        ["psql", conninfo, "-w", "-Atc", "select current_user"], capture_output=True, text=True, env=e, timeout=30
    )


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a live process, MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS:"))) / 1024


def open_fds(pid: int) -> set[int]:
    """The descriptor numbers a live process holds."""
    return {int(n) for n in os.listdir(f"/proc/{pid}/fd")}


def accept_queue(port: int) -> int | None:
    """Connections waiting to be accepted by the loopback TCP listener on ``port`` (None: nothing listens there).
    For a listening socket the kernel's tables show that count as the receive queue."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return int(fields[4].split(":")[1], 16)
    return None


def pg_startup(user: str, database: str) -> bytes:
    """A PostgreSQL StartupMessage (protocol 3.0), as a raw client sends it."""
    import struct

    body = b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
    return struct.pack("!ii", 8 + len(body), 3 << 16) + body


def pg_message(sock: Any) -> tuple[bytes, bytes]:
    """One typed message from a PostgreSQL server (or the proxy): (type, body); (b"", b"") at end of stream."""
    import struct

    head = b""
    while len(head) < 5:
        chunk = sock.recv(5 - len(head))
        if not chunk:
            return b"", b""
        head += chunk
    (length,) = struct.unpack("!i", head[1:])
    body = b""
    while len(body) < length - 4:
        chunk = sock.recv(length - 4 - len(body))
        if not chunk:
            return b"", b""
        body += chunk
    return head[:1], body


def az_path() -> str | None:
    for candidate in (os.environ.get("TOKEND_TEST_AZ"), "/opt/tokend-az/bin/az", shutil.which("az")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture
def az(em: Tenant, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """The real Azure CLI (from PyPI), with its own AZURE_CONFIG_DIR, registered against the emulator's cloud,
    and on PATH for the daemon (alone in a folder, so its Python does not shadow ours)."""
    path = az_path()
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


OTHER_USER = "tokend-other"
AS_OTHER_USER = ("runuser", "-u", OTHER_USER, "--")  # argv prefix: run a command as the second local user


@pytest.fixture
def other_user() -> Callable[..., subprocess.CompletedProcess[str]]:
    """A second local user (created once; tests run as root in CI), and a way to run a command as that user."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the tests that act as a second local user need root (CI runs them as root)")
        pytest.skip("creating a second local user needs root (CI runs as root)")
    import fcntl
    import pwd

    with open("/tmp/tokend-test-useradd.lock", "w") as lock:  # pytest processes side by side add it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(OTHER_USER)
        except KeyError:
            subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER], check=True)

    def run(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([*AS_OTHER_USER, *cmd], capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{cmd} as {OTHER_USER} failed: {r.stderr}")
        return r

    return run


def open_path_for_others(path: Path) -> None:
    """Let other users walk down to ``path`` (x on every parent folder); the file's own mode still decides."""
    for parent in path.parents:
        if parent == Path("/"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o011)


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
