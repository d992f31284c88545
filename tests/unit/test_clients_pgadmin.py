"""What `tokend clients pgadmin` writes, in-process: PasswordExecExpiration from the refresh margin, the server-mode
entry for config_local.py, and the target `tokend token --from-pgadmin` picks from pgAdmin's variables (the
variables as pgadmin-org/pgadmin4 web/pgadmin/utils/passexec.py ServerPasswordExec sets them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokend import config
from tokend.clients import pgadmin
from tokend.errors import UsageError

CONFIG = """
[identities.me]
source = "azure-cli"

[identities.app]
source = "managed-identity"

[targets.prod]
host = "prod.example"
user = "DBA Group"
identity = "me"

[targets.reports]
host = "prod.example"
database = "reports"
user = "Readers"
identity = "app"
"""


@pytest.mark.parametrize(("margin", "seconds"), [(10, 3), (90, 30), (240, 80), (540, 180), (3600, 180)])
def test_expiration_is_a_third_of_the_margin_at_most_three_minutes(margin: float, seconds: int) -> None:
    assert pgadmin.expiration(margin) == seconds


def test_servers_follow_the_margin_and_server_mode_names_the_command(tmp_path: Path) -> None:
    cfg = config.parse(CONFIG, tmp_path / "config.toml")
    targets = list(cfg.targets.values())
    desktop = pgadmin.servers("o", targets, Path("/opt/tokend"), cfg.path, shared=False, margin=90)
    assert {s["PasswordExecExpiration"] for s in desktop.values()} == {30}
    assert all(s["PasswordExecCommand"].startswith("/opt/tokend token ") for s in desktop.values())
    named = pgadmin.servers("o", targets, Path("/opt/tokend"), cfg.path, shared=False, server_mode=True)
    assert {s["PasswordExecCommand"] for s in named.values()} == {pgadmin.COMMAND_NAME}
    scope: dict[str, object] = {}
    exec(pgadmin.config_local(Path("/opt/tokend"), cfg.path), scope)  # as pgAdmin imports config_local.py
    assert scope["SERVER_PASSEXEC_COMMANDS"] == {
        pgadmin.COMMAND_NAME: ["/opt/tokend", "token", "--from-pgadmin", "--config", str(cfg.path.absolute())]
    }
    json.dumps(named)  # servers.json is plain JSON


def env(
    host: str = "prod.example", port: str = "5432", user: str = "DBA Group", db: str = "postgres"
) -> dict[str, str]:
    return {
        "PGADMIN_PASSEXEC_HOST": host,
        "PGADMIN_PASSEXEC_PORT": port,
        "PGADMIN_PASSEXEC_USERNAME": user,
        "PGADMIN_PASSEXEC_DATABASE": db,
        "PGADMIN_PASSEXEC_PGADMIN_USER": "alice@example.com",
        "PGADMIN_PASSEXEC_AUTH_SOURCE": "internal",
    }


def test_from_pgadmin_matches_like_host_port_user(tmp_path: Path) -> None:
    cfg = config.parse(CONFIG, tmp_path / "config.toml")
    assert pgadmin.passexec_target(cfg, env()).name == "prod"  # database "*": any maintenance database
    assert pgadmin.passexec_target(cfg, env(user='"DBA Group"')).name == "prod"  # identifier-quoted, too
    assert pgadmin.passexec_target(cfg, env(user="Readers", db="reports")).name == "reports"
    with pytest.raises(UsageError, match="no target"):
        pgadmin.passexec_target(cfg, env(user="Readers", db="postgres"))  # its database is "reports" only
    with pytest.raises(UsageError, match="no target"):
        pgadmin.passexec_target(cfg, env(port="6543"))
    with pytest.raises(UsageError, match="PGADMIN_PASSEXEC_HOST, PGADMIN_PASSEXEC_USERNAME not set"):
        pgadmin.passexec_target(cfg, {"PGADMIN_PASSEXEC_PORT": "5432"})
