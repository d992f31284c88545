"""Beyond one laptop: health and metrics endpoints, JSON logs, the container's entrypoint run as a plain process,
Kubernetes manifests checked against a current Kubernetes, and PgBouncer kept logged in."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokend.config import Target
from tokend.emulator.postgres import Postgres
from tokend.errors import SinkError
from tokend.sinks import Entry
from tokend.sinks.pgbouncer import MAX_PASSWORD, PgbouncerSink
from tokend.token import Token

from conftest import (
    GROUP,
    PRODUCT_PYTHON,
    REPO,
    SECRET,
    TOKEND,
    Tenant,
    open_path_for_others,
    sp_config,
    tokend,
    wait_for,
)
from test_proxy import free_port


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.soak
def test_health_readiness_and_metrics(em: Tenant, postgres: Postgres, write_config, daemon) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    em.emulator.directory.lifetime = 60
    port = free_port()
    d = daemon(write_config(sp_config(em, postgres.port, extra=f'[observe]\nlisten = "127.0.0.1:{port}"\n')))
    d.wait_ready()
    base = f"http://127.0.0.1:{port}"
    assert get(f"{base}/healthz") == (200, "ok\n")
    wait_for(lambda: get(f"{base}/readyz")[0] == 200, what="ready")
    status, text = get(f"{base}/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {
        "tokend_build_info",
        "tokend_token_expiry_seconds",
        "tokend_token_requests",
        "tokend_sink_writes",
        "tokend_config_reloads",
        "tokend_ready",
    } <= set(families)
    expiry = next(s for s in families["tokend_token_expiry_seconds"].samples if s.labels == {"identity": "sp"})
    assert 0 < expiry.value <= 60
    assert any(s.labels.get("result") == "new" and s.value >= 1 for s in families["tokend_token_requests"].samples)
    for issued in em.emulator.directory.issued:  # no token, secret or user content anywhere
        assert issued["token"] not in text and issued["token"][-20:] not in text
    assert SECRET not in text and GROUP not in text and "127.0.0.1" not in text
    # an Entra outage that outlives the token: not ready; back within seconds of the recovery
    em.emulator.refuse_connections()
    wait_for(lambda: get(f"{base}/readyz")[0] == 503, timeout=80, interval=0.5, what="not ready")
    assert "identity sp" in get(f"{base}/readyz")[1] and get(f"{base}/healthz")[0] == 200
    em.emulator.accept_connections()
    back = time.monotonic()
    wait_for(lambda: get(f"{base}/readyz")[0] == 200, timeout=30, interval=0.2, what="ready again")
    assert time.monotonic() - back < 20


def test_json_logs_one_object_per_line(em: Tenant, postgres: Postgres, write_config, daemon) -> None:
    d = daemon(write_config(sp_config(em, postgres.port)), "--log-format", "json")
    d.wait_ready()
    d.stop()
    lines = [ln for ln in d.log().splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any("tokend running" in r["message"] for r in records)
    bad = tokend("run", "--config", "x.toml", env={**os.environ, "TOKEND_LOG_FORMAT": "yaml"})
    assert bad.returncode == 2 and "TOKEND_LOG_FORMAT" in bad.stderr


# -- the container, as a plain process ---------------------------------------------------------------------------
def containerfile() -> tuple[dict[str, str], list[str]]:
    """The final stage's ENV and exec-form ENTRYPOINT of the Containerfile."""
    text = (REPO / "Containerfile").read_text()
    final = text.split("\nFROM ")[-1]
    env_block = re.search(r"^ENV (.+?)(?=^\S)", final, re.S | re.M)
    assert env_block, "no ENV in the final stage"
    env = dict(re.findall(r"(\w+)=(\S+)", env_block[1].replace("\\\n", " ")))
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", final, re.M)
    assert entry, "no exec-form ENTRYPOINT"
    assert re.search(r"^USER 10001$", final, re.M), "not a non-root user"
    return env, json.loads(entry[1])


@pytest.mark.slow
@pytest.mark.soak
def test_sidecar_keeps_the_app_logged_in(em: Tenant, postgres: Postgres, tmp_path: Path) -> None:
    """tokend started exactly as the container's entrypoint, with the container's environment (its paths moved
    under a temporary root), the workload-identity environment a pod gets (a projected token file this test writes
    and rotates, the emulator as authority), and an "app" connecting through the shared folder's pgpass every
    second for 3 minutes with 60-s tokens."""
    env_c, entry = containerfile()
    root = Path(tempfile.mkdtemp(prefix="pod-"))  # short: Unix socket paths are limited to ~100 bytes
    moved = {k: str(root / v.lstrip("/")) if v.startswith("/") else v for k, v in env_c.items()}
    for k in ("HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        Path(moved[k]).mkdir(parents=True, exist_ok=True)
    Path(moved["PGPASSFILE"]).parent.mkdir(parents=True, exist_ok=True)
    config = Path(moved["TOKEND_CONFIG"])
    config.parent.mkdir(parents=True)
    config.write_text(
        f'[identities.pod]\nsource = "workload-identity"\nauthority = "{em.url}"\n\n'
        f'[targets.db]\nhost = "127.0.0.1"\nport = {postgres.port}\ndatabase = "appdb"\n'
        f'user = "{GROUP}"\nidentity = "pod"\nsinks = ["pgpass", "pg_service"]\n'
    )
    projected = tmp_path / "projected" / "azure-identity-token"
    projected.parent.mkdir()
    projected.write_text(em.emulator.directory.mint_federated(em.wi_app, lifetime=90))
    em.emulator.directory.lifetime = 60
    env = {
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        **moved,
        "AZURE_AUTHORITY_HOST": em.url,
        "AZURE_TENANT_ID": em.tenant_id,
        "AZURE_CLIENT_ID": em.wi_app.client_id,
        "AZURE_FEDERATED_TOKEN_FILE": str(projected),
        "REQUESTS_CA_BUNDLE": str(em.bundle),
    }
    assert entry[0] == "tokend"
    log = tmp_path / "daemon.log"  # a file, not a pipe nobody reads for minutes
    with log.open("wb") as out:
        proc = subprocess.Popen([TOKEND, *entry[1:]], env=env, stdout=out, stderr=subprocess.STDOUT)
    app_env = {
        "PATH": os.environ["PATH"],
        "PGPASSFILE": moved["PGPASSFILE"],
        "PGSERVICEFILE": moved["PGSERVICEFILE"],
        "PGSERVICE": "db",
    }
    try:

        def shared_files() -> bool:
            assert proc.poll() is None, log.read_text()
            return Path(moved["PGPASSFILE"]).exists() and Path(moved["PGSERVICEFILE"]).exists()

        wait_for(shared_files, timeout=60, what="the shared files")
        failures, start, rotated = [], time.monotonic(), 0
        while time.monotonic() - start < 180:
            t0 = time.monotonic()
            if t0 - start > 60 * (rotated + 1):  # the kubelet re-projects the federated token
                projected.write_text(em.emulator.directory.mint_federated(em.wi_app, lifetime=90))
                rotated += 1
            r = subprocess.run(
                ["psql", "-w", "-Atc", "select current_user"], env=app_env, capture_output=True, text=True, timeout=30
            )
            if r.stdout.strip() != GROUP:
                failures.append(f"{t0 - start:.0f}s: {r.stderr.strip()}")
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
        assert not failures, (failures[:5], log.read_text()[-3000:])
        assert proc.poll() is None
        logs = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip().startswith("{")]
        assert logs  # TOKEND_LOG_FORMAT=json, as the image sets it
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
        shutil.rmtree(root, ignore_errors=True)
        assert code == 0


# -- Kubernetes manifests -----------------------------------------------------------------------------------------
def kustomize(folder: Path) -> list[dict[str, Any]]:
    """The objects `kustomize build folder` makes, for the features these manifests use: resources (files and
    folders) and JSON 6902 patches with a target. Real `kustomize build` is compared when it is on PATH."""
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        p = folder / res
        objects += kustomize(p) if p.is_dir() else [o for o in yaml.safe_load_all(p.read_text()) if o]
    for patch in k.get("patches", []):
        ops = yaml.safe_load((folder / patch["path"]).read_text())
        for o in objects:
            if all(
                o.get(f, {}).get("name") == v if f == "metadata" else o.get(f) == v
                for f, v in (("kind", patch["target"]["kind"]), ("metadata", patch["target"]["name"]))
            ):
                for op in ops:
                    _apply(o, op)
    return objects


def _apply(doc: dict[str, Any], op: dict[str, Any]) -> None:
    *parents, last = op["path"].strip("/").split("/")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if op["op"] == "add" and last == "-":
        node.append(copy.deepcopy(op["value"]))
    elif op["op"] in ("add", "replace"):
        node[int(last) if isinstance(node, list) else last] = copy.deepcopy(op["value"])
    else:
        raise AssertionError(f"unsupported op {op}")


KUBERNETES = "1.33.0"


@pytest.mark.parametrize("overlay", ["base", "overlays/pgbouncer"])
def test_manifests_are_valid_kubernetes(overlay: str) -> None:
    import kubernetes_validate

    objects = kustomize(REPO / "deploy" / "kubernetes" / overlay)
    assert {o["kind"] for o in objects} >= {"Deployment", "ServiceAccount", "ConfigMap"}
    for o in objects:
        kubernetes_validate.validate(o, KUBERNETES, strict=True)
    if shutil.which("kustomize"):
        built = subprocess.run(
            ["kustomize", "build", str(REPO / "deploy" / "kubernetes" / overlay)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert sorted(json.dumps(o, sort_keys=True) for o in yaml.safe_load_all(built) if o) == sorted(
            json.dumps(o, sort_keys=True) for o in objects
        )


def test_probes_match_the_config_they_ship_with(tmp_path: Path) -> None:
    from tokend import config

    objects = kustomize(REPO / "deploy" / "kubernetes" / "base")
    cm = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "tokend-config")
    path = tmp_path / "config.toml"
    path.write_text(cm["data"]["config.toml"])
    cfg = config.load(path)  # the shipped config is a valid tokend config
    assert cfg.observe is not None
    pod = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod["initContainers"] if c["name"] == "tokend"]
    assert sidecar["restartPolicy"] == "Always"
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports["observe"] == cfg.observe.port
    for probe, want in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert sidecar[probe]["httpGet"] == {"path": want, "port": "observe"}
    sc = sidecar["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in sidecar["volumeMounts"]}
    env_c, _ = containerfile()
    assert {"/etc/tokend", "/var/lib/tokend", "/shared"} <= mounts
    assert env_c["TOKEND_CONFIG"].startswith("/etc/tokend/") and env_c["PGPASSFILE"].startswith("/shared/")


# -- PgBouncer ----------------------------------------------------------------------------------------------------
def entry(value: str) -> Entry:
    return Entry(Target("db", "h.example", 5432, "appdb", "DBA Group", "me", ("pgbouncer",)), Token(value, 2e9, 0))


def test_pgbouncer_never_gets_a_cut_token(tmp_path: Path) -> None:
    # a stand-in for PgBouncer that SIGHUP ends (its default action, even when this run ignores SIGHUP: nohup)
    helper = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    (tmp_path / "pid").write_text(f"{helper.pid}\n")
    try:
        sink = PgbouncerSink({"path": str(tmp_path / "tokend.ini"), "pidfile": str(tmp_path / "pid")}, "own1")
        sink.sync([entry("eyJ" + "a" * 1500)])
        assert "password=eyJ" in (tmp_path / "tokend.ini").read_text()
        assert helper.wait(5) == -signal.SIGHUP  # PgBouncer was told to RELOAD
        with pytest.raises(SinkError, match=f"cuts passwords at {MAX_PASSWORD}"):
            sink.sync([entry("eyJ" + "a" * MAX_PASSWORD)])
        assert "a" * 1500 in (tmp_path / "tokend.ini").read_text()  # the previous file stays, nothing cut
    finally:
        helper.kill()
        helper.wait()


def pgbouncer(folder: Path, port: int, databases: str, tls: str) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "userlist.txt").write_text(f'"{GROUP}" ""\n')
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        f"[databases]\n{databases}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
        f"unix_socket_dir =\nauth_type = trust\nauth_file = {folder / 'userlist.txt'}\n"
        f"pidfile = {folder / 'pgbouncer.pid'}\nlogfile = {folder / 'pgbouncer.log'}\n"
        f"pool_mode = session\nserver_lifetime = 20\nserver_idle_timeout = 5\n{tls}"
    )
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        for f in folder.iterdir():
            shutil.chown(f, "postgres")
    cmd = ["pgbouncer", str(ini)]
    return subprocess.Popen(
        ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class AsPostgres:
    """tokend run as the user PgBouncer runs as (PgBouncer refuses root; the include file is 0600 and the proxy's
    socket folder 0700, so tokend and PgBouncer must be one user, as the README says). Not root: as we are."""

    def __init__(self, tmp_path: Path, em: Tenant) -> None:
        self.root = os.geteuid() == 0
        self.home = Path(tempfile.mkdtemp(prefix="pgh-"))  # short: Unix socket paths are limited
        (self.home / "run").mkdir(parents=True, mode=0o700)
        (self.home / "run").chmod(0o700)
        bundle = self.home / "bundle.pem"
        shutil.copy(em.bundle, bundle)
        self.env = {
            "PATH": os.environ["PATH"],
            "LANG": "C.UTF-8",
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.home / "run"),
            "REQUESTS_CA_BUNDLE": str(bundle),
            "TOKEND_TEST_SECRET": SECRET,
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_STATE_HOME": str(self.home / ".local/state"),
        }

    def own(self) -> None:
        if self.root:
            subprocess.run(["chown", "-R", "postgres", str(self.home)], check=True)
            # the product's Python (a venv over a Python under /root in CI) must be reachable for that user
            open_path_for_others(Path(os.path.realpath(PRODUCT_PYTHON)))
            for parent in self.home.parents:
                if parent == Path("/"):
                    break
                os.chmod(parent, os.stat(parent).st_mode | 0o011)

    def cmd(self, *args: str) -> list[str]:
        base = ["env", *(f"{k}={v}" for k, v in self.env.items()), TOKEND, *args]
        return ["runuser", "-u", "postgres", "--", *base] if self.root else base

    def status(self, cfg: Path) -> dict[str, Any] | None:
        r = subprocess.run(self.cmd("status", "--json", "--config", str(cfg)), capture_output=True, text=True)
        return json.loads(r.stdout) if r.returncode == 0 else None


@pytest.mark.slow
@pytest.mark.soak
def test_pgbouncer_both_routes_for_three_minutes(em: Tenant, postgres: Postgres, tmp_path: Path) -> None:
    """Debian's PgBouncer in front of the token-checking PostgreSQL, two ways: (1) the pgbouncer sink's include
    file with the token as password and TLS to the server, RELOADed at each new token; (2) PgBouncer → tokend's
    local proxy on its Unix socket, no password. Clients of both run a query every second for 3 minutes of 60-s
    tokens (server connections are recycled every 20 s, so new logins keep happening)."""
    if not shutil.which("pgbouncer"):
        pytest.fail("pgbouncer missing; tests/run.sh installs Debian's pgbouncer")
    em.emulator.directory.lifetime = 60
    me = AsPostgres(tmp_path, em)
    direct, proxied = me.home / "direct", me.home / "proxied"
    p1, p2 = free_port(), free_port()
    include = direct / "tokend.ini"
    cfg = me.home / "config.toml"
    cfg.write_text(
        sp_config(
            em,
            postgres.port,
            targets=(
                f'[targets.appdb]\nhost = "127.0.0.1"\nport = {postgres.port}\ndatabase = "appdb"\nuser = "{GROUP}"\n'
                f'identity = "sp"\nsinks = ["pgbouncer"]\nlisten = ["unix:6432"]\nsslrootcert = "{postgres.ca_cert}"\n'
            ),
            extra=f'[sinks.pgbouncer]\npath = "{include}"\npidfile = "{direct / "pgbouncer.pid"}"\n',
        )
    )
    direct.mkdir(parents=True)
    include.write_text("")  # PgBouncer wants the file it includes to exist; tokend fills it
    bouncer1 = pgbouncer(
        direct,
        p1,
        f"%include {include}",
        f"server_tls_sslmode = verify-full\nserver_tls_ca_file = {postgres.ca_cert}\n",
    )
    ini_before = (direct / "pgbouncer.ini").read_bytes()
    me.own()
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 - closed below
    d = subprocess.Popen(me.cmd("run", "--config", str(cfg)), stdout=log, stderr=subprocess.STDOUT)
    bouncer2 = None
    try:

        def up() -> dict[str, Any] | None:
            assert d.poll() is None, (tmp_path / "daemon.log").read_text()
            s = me.status(cfg)
            return s if s and s["targets"][0]["proxy"] else None

        status = wait_for(up, timeout=60, what="daemon and proxy")
        folder = status["targets"][0]["proxy"]["listen"][0]["host"]
        bouncer2 = pgbouncer(
            proxied,
            p2,
            f"appdb = host={folder} port=6432 dbname=appdb user='{GROUP}'",
            "server_tls_sslmode = disable\n",
        )
        wait_for(
            lambda: (direct / "pgbouncer.pid").exists() and (proxied / "pgbouncer.pid").exists(),
            what="both PgBouncers up",
        )
        failures: list[str] = []
        start, wall_start = time.monotonic(), time.time()
        while time.monotonic() - start < 180:
            t0 = time.monotonic()
            for port in (p1, p2):
                r = subprocess.run(
                    [
                        "psql",
                        f"host=127.0.0.1 port={port} dbname=appdb user='{GROUP}' sslmode=disable",
                        "-w",
                        "-Atc",
                        "select current_user",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                if r.stdout.strip() != GROUP:
                    failures.append(f"{t0 - start:.0f}s via {port}: {r.stderr.strip()}")
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
        assert not failures, failures[:5]
        tokens = {i["token"] for i in em.emulator.directory.issued if i["iat"] >= wall_start}  # iat: wall clock
        assert len(tokens) >= 5  # several rotations underneath
        reloads = (direct / "pgbouncer.log").read_text().count("got SIGHUP")
        status = me.status(cfg)
        assert status and status["targets"][0]["sinks"]["pgbouncer"]["state"] == "ok"
        assert reloads >= len(tokens) - 1, (reloads, len(tokens))  # a RELOAD per token written
        assert (direct / "pgbouncer.ini").read_bytes() == ini_before  # PgBouncer's own config untouched
    finally:
        d.terminate()
        d.wait(15)
        log.close()
        for b in (bouncer1, bouncer2):
            if b is not None:
                b.terminate()
                b.wait(10)
        shutil.rmtree(me.home, ignore_errors=True)
