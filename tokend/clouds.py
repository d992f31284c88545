"""Azure clouds: name → login authority, ossrdbms token resource, PostgreSQL server suffix.

azure-identity has no authority → resource map, so the table lives here (values from azure-cli's cloud.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cloud:
    name: str
    authority: str
    resource: str
    server_suffix: str

    @property
    def scope(self) -> str:
        return scope_for(self.resource)


CLOUDS: dict[str, Cloud] = {
    c.name: c
    for c in (
        Cloud(
            "public",
            "login.microsoftonline.com",
            "https://ossrdbms-aad.database.windows.net",
            ".postgres.database.azure.com",
        ),
        Cloud(
            "usgov",
            "login.microsoftonline.us",
            "https://ossrdbms-aad.database.usgovcloudapi.net",
            ".postgres.database.usgovcloudapi.net",
        ),
        Cloud(
            "china",
            "login.chinacloudapi.cn",
            "https://ossrdbms-aad.database.chinacloudapi.cn",
            ".postgres.database.chinacloudapi.cn",
        ),
    )
}


def scope_for(resource: str) -> str:
    """The v2 scope for a v1 resource: ``<resource>/.default``."""
    return resource.rstrip("/") + "/.default"
