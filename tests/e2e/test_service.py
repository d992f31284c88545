"""Login services (templates checked by the real tools that exist here), purge, log files, and the installer."""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tokend import paths, service
from tokend.emulator.postgres import Postgres

from support.builders import sp_config
from support.product import TOKEND, tokend
from support.tenant import Tenant
from support.waits import wait_for

REPO = Path(__file__).resolve().parent.parent
NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if not shutil.which("systemd-analyze"):
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze missing; tests/run.sh installs Debian's systemd")
        pytest.skip("systemd-analyze not installed")
    config = tmp_path / "my config" / "config.toml"
    r = service.render_systemd(Path(TOKEND), config)
    assert r.path.name.startswith("tokend-") and r.path.parent.name == "user"
    unit = tmp_path / r.path.name
    unit.write_text(r.text)
    check = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert unit.name not in check.stderr, check.stderr  # no warnings about our unit either
    assert f'ExecStart={TOKEND} run --config "{config}"' in r.text
    assert "Type=notify" in r.text and "Restart=on-failure" in r.text
    assert f"EnvironmentFile=-{config.parent / 'tokend.env'}\n" in r.text  # optional: `-`
    # and a broken unit is caught by the same check (so the check means something)
    bad = tmp_path / "bad.service"
    bad.write_text(r.text.replace(f"ExecStart={TOKEND}", "ExecStart=tokend-relative"))
    assert subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True).returncode != 0


def test_launchd_plist_has_what_launchd_needs(home: Path, tmp_path: Path) -> None:
    r = service.render_launchd(Path("/Users/me/.local/bin/tokend"), tmp_path / "a&b" / "config.toml")
    plist = plistlib.loads(r.text.encode())
    assert plist["Label"].startswith("org.tokend.tokend")
    assert plist["ProgramArguments"] == [
        "/Users/me/.local/bin/tokend",
        "run",
        "--config",
        str(tmp_path / "a&b" / "config.toml"),
    ]
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["StandardErrorPath"].startswith(str(home)) and plist["EnvironmentVariables"]["TOKEND_LOG_STDERR"]
    assert r.path.parent == home / "Library" / "LaunchAgents" and r.path.name == f"{plist['Label']}.plist"
    assert f"{tmp_path / 'a&amp;b' / 'tokend.env'}, read by `tokend run`" in r.text  # its environment's one place


def test_windows_task_xml_has_logon_trigger_and_restart(tmp_path: Path) -> None:
    r = service.render_task(Path("C:/tokend/tokend.exe"), tmp_path / "config.toml", user="ME")
    f = tmp_path / "task.xml"
    f.write_text(r.text, encoding="utf-16")  # schtasks wants UTF-16, as declared
    root = ET.parse(f).getroot()
    trigger = root.find("t:Triggers/t:LogonTrigger", NS)
    assert trigger is not None and trigger.find("t:UserId", NS).text == "ME"
    settings = root.find("t:Settings", NS)
    assert settings.find("t:RestartOnFailure/t:Count", NS).text == "999"
    assert settings.find("t:RestartOnFailure/t:Interval", NS).text == "PT1M"
    assert settings.find("t:Hidden", NS).text == "true"
    assert settings.find("t:ExecutionTimeLimit", NS).text == "PT0S"
    exec_ = root.find("t:Actions/t:Exec", NS)
    assert "-m tokend run --config" in exec_.find("t:Arguments", NS).text
    assert f"{tmp_path / 'tokend.env'}, read by `tokend run`" in r.text  # its environment's one place


def test_install_without_user_systemd_says_what_to_do(home: Path, write_config) -> None:
    cfg = write_config('[identities.me]\nsource = "azure-cli"\n')
    r = tokend("service", "install", "--config", str(cfg))
    assert r.returncode == 1
    line = r.stderr.strip()
    assert "no user systemd" in line and f"{TOKEND} run --config {cfg}" in line and "Traceback" not in line
    assert not (home / ".config" / "systemd").exists()


def test_uninstall_purge_leaves_only_the_users_entries(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, home: Path
) -> None:
    mine = "# my servers\nlegacy:5432:*:bob:hunter2\n"
    pgpass.write_text(mine)
    cfg = write_config(sp_config(em, postgres.port))
    assert tokend("run", "--once", "--config", str(cfg)).returncode == 0
    assert pgpass.read_text() != mine
    state = home / ".local" / "state" / "tokend" / paths.config_id(cfg)
    state.mkdir(parents=True, exist_ok=True)
    (state / "keychain.json").write_text("{}")
    r = tokend("service", "uninstall", "--purge", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert pgpass.read_text() == mine
    assert not state.exists() and cfg.exists()
    assert state.parent.exists()  # tokend's own folder (other configs' state, maybe the installation) stays


def test_purge_reports_only_what_it_removed_and_leaves_no_empty_service_file(
    em: Tenant, postgres: Postgres, pgpass: Path, write_config, home: Path
) -> None:
    """No keychain here, no PgBouncer path set: nothing of this config's was there, so nothing is reported; the
    ~/.pg_service.conf tokend made for its block goes with the block (no 0-byte file left)."""
    service_file = home / ".pg_service.conf"
    pgpass.write_text("legacy:5432:*:bob:hunter2\n")
    pgpass.chmod(0o600)
    cfg = write_config(
        sp_config(em, postgres.port).replace('identity = "sp"\n', 'identity = "sp"\nsinks = ["pgpass", "pg_service"]\n')
    )
    assert tokend("run", "--once", "--config", str(cfg)).returncode == 0
    assert service_file.exists() and pgpass.exists()
    r = tokend("service", "uninstall", "--purge", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "fail.Keyring" not in r.stdout and "keychain" not in r.stdout, r.stdout
    assert "no path set" not in r.stdout and "pgbouncer" not in r.stdout, r.stdout
    assert f"removed this config's entries from {pgpass}" in r.stdout, r.stdout
    assert f"removed {service_file}" in r.stdout and not service_file.exists(), r.stdout
    assert pgpass.read_text() == "legacy:5432:*:bob:hunter2\n"


def test_daemon_log_file_rotates_in_the_log_folder(
    em: Tenant, postgres: Postgres, write_config, daemon, home: Path
) -> None:
    cfg = write_config(sp_config(em, postgres.port))
    d = daemon(cfg)
    d.wait_ready()
    log = paths.log_file(cfg)
    assert log.parent == home / ".local" / "state" / "tokend" / "log" and log.name.startswith("tokend-")
    wait_for(lambda: log.exists() and "tokend running" in log.read_text(), what="log file written")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    shown = tokend("service", "logs", "--config", str(cfg))
    assert shown.returncode == 0 and "tokend running" in shown.stdout
