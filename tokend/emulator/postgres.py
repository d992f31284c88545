"""A throwaway PostgreSQL cluster that logs people in the way Azure Database for PostgreSQL does.

TLS only on 127.0.0.1; every TCP login goes through ``ldap`` auth to the emulator's token check (cleartext password =
the Entra token). The local Unix socket trusts the admin, for setting up roles. When run as root the server runs as
the ``postgres`` system user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from tokend.emulator import ca
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
        self.port = port or _free_port()
        self.folder = folder or Path(tempfile.mkdtemp(prefix="tokend-pg-"))
        self.data = self.folder / "data"
        self.sockdir = self.folder / "sock"
        self.log = self.folder / "postgres.log"
        self.user = "postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
        self.max_connections = max_connections

    def start(self) -> Postgres:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(exist_ok=True)
        tls = ca.make(self.folder / "tls")
        self.ca_cert = tls.ca_cert
        if self.user:
            if sys.platform == "win32":
                raise OSError("running PostgreSQL as another user needs POSIX (pwd, chown)")
            import pwd  # POSIX only: the emulator itself runs everywhere

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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(pg: Postgres, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pg.sql("SELECT 1")
            return
        except subprocess.CalledProcessError:
            time.sleep(0.1)
    raise TimeoutError("PostgreSQL did not become ready")
