"""The plug-in tables: every row names a module that is there and does what the row says; the identity-source table
(``kinds.SOURCES``) also against config validation, which takes exactly the keys the row lists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from tokend import config, kinds
from tokend.errors import ConfigError
from tokend.kinds import COMMON_IDENTITY_KEYS, SOURCES, SourceKind, person_sources
from tokend.sinks import Sink

from support.product import REPO

pytestmark = pytest.mark.portable  # runs on Linux, macOS and Windows (.github/workflows/ci.yml)

CONFIG = Path("/c/config.toml")
VALUES = {  # a valid value for every key a source may take
    "tenant_id": "contoso.onmicrosoft.com",
    "client_id": "00000000-0000-0000-0000-000000000001",
    "client_secret_env": "APP_SECRET",
    "token_file": "/var/run/secrets/azure/tokens/azure-identity-token",
    "allow_unencrypted_cache": True,
}


def identity_toml(source: str, keys: dict[str, object]) -> str:
    lines = ["[identities.x]", f'source = "{source}"']
    for k, v in keys.items():
        lines.append(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v).replace(chr(39), chr(34))}")
    return "\n".join(lines) + "\n"


def test_every_row_is_keyed_by_its_own_name() -> None:
    assert all(name == kind.name for name, kind in SOURCES.items())
    assert list(SOURCES) == [
        "azure-cli",
        "device-code",
        "browser",
        "service-principal",
        "managed-identity",
        "workload-identity",
        "default",
    ]


@pytest.mark.parametrize("kind", SOURCES.values(), ids=list(SOURCES))
def test_every_rows_module_builds_a_credential(kind: SourceKind) -> None:
    assert kind.module.startswith("tokend.identities.")
    module = importlib.import_module(kind.module)
    assert callable(module.credential)


@pytest.mark.parametrize("kind", SOURCES.values(), ids=list(SOURCES))
def test_a_rows_keys_are_its_own_and_what_it_requires_it_accepts(kind: SourceKind) -> None:
    assert not kind.keys & COMMON_IDENTITY_KEYS  # the common keys are listed once, for everyone
    assert kind.required <= kind.keys | COMMON_IDENTITY_KEYS
    assert kind.uses and kind.uses == kind.uses.strip()


def test_the_person_sources_are_the_ones_a_person_signs_in_to() -> None:
    assert person_sources() == ("azure-cli", "device-code", "browser")


@pytest.mark.parametrize("kind", SOURCES.values(), ids=list(SOURCES))
def test_config_takes_a_source_with_its_required_keys(kind: SourceKind) -> None:
    keys = {k: VALUES[k] for k in sorted(kind.required)}
    if kind.name == "service-principal":
        keys["client_secret_env"] = VALUES["client_secret_env"]  # one of secret or certificate, checked by config
    cfg = config.parse(identity_toml(kind.name, keys), CONFIG)
    assert cfg.identities["x"].source == kind.name


@pytest.mark.parametrize(
    ("kind", "missing"), [(k, key) for k in SOURCES.values() for key in sorted(k.required)], ids=str
)
def test_config_refuses_a_source_without_a_key_it_requires(kind: SourceKind, missing: str) -> None:
    keys = {k: VALUES[k] for k in sorted(kind.required) if k != missing}
    with pytest.raises(ConfigError) as e:
        config.parse(identity_toml(kind.name, keys), CONFIG)
    assert e.value.key == f"identities.x.{missing}" and "required" in e.value.problem


@pytest.mark.parametrize(
    ("kind", "foreign"),
    [
        (k, key)
        for k in SOURCES.values()
        for key in sorted({"client_secret_env", "token_file", "allow_unencrypted_cache"} - k.keys)
    ],
    ids=str,
)
def test_config_refuses_a_key_of_another_source(kind: SourceKind, foreign: str) -> None:
    keys = {k: VALUES[k] for k in sorted(kind.required)}
    keys[foreign] = VALUES[foreign]
    with pytest.raises(ConfigError) as e:
        config.parse(identity_toml(kind.name, keys), CONFIG)
    assert e.value.key == f"identities.x.{foreign}" and "unknown key" in e.value.problem


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
