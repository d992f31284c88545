"""Each client module's own rules, in-process: what a target must have for that client, and the names tokend
knows its entries by again (the contract suite in test_clients.py covers install and remove)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokend.clients import ads, datagrip, dbeaver, pgadmin, vscode
from tokend.config import Listen, Target
from tokend.errors import UsageError

from support.builders import GROUP, target


def with_listen(t: Target, *addresses: Listen) -> Target:
    return Target(t.name, t.host, t.port, t.database, t.user, t.identity, t.sinks, listen=addresses)


def test_vscode_needs_a_loopback_tcp_listener() -> None:
    with pytest.raises(UsageError, match=r'listen = \["127.0.0.1:6432"\]'):
        vscode.profile("o", target())
    profile = vscode.profile("o", with_listen(target(), Listen(False, "127.0.0.1", 6543)))
    assert (profile["server"], profile["port"], profile["user"]) == ("127.0.0.1", "6543", GROUP)
    assert profile["id"] == vscode.profile_id("o", target().name) and profile["password"] == ""


def test_pgpass_clients_need_the_pgpass_sink() -> None:
    for client in (dbeaver.connection, lambda t: datagrip.elements("o", t)):
        with pytest.raises(UsageError, match='add "pgpass" to sinks'):
            client(target(sinks=("keychain",)))


def test_pgadmin_keys_never_hold_an_underscore_and_commands_name_the_config(tmp_path: Path) -> None:
    assert pgadmin.key("o", "my_db") == "tokend-o-my~db"
    cfg = tmp_path / "config.toml"
    one = pgadmin.command(Path("/bin/tokend"), cfg, target("prod"))
    shared = pgadmin.command(Path("/bin/tokend"), cfg, None)
    assert one.split()[:3] == ["/bin/tokend", "token", "prod"] and str(cfg.absolute()) in one
    assert "--host %HOSTNAME% --port %PORT% --user %USERNAME%" in shared
    servers = pgadmin.servers("o", [target("a"), target("b")], Path("/bin/tokend"), cfg, shared=True)
    assert list(servers) == ["tokend-o-a", "tokend-o-b"]
    assert all(s["PasswordExecExpiration"] == pgadmin.expiration(240.0) for s in servers.values())
    text = pgadmin.update("", servers)
    assert json.loads(text) == {"Servers": servers}
    assert pgadmin.remove(text, "o", ["a"]).count("tokend-o-") == 1


def test_datagrip_ids_end_with_the_config_id_and_remove_takes_only_those() -> None:
    uid = datagrip.data_source_id("abcd1234", "prod")
    assert uid.endswith("abcd1234") and uid == datagrip.data_source_id("abcd1234", "prod")
    shared, _local = datagrip.documents("abcd1234", [target("prod"), target("qa")])
    left = datagrip.without(shared, "abcd1234", ["prod"])
    assert datagrip.data_source_id("abcd1234", "qa") in left and uid not in left
    assert "prod (tokend)" not in datagrip.without(shared, "abcd1234")


def test_ads_names_a_saved_password_as_sqltoolsservice_does() -> None:
    t = Target("db", "h.example", 5432, "*", GROUP, "me", ("pgpass",))
    assert ads.credential_id(t).endswith(f"|dbname:postgres|host:h.example|hostaddr:|port:5432|user:{GROUP}")
    assert ads.profile("o", t)["options"]["password"] == ""
