"""Token: one access token, its times, and the claims worth showing.

Claims are decoded for display only, without checking the signature: the server is the judge of validity.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Token:
    """An access token. Times are Unix epoch seconds. ``value`` never shows in repr or str."""

    value: str = field(repr=False)
    expires_on: float
    obtained_at: float
    refresh_on: float | None = None
    claims: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def from_jwt(cls, value: str, expires_on: float, obtained_at: float, refresh_on: float | None = None) -> Token:
        return cls(value, float(expires_on), float(obtained_at), refresh_on, display_claims(value))

    def valid_at(self, now: float) -> bool:
        return now < self.expires_on

    @property
    def principal(self) -> str:
        """Who the token is for, as a person would name it: UPN, else app id, else object id."""
        c = self.claims
        return c.get("upn") or c.get("unique_name") or c.get("preferred_username") or c.get("appid") or c.get(
            "oid", "")

    def __str__(self) -> str:
        return f"Token(principal={self.principal!r}, expires_on={self.expires_on:.0f})"


_SHOWN = ("oid", "upn", "unique_name", "preferred_username", "appid", "tid", "aud", "name")


def display_claims(value: str) -> dict[str, str]:
    """The claims of a JWT worth showing, or {} when it is not a JWT we can read."""
    data = _payload(value)
    return {k: str(data[k]) for k in _SHOWN if k in data}


def expiry(value: str) -> float | None:
    """The ``exp`` claim of a JWT (epoch seconds), or None."""
    exp = _payload(value).get("exp")
    return float(exp) if isinstance(exp, (int, float)) else None


def _payload(value: str) -> dict[str, object]:
    parts = value.split(".")
    if len(parts) != 3:
        return {}
    try:
        data = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return {}
    return data if isinstance(data, dict) else {}
