"""Hand-off: how long a script waits for a token, whole process, median of N runs.

  tokend token (warm daemon)   vs   az account get-access-token (real Azure CLI, emulator)
                               vs   a fresh azure-identity acquisition in a new process
Also prints the daemon's resident memory. Run: .venv/bin/python bench/handoff.py [--runs 30]
"""

from __future__ import annotations

import argparse
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
        cfg = b.config(b.sp_identity() + '[targets.db]\nhost = "db.example"\nuser = "DBA Group"\nidentity = "sp"\n')
        rows = []
        with running_daemon(b, cfg) as proc, released_tokend() as released:
            time_command([released, "token", "--config", str(cfg)], b.env, 3)  # warm the page cache
            tokend = time_command([released, "token", "--config", str(cfg)], b.env, runs)
            rows.append(("tokend token (warm daemon)", median_ms(tokend)))
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
    print(f"# hand-off, whole-process medians ({machine()})")
    print(f"{'command':<34} {'median ms':>10} {'× tokend':>9}")
    for name, ms in rows:
        print(f"{name:<34} {ms:>10.1f} {ms / base:>9.1f}")
    print(f"\ndaemon resident memory: {rss:.1f} MB (one identity, one target)")


if __name__ == "__main__":
    main()
