"""`tokend demo`: watch tokend work with no Azure at hand.

In a temporary folder it starts the bundled Entra emulator (tokens that live 60 s, so they rotate about every 30 s),
a real daemon with a demo config, and — when PostgreSQL's server binaries are on the machine — the token-checking
PostgreSQL, then logs in through pgpass again and again while the status scrolls by. Nothing outside the folder is
touched (its own HOME, pgpass, runtime folder). Ctrl-C, or the end of ``--duration``, cleans up everything it started.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tokend.emulator.postgres import Postgres, server_bindir
from tokend.emulator.server import Emulator
from tokend.errors import UsageError
from tokend.service import tokend_executable
from tokend.status import plural

GROUP = "DBA Group"


def run(duration: float | None, say: Callable[[str], None] = print, interval: float = 2.0) -> int:
    """Run the demo for ``duration`` seconds (None: until Ctrl-C); exit code 0 when every login worked."""
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise UsageError(f"--duration must be a positive number of seconds, got {duration:g}")
    folder = Path(tempfile.mkdtemp(prefix="tokend-demo-"))
    say(f"tokend demo in {folder} (Ctrl-C to stop; everything here is removed at the end)")
    em = pg = daemon = None
    try:
        em = Emulator(folder=folder / "emulator").start()
        em.directory.lifetime = 60
        secret = secrets.token_urlsafe(24)
        app = em.directory.add_app("tokend-demo-app", secret=secret)
        em.directory.add_group(GROUP, app.oid)
        say(
            f"Entra emulator at {em.url} (tenant {em.directory.tenant_id}); tokens live 60 s, so tokend "
            f"replaces each one after ~30 s{_expect(duration)}"
        )
        if server_bindir() is not None:
            pg = Postgres(em.ldap.port).start()
            pg.add_roles([GROUP])
            pg.install_pgaadauth("appdb", em.directory, adopt=True)  # Azure's pgaadauth functions, as in tests
            host, port = "127.0.0.1", pg.port
            say(f"PostgreSQL on {host}:{port}: logins only with a valid token for {GROUP!r}, checked server side")
        else:
            host, port = "demo.invalid", 5432
            say("no PostgreSQL server binaries here: showing the tokens only")
        env = _environment(folder, em, secret)
        config = folder / "config.toml"
        config.write_text(
            f'[identities.demo]\nsource = "service-principal"\ntenant_id = "{em.directory.tenant_id}"\n'
            f'client_id = "{app.client_id}"\nclient_secret_env = "TOKEND_DEMO_SECRET"\nauthority = "{em.url}"\n\n'
            f'[targets.demo]\nhost = "{host}"\nport = {port}\ndatabase = "appdb"\nuser = "{GROUP}"\n\n'
            f'[sinks.pgpass]\npath = "{folder / "pgpass"}"\n'
        )
        log = open(folder / "daemon.log", "wb")  # noqa: SIM115 - closed with the daemon below
        daemon = subprocess.Popen(
            [str(tokend_executable()), "run", "--config", str(config)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        say(f"daemon pid {daemon.pid} writes {folder / 'pgpass'}\n")
        return _watch(config, env, pg, duration, interval, say, daemon)
    except KeyboardInterrupt:
        return 0
    finally:
        if daemon is not None:
            daemon.terminate()
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        if pg is not None:
            pg.stop()
        if em is not None:
            em.stop()
        shutil.rmtree(folder, ignore_errors=True)
        say("cleaned up: daemon, PostgreSQL and emulator stopped, demo folder removed")


def _environment(folder: Path, em: Emulator, secret: str) -> dict[str, str]:
    home = folder / "home"
    run = folder / "run"
    for d in (home, run):
        d.mkdir(mode=0o700)
    bundle = folder / "ca-bundle.pem"
    system = os.environ.get("REQUESTS_CA_BUNDLE")
    if not system:
        import certifi  # only when REQUESTS_CA_BUNDLE names no bundle

        system = certifi.where()
    bundle.write_bytes(Path(system).read_bytes() + b"\n" + em.certs.ca_cert.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "XDG_", "AZURE_", "TOKEND_"))}
    env.update(
        HOME=str(home),
        XDG_RUNTIME_DIR=str(run),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".state"),
        XDG_DATA_HOME=str(home / ".data"),
        XDG_CACHE_HOME=str(home / ".cache"),
        REQUESTS_CA_BUNDLE=str(bundle),
        TOKEND_DEMO_SECRET=secret,
        PGPASSFILE=str(folder / "pgpass"),
        TOKEND_LOG_STDERR="1",
    )
    return env


def _watch(
    config: Path,
    env: dict[str, str],
    pg: Postgres | None,
    duration: float | None,
    interval: float,
    say: Callable[[str], None],
    daemon: subprocess.Popen[bytes],
) -> int:
    start = time.monotonic()
    tokens: list[int] = []
    logins = failures = 0
    failed: list[str] = []
    while duration is None or time.monotonic() - start < duration:
        if daemon.poll() is not None:
            say(f"the daemon exited with {daemon.returncode}; see its log")
            return 1
        status = _status(config, env)
        line = time.strftime("%H:%M:%S")
        if status and status["identities"] and status["identities"][0]["expires_on"]:
            ident = status["identities"][0]
            if not tokens or tokens[-1] != ident["expires_on"]:
                tokens.append(ident["expires_on"])
            left = ident["expires_on"] - time.time()
            line += f"  token #{len(tokens)} for {ident['principal']}, expires in {left:3.0f} s"
            if pg is not None:
                ok, who = _login(pg, env)
                logins += 1
                failures += not ok
                if not ok:
                    failed.append(f"{time.strftime('%H:%M:%S')} {who}")
                line += f"  ·  psql as {GROUP!r} through pgpass: {'ok (' + who + ')' if ok else 'FAILED ' + who}"
        else:
            line += "  waiting for the first token…"
        say(line)
        time.sleep(interval)
    rotations = max(0, len(tokens) - 1)
    say(f"\n{plural(rotations, 'rotation')}, {plural(logins, 'login')}, {failures} failed")
    if failures:
        say(f"login failures (the first): {failed[0]}")
        return 1
    return 0


def _expect(duration: float | None) -> str:
    if duration is None:
        return ""
    n = max(0, int((duration - 5) // 30))
    return f"; in {duration:.0f} s expect about {plural(n, 'rotation')}"


def _status(config: Path, env: dict[str, str]) -> dict | None:
    r = subprocess.run(
        [str(tokend_executable()), "status", "--json", "--config", str(config)], env=env, capture_output=True, text=True
    )
    return json.loads(r.stdout) if r.returncode == 0 else None


def _login(pg: Postgres, env: dict[str, str]) -> tuple[bool, str]:
    r = subprocess.run(
        [
            "psql",
            f"host=127.0.0.1 port={pg.port} dbname=appdb user='{GROUP}' sslmode=require",
            "-w",
            "-Atc",
            "select current_user",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return r.returncode == 0, (r.stdout.strip() if r.returncode == 0 else (r.stderr.strip().splitlines() or [""])[-1])
