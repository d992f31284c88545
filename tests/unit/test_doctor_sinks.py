"""doctor walks every sink kind of the table and prints what each sink says of itself: no sink knowledge in
doctor.py. In-process, with no daemon (``reported`` None)."""

from __future__ import annotations

from pathlib import Path

from tokend import config, doctor

CONFIG = """[identities.me]
source = "azure-cli"

[targets.db]
host = "h.example"
user = "DBA Group"
identity = "me"
sinks = ["pgpass", "pg_service"]

[sinks.pgpass]
path = "{folder}/pgpass"

[sinks.pg_service]
path = "{folder}/missing/pg_service.conf"
"""


def test_doctor_says_what_each_used_sink_says_of_itself(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(folder=tmp_path))
    cfg = config.load(path)
    found = {c.name: c for c in doctor._sinks(cfg, None)}
    assert list(found) == ["pgpass", "pg_service"]  # the table's order; keychain and pgbouncer unused: nothing
    assert found["pgpass"].status == "fail" and "start the daemon" in found["pgpass"].fix
    assert found["pg_service"].status == "fail" and "does not exist" in found["pg_service"].evidence
    assert doctor.as_json(list(found.values()))["ok"] is False
