"""A real pgAdmin 4 (PyPI's, in .venv-clients, which tests/run.sh installs) in desktop mode, driven through its own REST
API as its browser UI drives it: load servers.json with ``setup.py load-servers``, connect a server
(``/browser/server/connect/GID/SID``, which runs the server's PasswordExecCommand), and run a query in the query
tool (``/sqleditor/initialize``, ``/sqleditor/query_tool/start``, ``/sqleditor/poll``: a new connection each time,
whose password pgAdmin takes from the command's cached answer). Endpoints and flow from pgadmin4 9.18
``web/pgadmin/browser/server_groups/servers/__init__.py`` (connect, nodes) and ``web/pgadmin/tools/sqleditor/
__init__.py``; the CSRF header and token from ``web/pgadmin/browser/templates/browser/js/utils.js``.

Server mode (``server_mode=True``) logs in through pgAdmin's login form as the first administrator, which
pgAdmin makes from PGADMIN_SETUP_EMAIL/PASSWORD; ENABLE_SERVER_PASS_EXEC_CMD lets 9.x run the password commands.
Desktop mode needs no login: ``PGADMIN_INT_KEY`` (given at start, asked once as ``?key=``) opens a session for the
desktop user pgadmin4@pgadmin.org. Everything pgAdmin keeps (its SQLite database, sessions, storage, log) lives in
the test's own folder, set by a ``config_local.py`` there (on PYTHONPATH). pgAdmin runs its password commands with
its own environment, which holds PGADMIN_INT_KEY: nothing here ever prints that environment.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest

from support.installs import wait_installed
from support.net import free_port
from support.product import REPO
from support.waits import wait_for

VENV = REPO / ".venv-clients"
PYTHON = VENV / "bin" / "python"
DESKTOP_USER = "pgadmin4@pgadmin.org"
ADMIN, ADMIN_PASSWORD = "admin@example.com", "Server-mode-0nly"  # server mode's first user (a test pgAdmin's)


def home() -> Path:
    """pgAdmin's web folder (pgAdmin4.py, setup.py, config.py) in .venv-clients; fails the test when missing."""
    wait_installed("clients")
    if not PYTHON.exists():
        pytest.fail("pgAdmin 4 missing: tests/run.sh installs it (pip install pgadmin4) into .venv-clients")
    purelib = subprocess.run(
        [str(PYTHON), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    web = Path(purelib) / "pgadmin4"
    if not (web / "pgAdmin4.py").exists():
        pytest.fail(f"pgAdmin 4 missing in {web}: tests/run.sh installs it into .venv-clients")
    return web


def version() -> str:
    """The installed pgAdmin's version, e.g. "9.18"."""
    text = (home() / "version.py").read_text()
    major, minor = (re.search(rf"^APP_{k} = (\d+)", text, re.M) for k in ("RELEASE", "REVISION"))
    assert major and minor, text
    return f"{major[1]}.{minor[1]}"


def has_named_commands() -> bool:
    """Whether this pgAdmin runs server-mode password commands by name (SERVER_PASSEXEC_COMMANDS): pgAdmin's
    development branch since its server_passexec_name migration (2026-10-06); not 9.18."""
    return "ServerPasswordExec" in (home() / "pgadmin" / "utils" / "passexec.py").read_text()


def _nodes(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The tree nodes of a /browser/…/nodes/ answer (pgAdmin puts them in "data" or in "result")."""
    return list(answer.get("data") or answer.get("result") or [])


@dataclass
class Server:
    """One server of pgAdmin's tree: its group id, its own id, its name."""

    gid: int
    sid: int
    name: str


class PgAdmin:
    """pgAdmin 4 in desktop mode on a loopback port of its own, its data in ``folder``."""

    def __init__(self, folder: Path, env: dict[str, str] | None = None, server_mode: bool = False) -> None:
        self.web = home()
        self.folder = folder
        self.data = folder / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log_file = self.data / "pgadmin4.log"
        self.key = secrets.token_hex(16)
        self.server_mode = server_mode
        self.user = ADMIN if server_mode else DESKTOP_USER
        self.port = free_port()
        conf = folder / "conf"
        conf.mkdir(exist_ok=True)
        (conf / "config_local.py").write_text(
            # server mode: pgAdmin 9.x runs free-text password commands only with ENABLE_SERVER_PASS_EXEC_CMD
            ("SERVER_MODE = True\nENABLE_SERVER_PASS_EXEC_CMD = True\n" if server_mode else "SERVER_MODE = False\n")
            + "MASTER_PASSWORD_REQUIRED = False\n"
            "USE_OS_SECRET_STORAGE = False\n"
            "UPGRADE_CHECK_ENABLED = False\n"
            "FILE_LOG_LEVEL = 20\n"
            f"DATA_DIR = {str(self.data)!r}\n"
            f"LOG_FILE = {str(self.log_file)!r}\n"
            f"SQLITE_PATH = {str(self.data / 'pgadmin4.db')!r}\n"
            f"SESSION_DB_PATH = {str(self.data / 'sessions')!r}\n"
            f"STORAGE_DIR = {str(self.data / 'storage')!r}\n"
            f"AZURE_CREDENTIAL_CACHE_DIR = {str(self.data / 'azurecredentialcache')!r}\n"
            f"KERBEROS_CCACHE_DIR = {str(self.data / 'krbccache')!r}\n"
        )
        self.env = {
            **(env if env is not None else os.environ),
            "PYTHONPATH": str(conf),
            "PGADMIN_SERVER_MODE": "ON" if server_mode else "OFF",
            "PGADMIN_INT_PORT": str(self.port),
        }
        if server_mode:  # the first administrator, made with pgAdmin's database
            self.env |= {"PGADMIN_SETUP_EMAIL": ADMIN, "PGADMIN_SETUP_PASSWORD": ADMIN_PASSWORD}
        else:
            self.env["PGADMIN_INT_KEY"] = self.key
        self.proc: subprocess.Popen[bytes] | None = None
        self._out = open(folder / "pgadmin-stdout.log", "wb")  # noqa: SIM115 - closed in stop()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        self._csrf = ""

    # -- lifetime ---------------------------------------------------------------------------------------------------
    def load_servers(self, servers_json: Path) -> str:
        """``setup.py load-servers FILE`` as an administrator runs it, into the database of the running pgAdmin
        (``start`` first: pgAdmin makes it); the output ("Added N Server Group(s) and M Server(s).")."""
        r = subprocess.run(
            [str(PYTHON), str(self.web / "setup.py"), "load-servers", str(servers_json), "--user", self.user],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.folder,
            timeout=180,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    def start(self, timeout: float = 180.0) -> PgAdmin:
        self.proc = subprocess.Popen(
            [str(PYTHON), str(self.web / "pgAdmin4.py")],
            env=self.env,
            cwd=self.folder,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

        ping = "/misc/ping" if self.server_mode else f"/misc/ping?key={self.key}"  # desktop: nothing without it

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"pgAdmin exited:\n{self.output()}"
            try:
                return self._raw("GET", ping)[1] == b"PING"
            except OSError:
                return False

        wait_for(up, timeout, 0.5, "pgAdmin answering /misc/ping")
        if self.server_mode:  # pgAdmin's login form, as its login page posts it
            login_page = json.loads(self._raw("GET", "/login")[1])
            form = {"email": ADMIN, "password": ADMIN_PASSWORD, "csrf_token": login_page["response"]["csrf_token"]}
            req = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/authenticate/login",
                data=urllib.parse.urlencode(form).encode(),
                method="POST",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            with self._opener.open(req, timeout=60) as resp:
                assert resp.status == 200, resp.status
        else:
            self._raw("GET", f"/?key={self.key}")  # the desktop session's cookie
        utils = self._raw("GET", "/browser/js/utils.js")[1].decode()
        token = re.search(r"pgAdmin\['csrf_token'\] = '([^']+)'", utils)
        assert token, "no CSRF token in /browser/js/utils.js"
        self._csrf = token[1]
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()

    def output(self) -> str:
        return (self.folder / "pgadmin-stdout.log").read_text(errors="replace")[-4000:]

    def log(self) -> str:
        """pgAdmin's LOG_FILE: where a failing password command's stderr goes."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    # -- REST, as the browser UI calls it ------------------------------------------------------------------------
    def _raw(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self._csrf:
            req.add_header("X-pgA-CSRFToken", self._csrf)
        try:
            with self._opener.open(req, timeout=90) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        """(HTTP status, the JSON answer) of one REST call."""
        status, raw = self._raw(method, path, body)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, {"raw": raw.decode(errors="replace")[:2000]}

    def servers(self) -> list[Server]:
        """Every server in pgAdmin's tree (groups, then their servers)."""
        found = []
        status, groups = self.call("GET", "/browser/server_group/nodes/")
        assert status == 200, groups
        for g in _nodes(groups):
            status, nodes = self.call("GET", f"/browser/server/nodes/{g['_id']}/")
            if status == 410:  # a group with no servers (pgAdmin's own "Servers")
                continue
            assert status == 200, nodes
            found += [Server(int(g["_id"]), int(n["_id"]), n["label"]) for n in _nodes(nodes)]
        return found

    def server(self, name: str) -> Server:
        (s,) = [s for s in self.servers() if s.name == name]
        return s

    def connect(self, s: Server) -> tuple[int, dict[str, Any]]:
        """The browser's connect: pgAdmin takes the password from the server's PasswordExecCommand."""
        return self.call("POST", f"/browser/server/connect/{s.gid}/{s.sid}", {})

    def disconnect(self, s: Server) -> None:
        status, answer = self.call("DELETE", f"/browser/server/connect/{s.gid}/{s.sid}")
        assert status == 200, answer

    def query(self, s: Server, database: str, sql: str, timeout: float = 60.0) -> list[list[Any]]:
        """``sql`` in a query tool on ``database`` (a connection of its own); its rows. AssertionError with pgAdmin's
        message when the query tool cannot connect or the query fails."""
        status, dbs = self.call("GET", f"/browser/database/nodes/{s.gid}/{s.sid}/")
        assert status == 200, dbs
        (did,) = [d["_id"] for d in _nodes(dbs) if d["label"] == database]
        trans = secrets.randbelow(9_000_000) + 1_000_000
        status, init = self.call(
            "POST", f"/sqleditor/initialize/sqleditor/{trans}/{s.gid}/{s.sid}/{did}", {"dbname": database}
        )
        assert status == 200 and init.get("success", 1), init
        try:
            status, started = self.call(
                "POST", f"/sqleditor/query_tool/start/{trans}", {"sql": sql, "explain_plan": None}
            )
            assert status == 200 and started.get("success", 1), started

            def result() -> tuple[list[list[Any]]] | None:
                status, polled = self.call("GET", f"/sqleditor/poll/{trans}")
                data = polled.get("data") or {}
                if data.get("status") == "Success":
                    return ([list(r.values()) if isinstance(r, dict) else list(r) for r in data.get("result") or []],)
                assert status == 200 and data.get("status") in ("Busy", None, "NotConnected"), polled
                return None

            return wait_for(result, timeout, 0.2, "the query tool's result")[0]
        finally:
            self.call("DELETE", f"/sqleditor/close/{trans}")
