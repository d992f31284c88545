"""The plug-in tables: every row names a module that is there and does what the row says."""

from __future__ import annotations

import importlib

import pytest

from tokend import kinds
from tokend.sinks import Sink


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
