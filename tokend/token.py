"""Token: one access token, its times, and the claims worth showing.

Claims are decoded for display only, without checking the signature: the server is the judge of validity.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokend.clock import Clock


END_MARGIN = 5.0  # seconds before its end at which a token leaves the sinks


@dataclass(frozen=True)
class Token:
    """An access token. ``value`` never shows in repr or str.

    Times: ``expires_on``, ``obtained_at`` and ``refresh_on`` are Unix epoch seconds on the wall clock;
    ``received`` is the boot clock (``Clock.boot``) when it arrived, or None for a token read back from elsewhere
    (the keychain, the daemon), whose life is judged on the wall clock alone.
    """

    value: str = field(repr=False)
    expires_on: float
    obtained_at: float
    refresh_on: float | None = None
    claims: dict[str, str] = field(default_factory=dict, compare=False)
    received: float | None = None

    @classmethod
    def from_jwt(
        cls,
        value: str,
        expires_on: float,
        obtained_at: float,
        refresh_on: float | None = None,
        received: float | None = None,
    ) -> Token:
        return cls(value, float(expires_on), float(obtained_at), refresh_on, display_claims(value), received)

    @property
    def lifetime(self) -> float:
        """Seconds it was valid for when it arrived."""
        return self.expires_on - self.obtained_at

    def remaining(self, clock: Clock) -> float:
        """Seconds of life left: the wall clock's view, but never more than its lifetime minus the time elapsed on
        the boot clock since it arrived (a wall clock stepped back does not lengthen it; one stepped forward, or
        a sleep, shortens it as the server will see it)."""
        left = self.expires_on - clock.now()
        if self.received is not None:
            left = min(left, self.lifetime - (clock.boot() - self.received))
        return left

    def valid(self, clock: Clock) -> bool:
        """Worth handing out: more than ``END_MARGIN`` seconds left (a client that gets it still connects in
        time, even if its clock and the server's differ by a moment)."""
        return self.remaining(clock) > END_MARGIN

    @property
    def principal(self) -> str:
        """Who the token is for, as a person would name it: UPN, else app id, else object id."""
        c = self.claims
        return c.get("upn") or c.get("unique_name") or c.get("preferred_username") or c.get("appid") or c.get("oid", "")

    def __str__(self) -> str:
        return f"Token(principal={self.principal!r}, expires_on={self.expires_on:.0f})"


_SHOWN = ("oid", "upn", "unique_name", "preferred_username", "appid", "tid", "aud", "name")


def display_claims(value: str) -> dict[str, str]:
    """The claims of a JWT worth showing, or {} when it is not a JWT we can read."""
    data = _payload(value)
    return {k: str(data[k]) for k in _SHOWN if k in data}


def group_ids(value: str) -> tuple[str, ...] | None:
    """The ``groups`` claim of a JWT (the object ids of the principal's groups, when the app registration asks for
    them), or None when the token carries none (not asked for, or too many: Entra's overage claim instead)."""
    groups = _payload(value).get("groups")
    if not isinstance(groups, list):
        return None
    return tuple(str(g) for g in groups)


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
