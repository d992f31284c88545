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
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokend.emulator.postgres import Postgres
from tokend.errors import SinkError
from tokend.sinks.pgbouncer import MAX_PASSWORD, PgbouncerSink

from support.builders import GROUP, SECRET, entry, sp_config
from support.net import free_port
from support.procs import stand_in
from support.product import REPO, TOKEND, tokend
from support.tenant import Tenant
from support.users import open_path_for_others, open_product_for_others
from support.waits import wait_for


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
    # writes are counted for the sinks the config uses (pgpass), not for every kind tokend knows (issue 22)
    assert {s.labels["sink"] for s in families["tokend_sink_writes"].samples} == {"pgpass"}
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


def test_pgbouncer_never_gets_a_cut_token(tmp_path: Path) -> None:
    helper = stand_in(tmp_path)
    (tmp_path / "pid").write_text(f"{helper.pid}\n")
    try:
        sink = PgbouncerSink({"path": str(tmp_path / "tokend.ini"), "pidfile": str(tmp_path / "pid")}, "own1")
        sink.sync([entry(value="eyJ" + "a" * 1500, database="appdb", sinks=("pgbouncer",))])
        assert "password=eyJ" in (tmp_path / "tokend.ini").read_text()
        assert helper.wait(5) == -signal.SIGHUP  # PgBouncer was told to RELOAD
        with pytest.raises(SinkError, match=f"cuts passwords at {MAX_PASSWORD}"):
            sink.sync([entry(value="eyJ" + "a" * MAX_PASSWORD, database="appdb", sinks=("pgbouncer",))])
        assert "a" * 1500 in (tmp_path / "tokend.ini").read_text()  # the previous file stays, nothing cut
    finally:
        helper.kill()
        helper.wait()


def sink_config(em: Tenant, pg: Postgres, include: Path, pidfile: Path) -> str:
    return sp_config(
        em,
        pg.port,
        targets=(
            f'[targets.appdb]\nhost = "127.0.0.1"\nport = {pg.port}\ndatabase = "appdb"\nuser = "{GROUP}"\n'
            'identity = "sp"\nsinks = ["pgbouncer"]\n'
        ),
        extra=f'[sinks.pgbouncer]\npath = "{include}"\npidfile = "{pidfile}"\n',
    )


@pytest.mark.parametrize("content", ["-1", "0", "1", "", "4294967297", "12 13"])
def test_a_pidfile_that_names_no_single_process_signals_nothing(
    em: Tenant, postgres: Postgres, write_config, tmp_path: Path, content: str
) -> None:
    """-1 is every process tokend may signal (every process, as root), 0 its own process group, 1 init. tokend runs
    in a PID namespace and a session of its own, so that even a tokend that sent the signal reaches only the box:
    its init (a shell that records a SIGHUP) and a sleep that one ends."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a PID namespace needs root and unshare (CI has both)")
    box = tmp_path / "box"
    box.mkdir()
    (box / "pgbouncer.pid").write_text(content)
    cfg = write_config(sink_config(em, postgres, box / "tokend.ini", box / "pgbouncer.pid"))
    script = (
        f"trap 'echo hup >> {box}/hup' HUP; sleep 120 & s=$!; "
        f"{TOKEND} run --once --config {cfg} 2> {box}/err; echo $? > {box}/rc; "
        f"kill -0 $s && echo alive > {box}/alive; kill $s"
    )
    subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
        start_new_session=True,
        check=True,
        timeout=60,
    )
    err = (box / "err").read_text()
    assert (box / "rc").read_text().strip() == "1" and len(err.strip().splitlines()) == 1, err
    assert "not PgBouncer's pid (a number above 1)" in err and "[sinks.pgbouncer] pidfile" in err, err
    assert (box / "alive").exists() and not (box / "hup").exists()


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("not-pgbouncer", "'sleep', not PgBouncer"),
        ("their-process", "is a process of another user (uid"),
        ("their-pidfile", "is writable by other users, so another user could swap the file"),
        ("their-link", "is a symlink owned by another user"),
        ("open-folder", "is writable by other users and not sticky"),
    ],
)
def test_the_reload_signal_goes_only_to_your_pgbouncer_named_by_your_pidfile(
    em: Tenant, postgres: Postgres, write_config, tmp_path: Path, other_user, case: str, why: str
) -> None:
    from support.users import OTHER_USER

    mine, shared, wide = tmp_path / "mine", tmp_path / "shared", tmp_path / "wide"
    for folder, mode in ((mine, 0o700), (shared, 0o1777), (wide, 0o777)):
        folder.mkdir()
        folder.chmod(mode)
    open_path_for_others(shared / "x")
    if case == "not-pgbouncer":
        victim = subprocess.Popen(["sleep", "120"], preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    else:
        victim = stand_in(tmp_path, OTHER_USER if case == "their-process" else None)
    try:
        pidfile = {"their-pidfile": shared / "pgbouncer.pid", "their-link": shared / "link", "open-folder": wide}.get(
            case, mine
        )
        if pidfile in (mine, wide):
            pidfile = pidfile / "pgbouncer.pid"
            pidfile.write_text(f"{victim.pid}\n")
        elif case == "their-pidfile":
            other_user("sh", "-c", f"echo {victim.pid} > {pidfile}")
        else:
            (mine / "pgbouncer.pid").write_text(f"{victim.pid}\n")
            other_user("ln", "-s", str(mine / "pgbouncer.pid"), str(pidfile))
        cfg = write_config(sink_config(em, postgres, mine / "tokend.ini", pidfile))
        r = tokend("run", "--once", "--config", str(cfg))
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("tokend: sink pgbouncer: "), r.stderr
        assert why in lines[0] and "Traceback" not in r.stderr
        assert victim.poll() is None  # not signalled
    finally:
        victim.kill()
        victim.wait()


def readme_pgbouncer_ini() -> str:
    """The README's PgBouncer recipe (route 1, PgBouncer → tokend's proxy), exactly as printed there."""
    readme = (REPO / "README.md").read_text()
    rest = readme[readme.index("1. **PgBouncer → tokend's proxy**") :]
    start = rest.index("```ini\n") + len("```ini\n")
    return textwrap.dedent(rest[start : rest.index("```", start)])


def listening(ini: str) -> list[str]:
    """Where a PgBouncer with this ini takes clients (its defaults for what the ini leaves out), as libpq hosts."""
    section = ini.split("[pgbouncer]", 1)[1]
    keys = dict((k.strip(), v.strip()) for k, _, v in (ln.partition("=") for ln in section.splitlines() if "=" in ln))
    port = keys.get("listen_port", "6432")
    hosts = [a.strip().replace("*", "127.0.0.1") for a in keys.get("listen_addr", "").split(",") if a.strip()]
    hosts += [keys.get("unix_socket_dir", "/tmp")] if keys.get("unix_socket_dir", "/tmp") else []
    return [f"host={h} port={port}" for h in hosts]


def pgbouncer(
    folder: Path, proxy: str = "", databases: str | None = None, tls: str = ""
) -> tuple[subprocess.Popen[bytes], str]:
    """Debian's PgBouncer run with the README's recipe, ``folder`` as its ~/.pgbouncer (0700), ``proxy`` the
    proxy's socket folder; or, for the pgbouncer sink, ``databases`` (the %include line) and ``tls`` (to the server)
    in place of the proxy's entry and its TLS line. Added for the test: pidfile, logfile, and server connections
    recycled every 20 s, so new logins keep happening. Returns, once its pidfile is there, the process and the ini
    (``folder`` and what is in it must already be readable by the user it runs as: ``AsPostgres.own`` first)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ini = readme_pgbouncer_ini().replace("/home/you/.pgbouncer", str(folder))
    ini = ini.replace("/run/user/1000/tokend/<config id>", proxy)
    if databases is not None:
        ini = re.sub(r"(?m)^appdb = .*$", databases, ini).replace("server_tls_sslmode = disable\n", tls)
    ini += (
        f"pidfile = {folder / 'pgbouncer.pid'}\nlogfile = {folder / 'pgbouncer.log'}\n"
        "pool_mode = session\nserver_lifetime = 20\nserver_idle_timeout = 5\n"
    )
    (folder / "userlist.txt").write_text(f'"{GROUP}" ""\n')
    (folder / "pgbouncer.ini").write_text(ini)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        for f in folder.iterdir():
            shutil.chown(f, "postgres")
    cmd = ["pgbouncer", str(folder / "pgbouncer.ini")]
    with open(folder / "pgbouncer.stderr", "wb") as err:
        proc = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd, stdout=err, stderr=err
        )

    def up() -> bool:
        assert proc.poll() is None, f"PgBouncer exited {proc.returncode}: {(folder / 'pgbouncer.stderr').read_text()}"
        return (folder / "pgbouncer.pid").exists()

    wait_for(up, what="PgBouncer up")
    return proc, ini


def through(place: Path | str, *run_as: str) -> subprocess.CompletedProcess[str]:
    """``select current_user`` through the PgBouncer at ``place`` (libpq's host and port; a folder: its socket)."""
    where = f"host={place} port=6432" if isinstance(place, Path) else place
    return subprocess.run(
        [
            *run_as,
            "psql",
            f"{where} dbname=appdb user='{GROUP}' connect_timeout=5",
            "-w",
            "-Atc",
            "select current_user",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
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
            open_product_for_others()
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


def proxy_config(em: Tenant, pg: Postgres, sinks: str = "[]", extra: str = "") -> str:
    """The target the README's recipe names: appdb as the group, its proxy on the Unix socket port 5432."""
    return sp_config(
        em,
        pg.port,
        targets=(
            f'[targets.appdb]\nhost = "127.0.0.1"\nport = {pg.port}\ndatabase = "appdb"\nuser = "{GROUP}"\n'
            f'identity = "sp"\nsinks = {sinks}\nlisten = ["unix:5432"]\nsslrootcert = "{pg.ca_cert}"\n'
        ),
        extra=extra,
    )


def test_the_readme_pgbouncer_recipe_serves_its_user_and_no_other(
    em: Tenant, postgres: Postgres, tmp_path: Path, other_user
) -> None:
    """The README's recipe as written: PgBouncer → tokend's proxy, trust for PgBouncer's clients. Its user logs in as
    the group; another local user gets nowhere, wherever this PgBouncer listens (the old recipe left PgBouncer's
    default socket folder, /tmp, open to every local user)."""
    from support.users import OTHER_USER

    me = AsPostgres(tmp_path, em)
    cfg = me.home / "config.toml"
    cfg.write_text(proxy_config(em, postgres))
    me.own()
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 - closed below
    d = subprocess.Popen(me.cmd("run", "--config", str(cfg)), stdout=log, stderr=subprocess.STDOUT)
    bouncer = None
    try:
        status = wait_for(lambda: (s := me.status(cfg)) and s["targets"][0]["proxy"] and s, timeout=60, what="proxy")
        proxy = status["targets"][0]["proxy"]["listen"][0]["host"]
        folder = me.home / ".pgbouncer"
        bouncer, ini = pgbouncer(folder, proxy)
        places = listening(ini)
        r = through(places[0], "runuser", "-u", "postgres", "--")
        assert r.stdout.strip() == GROUP, r.stderr
        for place in places:
            r = through(place, "runuser", "-u", OTHER_USER, "--")
            assert r.returncode != 0 and r.stdout == "" and "Permission denied" in r.stderr, (place, r.stderr)
        assert places == [f"host={folder} port=6432"]  # a socket in the user's 0700 folder, no TCP
    finally:
        d.terminate()
        d.wait(15)
        log.close()
        if bouncer is not None:
            bouncer.terminate()
            bouncer.wait(10)
        shutil.rmtree(me.home, ignore_errors=True)


def test_the_real_pgbouncer_gets_its_reload_from_the_sink(em: Tenant, postgres: Postgres, tmp_path: Path) -> None:
    """Debian's PgBouncer, its pidfile in its own folder: the pgbouncer sink writes the include file and PgBouncer
    RELOADs (its log says so) and logs in with the token."""
    me = AsPostgres(tmp_path, em)
    folder = me.home / ".pgbouncer"
    include = folder / "tokend.ini"
    cfg = me.home / "config.toml"
    cfg.write_text(sink_config(em, postgres, include, folder / "pgbouncer.pid"))
    folder.mkdir()
    include.write_text("")  # PgBouncer wants the file it includes to exist; tokend fills it
    me.own()
    bouncer, _ini = pgbouncer(
        folder,
        "",
        f"%include {include}",
        f"server_tls_sslmode = verify-full\nserver_tls_ca_file = {postgres.ca_cert}\n",
    )
    try:
        r = subprocess.run(me.cmd("run", "--once", "--config", str(cfg)), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: "got SIGHUP" in (folder / "pgbouncer.log").read_text(), what="PgBouncer's RELOAD")
        r = through(folder)
        assert r.stdout.strip() == GROUP, r.stderr
    finally:
        bouncer.terminate()
        bouncer.wait(10)
        shutil.rmtree(me.home, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.soak
def test_pgbouncer_both_routes_for_three_minutes(em: Tenant, postgres: Postgres, tmp_path: Path) -> None:
    """Debian's PgBouncer in front of the token-checking PostgreSQL, two ways, each with the README's recipe: (1) the
    pgbouncer sink's include file with the token as password and TLS to the server, RELOADed at each new token; (2)
    PgBouncer → tokend's local proxy on its Unix socket, no password. Clients of both run a query every second for 3
    minutes of 60-s tokens (server connections are recycled every 20 s, so new logins keep happening)."""
    if not shutil.which("pgbouncer"):
        pytest.fail("pgbouncer missing; tests/run.sh installs Debian's pgbouncer")
    em.emulator.directory.lifetime = 60
    me = AsPostgres(tmp_path, em)
    direct, proxied = me.home / "direct", me.home / "proxied"
    include = direct / "tokend.ini"
    cfg = me.home / "config.toml"
    cfg.write_text(
        proxy_config(
            em,
            postgres,
            sinks='["pgbouncer"]',
            extra=f'[sinks.pgbouncer]\npath = "{include}"\npidfile = "{direct / "pgbouncer.pid"}"\n',
        )
    )
    direct.mkdir(parents=True)
    include.write_text("")  # PgBouncer wants the file it includes to exist; tokend fills it
    me.own()
    bouncer1, _ini = pgbouncer(
        direct,
        "",
        f"%include {include}",
        f"server_tls_sslmode = verify-full\nserver_tls_ca_file = {postgres.ca_cert}\n",
    )
    ini_before = (direct / "pgbouncer.ini").read_bytes()
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 - closed below
    d = subprocess.Popen(me.cmd("run", "--config", str(cfg)), stdout=log, stderr=subprocess.STDOUT)
    bouncer2 = None
    try:

        def up() -> dict[str, Any] | None:
            assert d.poll() is None, (tmp_path / "daemon.log").read_text()
            s = me.status(cfg)
            return s if s and s["targets"][0]["proxy"] else None

        status = wait_for(up, timeout=60, what="daemon and proxy")
        bouncer2, _ini = pgbouncer(proxied, status["targets"][0]["proxy"]["listen"][0]["host"])
        failures: list[str] = []
        start, wall_start = time.monotonic(), time.time()
        while time.monotonic() - start < 180:
            t0 = time.monotonic()
            for folder in (direct, proxied):
                r = through(folder)
                if r.stdout.strip() != GROUP:
                    failures.append(f"{t0 - start:.0f}s via {folder.name}: {r.stderr.strip()}")
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
