"""A throwaway PostgreSQL cluster that logs people in the way Azure Database for PostgreSQL does.

TLS only on 127.0.0.1; every TCP login goes through ``ldap`` auth to the emulator's token check (cleartext password =
the Entra token). The local Unix socket trusts the admin, for setting up roles. When run as root the server runs as
the ``postgres`` system user (PostgreSQL refuses to run as root). ``install_pgaadauth`` adds the stand-in for
Azure's pgaadauth functions (``pgaadauth.py``) to a database, fed by the emulator's directory, with group sync.
"""

from __future__ import annotations

import contextlib
import glob
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from tokend.emulator import ca, pgaadauth
from tokend.emulator.directory import Directory
from tokend.emulator.ldapcheck import hba_options

ADMIN = "tokend_admin"


def server_bindir() -> Path | None:
    """The newest PostgreSQL server binaries on this machine (Debian's layout, then PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else None


class Postgres:
    def __init__(self, ldap_port: int, port: int = 0, folder: Path | None = None, max_connections: int = 100) -> None:
        bindir = server_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found; install Debian's postgresql package")
        self.bindir = bindir
        self.ldap_port = ldap_port
        self.port = port or free_port()
        self.folder = folder or Path(tempfile.mkdtemp(prefix="tokend-pg-"))
        self.data = self.folder / "data"
        self.sockdir = self.folder / "sock"
        self.log = self.folder / "postgres.log"
        self.user = "postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
        self.max_connections = max_connections
        self.pgaadauth_databases: set[str] = set()  # where install_pgaadauth put the functions
        self.group_sync: pgaadauth.GroupSync | None = None
        self._directory: Directory | None = None
        self._publishing = threading.Lock()

    def start(self) -> Postgres:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(exist_ok=True)
        tls = ca.make(self.folder / "tls")
        self.ca_cert = tls.ca_cert
        if self.user:
            if sys.platform == "win32":
                raise OSError("running PostgreSQL as another user needs POSIX (pwd, chown)")
            import pwd  # POSIX only (running as root): the emulator itself runs everywhere

            entry = pwd.getpwnam(self.user)
            os.chmod(self.folder, 0o755)
            for p in (self.folder, self.sockdir, tls.cert.parent, tls.cert, tls.key):
                os.chown(p, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            ADMIN,
            "--auth-local=trust",
            "--auth-host=reject",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        conf = (
            f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.sockdir}'\n"
            f"ssl = on\nssl_cert_file = '{tls.cert}'\nssl_key_file = '{tls.key}'\nfsync = off\n"
            f"log_connections = on\nmax_connections = {self.max_connections}\n"
            f"{pgaadauth.SETTING} = off\n"  # Azure's default
        )
        hba = (
            f"local all all trust\nhostssl all all 127.0.0.1/32 ldap {hba_options(self.ldap_port)}\n"
            "hostnossl all all 0.0.0.0/0 reject\n"
        )
        self._append(self.data / "postgresql.conf", conf)
        (self.data / "pg_hba.conf").write_text(hba)
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "start")
        return self

    def stop(self) -> None:
        if self.group_sync is not None:
            self.group_sync.stop()
        if self._directory is not None:
            with contextlib.suppress(ValueError):
                self._directory.listeners.remove(self._publish)
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def sql(self, statement: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-h",
                str(self.sockdir),
                "-p",
                str(self.port),
                "-U",
                ADMIN,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                statement,
            ],
            check=True,
            capture_output=True,
            text=True,
            env=_clean_env(),
        )
        return out.stdout

    def add_roles(self, roles: Iterable[str], database: str = "appdb") -> None:
        """LOGIN roles named like Entra principals and groups, allowed to connect to ``database``."""
        self.sql(f'CREATE DATABASE "{database}"')
        for role in roles:
            quoted = '"' + role.replace('"', '""') + '"'
            self.sql(f"CREATE ROLE {quoted} LOGIN")
            self.sql(f'GRANT CONNECT ON DATABASE "{database}" TO {quoted}')

    # -- Azure's pgaadauth, group sync ----------------------------------------------------------------------------
    def install_pgaadauth(
        self, database: str, directory: Directory, admins: Iterable[str] = (), adopt: bool = False
    ) -> None:
        """Azure's pgaadauth functions in ``database``, fed by ``directory`` (kept current from now on), with the
        existing roles ``admins`` recorded as Microsoft Entra administrators; with ``adopt`` every existing role
        named like a directory object becomes that object's principal (``add_roles`` made plain roles)."""
        self.sql(pgaadauth.INSTALL, database)
        if self._directory is None:
            self._directory = directory
            directory.listeners.append(self._publish)
        elif self._directory is not directory:
            raise ValueError("one directory per PostgreSQL cluster: its roles are the cluster's")
        with self._publishing:
            self.pgaadauth_databases.add(database)
            self.sql(pgaadauth.publish_sql(directory), database)
        if adopt:
            self.sql(pgaadauth.ADOPT, database)
        if admins:
            self.sql(pgaadauth.admins_sql(list(admins)), database)

    def forget_pgaadauth(self, database: str) -> None:
        """Stop feeding and syncing ``database`` (before it is dropped)."""
        with self._publishing:
            self.pgaadauth_databases.discard(database)

    def set_parameter(self, name: str, value: str) -> None:
        """A server parameter, as the portal's "Server parameters" page sets it: for the whole server, seen by every
        session from its next statement; returns once a new session sees it."""
        self.sql(f"ALTER SYSTEM SET {name} = {pgaadauth._lit(value)}")
        self.sql("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        while self.sql(f"SELECT current_setting({pgaadauth._lit(name)}, true)").strip() != value:
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL did not take {name} = {value}")
            time.sleep(0.02)

    def sync_groups(self, database: str | None = None) -> list[list[str]]:
        """Run the group sync now in ``database`` (default: every database with pgaadauth), as Azure's timer does;
        the rows of ``pgaadauth_sync_roles_for_group_members()``."""
        with self._publishing:
            databases = [database] if database else sorted(self.pgaadauth_databases)
        rows = []
        for db in databases:
            out = self.sql(pgaadauth.SYNC_SQL, db)
            rows += [line.split("|") for line in out.splitlines() if line]
        return rows

    def start_group_sync(self, interval: float = pgaadauth.AZURE_INTERVAL) -> pgaadauth.GroupSync:
        """Azure's automatic sync every ``interval`` seconds, in every database with pgaadauth, while group sync is
        on (a run while it is off does nothing, as on Azure)."""
        if self.group_sync is not None:
            self.group_sync.stop()
        self.group_sync = pgaadauth.GroupSync(self._sync_if_on, interval).start()
        return self.group_sync

    def _sync_if_on(self) -> None:
        if self.sql(f"SELECT current_setting('{pgaadauth.SETTING}', true)").strip().lower() in ("on", "true", "1"):
            self.sync_groups()

    def _publish(self, directory: Directory) -> None:
        with self._publishing:
            for db in sorted(self.pgaadauth_databases):
                try:
                    self.sql(pgaadauth.publish_sql(directory), db)
                except subprocess.CalledProcessError as e:
                    if "does not exist" not in (e.stderr or ""):
                        raise
                    self.pgaadauth_databases.discard(db)  # dropped without forget_pgaadauth

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [str(self.bindir / tool), *args],
            check=True,
            capture_output=True,
            user=self.user,
            env=_clean_env(),
            cwd=self.folder,
        )

    def _append(self, path: Path, text: str) -> None:
        with open(path, "a") as f:
            f.write(text)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


_handed_out: set[int] = set()  # this process's picks: never the same port twice


def free_port() -> int:
    """A loopback TCP port nobody listens on now, for a server to bind next: one below the kernel's ephemeral range,
    which every outgoing connection draws its local port from (a port picked there can be taken by some process's
    connection before the server binds it: "Address already in use")."""
    low = 49152  # IANA's range, Windows' and macOS's
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])  # Linux: 32768
    for _ in range(1000):
        port = random.randrange(max(1024, low - 16384), low)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise OSError(f"no free loopback port below {low}")


def wait_ready(pg: Postgres, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pg.sql("SELECT 1")
            return
        except subprocess.CalledProcessError:
            time.sleep(0.1)
    raise TimeoutError("PostgreSQL did not become ready")
