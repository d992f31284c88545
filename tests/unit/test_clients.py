"""Every GUI client of ``tokend.kinds.CLIENTS`` passes the client contract (support/contracts.py), in-process in a
temp HOME: install then remove gives the exact bytes and mode back, install twice changes nothing, the user's own
entries survive; and the dispatch through the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokend import clients, kinds
from tokend.clients import ads, dbeaver, vscode
from tokend.errors import UsageError

from support.contracts import CONFIG, ClientContract


class TestVscode(ClientContract):
    client = "vscode"

    def user_files(self, output: Path | None) -> dict[Path, bytes]:
        return {
            vscode.settings_path(): b'{\n  // mine\n  "editor.fontSize": 14,\n  "pgsql.connections": [\n'
            b'    {"id": "mine", "server": "mine.example", "profileName": "mine"}\n  ]\n}\n'
        }

    def users_entry(self) -> bytes:
        return b'"server": "mine.example"'

    def ours(self, name: str) -> bytes:
        return f'"{name} (tokend)"'.encode()


class TestDbeaver(ClientContract):
    client = "dbeaver"

    def user_files(self, output: Path | None) -> dict[Path, bytes]:
        return {
            dbeaver.data_sources(): b'{\n\t"folders": {},\n\t"connections": {\n\t\t"postgres-jdbc-mine": '
            b'{"provider": "postgresql", "configuration": {"host": "mine.example"}}\n\t}\n}'
        }

    def users_entry(self) -> bytes:
        return b'"host": "mine.example"'


class TestAds(ClientContract):
    client = "ads"

    def user_files(self, output: Path | None) -> dict[Path, bytes]:
        return {
            ads.settings_path(): b'{\r\n    "datasource.connections": [\r\n        {"id": "mine", '
            b'"options": {"host": "mine.example"}}\r\n    ],\r\n    "workbench.colorTheme": "Default Dark+"\r\n}\r\n'
        }

    def users_entry(self) -> bytes:
        return b'"host": "mine.example"'


class TestDatagrip(ClientContract):
    client = "datagrip"

    def output(self, tmp_path: Path) -> Path | None:
        return tmp_path / "project"

    def user_files(self, output: Path | None) -> dict[Path, bytes]:
        assert output is not None
        idea = output / ".idea"
        return {
            idea / "dataSources.xml": b'<?xml version="1.0" encoding="UTF-8"?>\n<project version="4">\n'
            b'  <component name="DataSourceManagerImpl" format="xml" multifile-model="true">\n'
            b'    <data-source source="LOCAL" name="mine" uuid="1111">\n'
            b"      <jdbc-url>jdbc:postgresql://mine.example:5432/postgres</jdbc-url>\n"
            b"    </data-source>\n  </component>\n</project>\n",
            idea / "dataSources.local.xml": b'<?xml version="1.0" encoding="UTF-8"?>\n<project version="4">\n'
            b'  <component name="dataSourceStorageLocal">\n    <data-source name="mine" uuid="1111">\n'
            b"      <user-name>mine.example</user-name>\n    </data-source>\n  </component>\n</project>\n",
        }

    def users_entry(self) -> bytes:
        return b"mine.example"

    def ours(self, name: str) -> bytes:
        return f'"{name} (tokend)"'.encode()


class TestPgadmin(ClientContract):
    client = "pgadmin"

    def output(self, tmp_path: Path) -> Path | None:
        return tmp_path / "servers.json"

    def user_files(self, output: Path | None) -> dict[Path, bytes]:
        assert output is not None
        return {output: b'{\n    "Servers": {\n        "1": {"Name": "mine", "Host": "mine.example"}\n    }\n}\n'}

    def users_entry(self) -> bytes:
        return b'"Host": "mine.example"'


def test_every_client_kind_has_a_contract_test() -> None:
    assert {c.client for c in (TestVscode, TestDbeaver, TestAds, TestDatagrip, TestPgadmin)} == set(kinds.CLIENTS)


def test_the_table_names_modules_that_set_up_and_undo() -> None:
    for row in kinds.CLIENTS.values():
        module = clients._module(row)
        assert callable(module.setup) and callable(module.undo), row.name
        assert row.edits_in_place != row.needs_output, row.name  # either the client's own file, or one you name
        assert bool(row.output) == row.needs_output, row.name


@pytest.mark.parametrize("client", ["datagrip", "pgadmin"])
def test_a_client_that_needs_output_prints_its_document_without_it(client: str, tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG)
    (document,) = clients.run(client, ["b"], cfg, None)
    assert "b.example" in document and "a.example" not in document
    assert not list(tmp_path.rglob("*.xml")) and not list(tmp_path.rglob("*.json"))
    with pytest.raises(UsageError, match=f"tokend clients remove {client} --output PATH"):
        list(clients.remove(client, [], cfg))


def test_an_unknown_client_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="use one of: vscode, dbeaver, datagrip, pgadmin, ads"):
        list(clients.run("toad", [], tmp_path / "config.toml", None))
    with pytest.raises(UsageError, match="unknown client 'toad'"):
        list(clients.remove("toad", [], tmp_path / "config.toml"))


def test_the_listing_has_psql_every_client_of_the_table_and_scripts(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG)
    owner = clients.paths.config_id(cfg)
    found = clients.detect(owner)
    assert [c.key for c in found] == ["", *kinds.CLIENTS, ""]
    assert [c.name for c in found[1:-1]] == [row.label for row in kinds.CLIENTS.values()]
    assert not any(c.set_up for c in found)
    with pytest.raises(UsageError, match=r"DBeaver is not installed here \(no `dbeaver` on PATH"):
        list(clients.run("dbeaver", [], cfg, None))  # nothing written for a client that is not here
    assert next(c for c in clients.detect(owner) if c.key == "dbeaver").found is None
    dbeaver.workspace().mkdir(parents=True)  # DBeaver's first start makes its workspace
    list(clients.run("dbeaver", [], cfg, None))
    dbeaver_row = next(c for c in clients.detect(owner) if c.key == "dbeaver")
    assert dbeaver_row.set_up is True and dbeaver_row.found == str(dbeaver.workspace())
    (listed,) = clients.listing(owner, as_json=True)
    assert {tuple(c) for c in json.loads(listed)} == {("name", "key", "found", "set_up", "how", "problem")}


def test_an_unreadable_settings_file_is_listed_and_then_named(tmp_path: Path) -> None:
    vscode.settings_path().parent.mkdir(parents=True)
    vscode.settings_path().write_text('{"pgsql.connections": {}}')
    lines = []
    with pytest.raises(UsageError, match=r"pgsql\.connections"):
        for line in clients.listing("o", as_json=False):
            lines.append(line)
    assert len(lines) == 7 and "unreadable" in next(ln for ln in lines if ln.startswith("VS Code"))
