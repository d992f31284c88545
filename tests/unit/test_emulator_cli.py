"""The standalone emulator's small config (``python -m tokend.emulator --config FILE``) read into a directory: every
principal in it, client ids kept, groups whose members log in. (Serving it: tests/e2e/test_emulator.py.)"""

from __future__ import annotations

import pytest

from tokend.config import tomllib
from tokend.emulator.cli import directory_from
from tokend.emulator.directory import RESOURCES, TokenRejected

CONFIG = """
tenant_id = "72f988bf-0000-0000-0000-000000000001"
lifetime = 120
[[users]]
upn = "alice@contoso.example"
name = "Alice Smith"
[[users]]
upn = "bob@contoso.example"
[[apps]]
name = "ci-app"
client_id = "11111111-2222-3333-4444-555555555555"
secret = "abc"
[[apps]]
name = "k8s-app"
federated = true
[[managed_identities]]
name = "my-vm"
system = true
[[groups]]
name = "DBA Group"
members = ["alice@contoso.example", "ci-app", "my-vm"]
"""


def test_every_principal_of_the_config_is_in_the_directory() -> None:
    d = directory_from(tomllib.loads(CONFIG))
    assert d.tenant_id == "72f988bf-0000-0000-0000-000000000001" and d.lifetime == 120.0
    assert d.users["alice@contoso.example"].name == "Alice Smith"
    assert d.users["bob@contoso.example"].name == "Bob"  # a name made from the UPN when none is given
    ci = d.apps["11111111-2222-3333-4444-555555555555"]  # the given client id, and only under it
    assert (ci.name, ci.secret, ci.federated) == ("ci-app", "abc", False)
    assert [a.name for a in d.apps.values()] == ["ci-app", "k8s-app"]
    assert [a.federated for a in d.apps.values()] == [False, True]
    (mi,) = d.identities.values()
    assert (mi.name, mi.system) == ("my-vm", True)


def test_group_members_named_by_upn_or_name_log_in_as_the_group() -> None:
    d = directory_from(tomllib.loads(CONFIG))
    resource = RESOURCES[0]
    alice = d.mint(resource, user=d.users["alice@contoso.example"])[0]
    ci = d.mint(resource, app=d.apps["11111111-2222-3333-4444-555555555555"])[0]
    vm = d.mint(resource, mi=next(iter(d.identities.values())))[0]
    for token in (alice, ci, vm):
        d.check(token, "DBA Group")
    with pytest.raises(TokenRejected):
        d.check(d.mint(resource, user=d.users["bob@contoso.example"])[0], "DBA Group")


def test_an_empty_config_is_an_empty_tenant_with_hour_long_tokens() -> None:
    d = directory_from({})
    assert (d.users, d.apps, d.identities, d.groups, d.lifetime) == ({}, {}, {}, {}, 3600.0)
    assert d.tenant_id != directory_from({}).tenant_id  # a new GUID each time


def test_a_member_the_config_does_not_define_is_an_error() -> None:
    with pytest.raises(KeyError, match=r"carol@contoso\.example"):
        directory_from(tomllib.loads('[[groups]]\nname = "G"\nmembers = ["carol@contoso.example"]\n'))


def test_the_groups_claim_is_asked_for_in_the_config() -> None:
    assert directory_from({"groups_claim": True}).groups_claim and not directory_from({}).groups_claim
