"""The cloud table: each cloud's login authority, ossrdbms resource and server suffix, and the v2 scope."""

from __future__ import annotations

import pytest
from azure.identity import AzureAuthorityHosts

from tokend.clouds import CLOUDS, Cloud, scope_for
from tokend.emulator.directory import RESOURCES

pytestmark = pytest.mark.portable  # runs on Linux, macOS and Windows (.github/workflows/ci.yml)


@pytest.mark.parametrize(
    ("name", "authority", "resource", "suffix"),
    [
        (
            "public",
            AzureAuthorityHosts.AZURE_PUBLIC_CLOUD,
            "https://ossrdbms-aad.database.windows.net",
            ".postgres.database.azure.com",
        ),
        (
            "usgov",
            AzureAuthorityHosts.AZURE_GOVERNMENT,
            "https://ossrdbms-aad.database.usgovcloudapi.net",
            ".postgres.database.usgovcloudapi.net",
        ),
        (
            "china",
            AzureAuthorityHosts.AZURE_CHINA,
            "https://ossrdbms-aad.database.chinacloudapi.cn",
            ".postgres.database.chinacloudapi.cn",
        ),
    ],
)
def test_each_cloud_names_azure_identitys_authority_and_its_ossrdbms_resource(
    name: str, authority: str, resource: str, suffix: str
) -> None:
    cloud = CLOUDS[name]
    assert cloud == Cloud(name, authority, resource, suffix)
    assert cloud.scope == resource + "/.default"


def test_the_table_is_keyed_by_each_clouds_own_name_and_holds_the_three_clouds() -> None:
    assert list(CLOUDS) == ["public", "usgov", "china"]  # "public" first: the default, listed first in errors
    assert all(key == cloud.name for key, cloud in CLOUDS.items())


def test_the_emulator_accepts_tokens_for_exactly_the_clouds_resources() -> None:
    assert set(RESOURCES) == {c.resource for c in CLOUDS.values()}


@pytest.mark.parametrize(
    ("resource", "scope"),
    [
        ("https://ossrdbms-aad.database.windows.net", "https://ossrdbms-aad.database.windows.net/.default"),
        ("https://ossrdbms-aad.database.windows.net/", "https://ossrdbms-aad.database.windows.net/.default"),
        ("https://ossrdbms-aad.database.windows.net//", "https://ossrdbms-aad.database.windows.net/.default"),
        ("api://my-app", "api://my-app/.default"),
    ],
)
def test_the_scope_of_a_resource_has_one_slash_before_default(resource: str, scope: str) -> None:
    assert scope_for(resource) == scope
