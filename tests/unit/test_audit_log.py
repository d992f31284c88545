"""The proxy's audit log file: one JSON line per record, every file 0600 after rotations too, token-shaped text
scrubbed from a line (a client may send anything as its application_name)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tokend import logs, paths
from tokend.config import parse
from tokend.errors import ConfigError
from tokend.proxy.audit import Record

TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + "eyJhdWQiOiJodHRwczovL29zc3JkYm1zIn0" + "." + "s" * 300


def test_every_file_is_0600_after_rotations(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        audit = logs.AuditLog(tmp_path / "logs" / "tokend.audit.jsonl", max_bytes=600, backups=3)
        for n in range(12):
            audit.write(Record("db", "127.0.0.1:6432", pid=n, outcome="ok").line())
        audit.close()
    finally:
        os.umask(old)
    files = sorted((tmp_path / "logs").iterdir())
    assert [f.name for f in files] == [f"tokend.audit.jsonl{s}" for s in ("", ".1", ".2", ".3")]
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}
    for f in files:
        assert all(json.loads(line)["outcome"] == "ok" for line in f.read_text().splitlines())


def test_a_line_never_carries_a_token(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    audit = logs.AuditLog(path)
    audit.write(Record("db", "x", application_name=f"psql {TOKEN}", outcome=f"refused: {TOKEN}").line())
    audit.close()
    text = path.read_text()
    assert TOKEN not in text and "s" * 50 not in text
    line = json.loads(text)
    assert line["application_name"].startswith("psql ") and line["target"] == "db"


def test_the_audit_file_is_beside_the_log(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    assert logs.audit_file(cfg).parent == paths.log_file(cfg).parent
    assert logs.audit_file(cfg).name.endswith(".audit.jsonl")


@pytest.mark.portable
def test_proxy_audit_log_is_on_by_default_and_a_boolean() -> None:
    me = '[identities.me]\nsource = "azure-cli"\n'
    assert parse(me, Path("c.toml")).audit_log is True
    assert parse(me + "[proxy]\naudit_log = false\n", Path("c.toml")).audit_log is False
    with pytest.raises(ConfigError) as e:
        parse(me + '[proxy]\naudit_log = "yes"\n', Path("c.toml"))
    assert "proxy.audit_log" in str(e.value) and "true or false" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse(me + "[proxy]\nlog = true\n", Path("c.toml"))
    assert "proxy.log" in str(e.value)
