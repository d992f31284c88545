"""The identity-source table (``kinds.SOURCES``): each row names a module that builds its credential, and config
validation takes exactly the keys the row lists. The sink and client rows are tested with their plug-ins (the sink
contract suite, the client contract suite)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tokend import config
from tokend.errors import ConfigError
from tokend.kinds import COMMON_IDENTITY_KEYS, SOURCES, SourceKind, person_sources

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
