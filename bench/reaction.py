"""Reaction: a config edit → pgpass updated, `az logout` → its token gone, `az login` → pgpass updated (target ≤ 2 s
each), medians.

Run: .venv/bin/python bench/reaction.py [--runs 10]   (the second part needs the Azure CLI: tests/run.sh installs it)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from tokend.sinks.pgpass import parse

from _setup import RESOURCE, SECRET, az_login, bench_env, find_az, machine, running_daemon


def wait_line(pgpass, host: str, present: bool, timeout: float = 10) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            hosts = {ln[0] for ln in parse(pgpass.read_text())}
        except OSError:
            hosts = set()
        if (host in hosts) == present:
            return time.monotonic() - t0
        time.sleep(0.005)
    return float("inf")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=10)
    runs = p.parse_args().runs
    rows = []
    with bench_env() as b:
        base = b.sp_identity() + '[targets.db]\nhost = "db.example"\nuser = "DBA Group"\nidentity = "sp"\n'
        cfg = b.config(base)
        pgpass = b.home / ".pgpass"
        with running_daemon(b, cfg):
            edits = []
            for i in range(runs):
                cfg.write_text(base + f'[targets.e{i}]\nhost = "edit{i}.example"\nuser = "u"\nidentity = "sp"\n')
                edits.append(wait_line(pgpass, f"edit{i}.example", True))
        rows.append(("config edit → pgpass", statistics.median(edits), max(edits)))
        az = find_az()
        if az:
            az_login(b, az)
            cli = b.config(
                '[identities.cli]\nsource = "azure-cli"\n'
                '[targets.cli]\nhost = "cli.example"\nuser = "DBA Group"\nidentity = "cli"\n',
                "cli.toml",
            )
            env_path = b.home / "azbin"
            env_path.mkdir()
            (env_path / "az").symlink_to(az)
            b.env["PATH"] = f"{env_path}:{b.env['PATH']}"
            logins, logouts = [], []
            with running_daemon(b, cli):
                wait_line(pgpass, "cli.example", True)
                for _ in range(max(3, runs // 2)):
                    subprocess.run([az, "logout"], env=b.env, check=True, capture_output=True)
                    logouts.append(wait_line(pgpass, "cli.example", False))
                    t0 = time.monotonic()
                    subprocess.run(
                        [
                            az,
                            "login",
                            "--service-principal",
                            "-u",
                            b.app_id,
                            f"--password={SECRET}",
                            "--tenant",
                            b.emulator.directory.tenant_id,
                            "--allow-no-subscriptions",
                        ],
                        env=b.env,
                        check=True,
                        capture_output=True,
                    )
                    az_took = time.monotonic() - t0
                    after = wait_line(pgpass, "cli.example", True)
                    logins.append((after, az_took + after))
            rows.append(("az logout returned → token gone", statistics.median(logouts), max(logouts)))
            rows.append(
                ("az login returned → pgpass", statistics.median(a for a, _ in logins), max(a for a, _ in logins))
            )
            rows.append(
                ("  counting az login itself", statistics.median(w for _, w in logins), max(w for _, w in logins))
            )
    print(f"# reaction, {runs} runs ({machine()}); resource {RESOURCE}")
    print(f"{'event':<40} {'median s':>9} {'max s':>7}  target ≤ 2 s")
    for name, med, worst in rows:
        print(f"{name:<40} {med:>9.3f} {worst:>7.3f}")


if __name__ == "__main__":
    main()
