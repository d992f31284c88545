"""The plug-in tables: every row names a module that is there and does what the row says."""

from __future__ import annotations

import importlib
import re

import pytest

from tokend import kinds
from tokend.sinks import Sink

from support.product import REPO


@pytest.mark.parametrize("name", list(kinds.SOURCES))
def test_every_source_names_its_module_and_keys_of_its_own(name: str) -> None:
    row = kinds.SOURCES[name]
    assert row.name == name
    importlib.import_module(row.module)
    assert not row.keys & kinds.COMMON_IDENTITY_KEYS, name  # its own keys are beyond the common ones
    assert row.required <= row.keys | kinds.COMMON_IDENTITY_KEYS, name


@pytest.mark.parametrize("name", list(kinds.SINKS))
def test_every_sink_kind_names_a_sink_class_of_that_kind(name: str) -> None:
    module, _, cls = kinds.SINKS[name].factory.partition(":")
    sink_class = getattr(importlib.import_module(module), cls)
    assert issubclass(sink_class, Sink) and sink_class.kind == name


@pytest.mark.parametrize("name", list(kinds.CLIENTS))
def test_every_client_names_a_module_with_the_client_functions(name: str) -> None:
    row = kinds.CLIENTS[name]
    module = importlib.import_module(row.module)
    for function in ("setup", "undo", "places", "set_up"):
        assert callable(getattr(module, function)), (name, function)
    assert row.how.startswith(f"tokend clients {name}") and row.label and row.program


def test_people_sign_in_to_exactly_the_person_sources() -> None:
    assert kinds.person_sources() == ("azure-cli", "device-code", "browser")


def test_the_readmes_clients_table_says_what_the_client_table_says() -> None:
    """Each client's row in the README's "## Clients" table: how tokend serves it, and its one command."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Clients\n", 1)[1]
    table = section[section.index("\n|") :].strip("\n").split("\n\n", 1)[0]
    rows = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table.splitlines()]
    for row in kinds.CLIENTS.values():
        (cells,) = [r for r in rows if f"`tokend clients {row.name}" in r[2]]
        assert cells[1] == row.serves, row.name
        assert cells[2].replace("`", "") == row.how, row.name
