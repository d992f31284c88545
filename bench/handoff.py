"""Hand-off: how long a script waits for a token, whole process, median of N runs.

  tokend token (warm daemon)                 with XDG_RUNTIME_DIR set
  tokend token, no XDG_RUNTIME_DIR           (su -, SSH, containers: the daemon listens in platformdirs' fallback)
  tokend token --host … --port … --user "…"  (the shared pgAdmin form: the daemon picks the target)
                               vs   az account get-access-token (real Azure CLI, emulator), in the same run
                               vs   a fresh azure-identity acquisition in a new process
Each tokend row should be at least 20× faster than az (issue 22). Also prints the daemon's resident memory.
Run: .venv/bin/python bench/handoff.py [--runs 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from _setup import (
    RESOURCE,
    az_login,
    bench_env,
    find_az,
    machine,
    median_ms,
    released_tokend,
    rss_mb,
    running_daemon,
    time_command,
)

FRESH = """
import os
from azure.identity import ClientSecretCredential
c = ClientSecretCredential(os.environ["T"], os.environ["C"], os.environ["BENCH_SECRET"], authority=os.environ["A"],
                           disable_instance_discovery=True)
print(c.get_token_info("https://ossrdbms-aad.database.windows.net/.default").token[:4])
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=30)
    runs = p.parse_args().runs
    with bench_env() as b:
        target = '[targets.db]\nhost = "db.example"\nuser = "DBA Group"\nidentity = "sp"\n'
        cfg = b.config(b.sp_identity() + target)
        # the same daemon without XDG_RUNTIME_DIR (its own config, so the two daemons never share a lock)
        tmp = b.home / "tmp"
        tmp.mkdir(mode=0o700)
        no_xdg = {k: v for k, v in b.env.items() if k != "XDG_RUNTIME_DIR"}
        no_xdg.update(TMPDIR=str(tmp))
        plain = dataclasses.replace(b, env=no_xdg)
        cfg2 = b.config(b.sp_identity() + target, name="no-xdg.toml")
        pgadmin = ["--host", "db.example", "--port", "5432", "--user", '"DBA Group"']
        rows = []
        with (
            running_daemon(b, cfg) as proc,
            running_daemon(plain, cfg2),
            released_tokend() as released,
        ):
            cases = [
                ("tokend token (warm daemon)", [released, "token", "--config", str(cfg)], b.env),
                ("tokend token, no XDG_RUNTIME_DIR", [released, "token", "--config", str(cfg2)], no_xdg),
                ('tokend token --host … --user "…"', [released, "token", *pgadmin, "--config", str(cfg)], b.env),
            ]
            for name, cmd, env in cases:
                time_command(cmd, env, 3)  # warm the page cache
                rows.append((name, median_ms(time_command(cmd, env, runs))))
            rss = rss_mb(proc.pid)
        az = find_az()
        if az:
            az_login(b, az)
            az_runs = time_command(
                [az, "account", "get-access-token", "--resource", RESOURCE], b.env, max(5, runs // 3)
            )
            rows.append(("az account get-access-token", median_ms(az_runs)))
        env = dict(b.env, T=b.emulator.directory.tenant_id, C=b.app_id, A=b.emulator.url)
        fresh = time_command([sys.executable, "-c", FRESH], env, max(5, runs // 3))
        rows.append(("fresh azure-identity process", median_ms(fresh)))
    base = rows[0][1]
    az_ms = next((ms for name, ms in rows if name.startswith("az ")), None)
    print(f"# hand-off, whole-process medians ({machine()})")
    print(f"{'command':<36} {'median ms':>10} {'× tokend':>9} {'az ÷ this':>10}")
    for name, ms in rows:
        print(f"{name:<36} {ms:>10.1f} {ms / base:>9.1f} {az_ms / ms if az_ms else float('nan'):>10.1f}")
    if az_ms:
        slow = [name for name, ms in rows[:3] if az_ms / ms < 20]
        print("\nevery tokend form ≥ 20× faster than az: " + ("yes" if not slow else f"NO ({', '.join(slow)})"))
    print(f"\ndaemon resident memory: {rss:.1f} MB (one identity, one target)")


if __name__ == "__main__":
    main()
