"""Token: the value never shown, display claims read from real JWTs, and a life judged on two clocks."""

from __future__ import annotations

import base64
import json

import pytest

from tokend.clock import Clock
from tokend.emulator.directory import Directory
from tokend.token import END_MARGIN, Token, display_claims, expiry

pytestmark = pytest.mark.portable  # runs on Linux, macOS and Windows (.github/workflows/ci.yml)

RESOURCE = "https://ossrdbms-aad.database.windows.net"


def fake_jwt(claims: dict[str, str]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJub25lIn0.{body}.sig"


def test_repr_and_str_never_show_the_value() -> None:
    t = Token.from_jwt(fake_jwt({"upn": "a@b.c", "oid": "1"}), 2e9, 1e9)
    assert t.value not in repr(t) and t.value not in str(t)
    assert t.principal == "a@b.c"


def test_claims_of_garbage_are_empty() -> None:
    assert display_claims("not-a-jwt") == {}
    assert display_claims("a.!!!.c") == {}


@pytest.fixture(scope="module")
def directory() -> Directory:
    d = Directory()
    d.add_user("alice@contoso.example", "Alice Smith")
    return d


def test_a_real_tokens_display_claims_and_expiry_are_read(directory: Directory) -> None:
    alice = directory.users["alice@contoso.example"]
    value, exp = directory.mint(RESOURCE, user=alice)
    t = Token.from_jwt(value, exp, exp - 3600)
    assert t.claims == {
        "oid": alice.oid,
        "upn": alice.upn,
        "unique_name": alice.upn,
        "appid": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
        "tid": directory.tenant_id,
        "aud": RESOURCE,
        "name": "Alice Smith",
    }
    assert t.principal == alice.upn and expiry(value) == float(exp)
    assert t.lifetime == 3600.0


def test_an_apps_token_is_named_by_its_app_id(directory: Directory) -> None:
    app = directory.add_app("Report Writer", secret="s")
    value, exp = directory.mint(RESOURCE, app=app)
    assert Token.from_jwt(value, exp, exp - 60).principal == app.client_id


@pytest.mark.parametrize(
    ("claims", "principal"),
    [
        ({"upn": "u@x", "unique_name": "n@x", "preferred_username": "p@x", "appid": "a", "oid": "o"}, "u@x"),
        ({"unique_name": "n@x", "preferred_username": "p@x", "appid": "a", "oid": "o"}, "n@x"),
        ({"preferred_username": "p@x", "appid": "a", "oid": "o"}, "p@x"),
        ({"appid": "a", "oid": "o"}, "a"),
        ({"oid": "o"}, "o"),
        ({}, ""),
    ],
)
def test_the_principal_is_the_first_name_a_person_would_use(claims: dict[str, str], principal: str) -> None:
    assert Token.from_jwt(fake_jwt(claims), 2e9, 1e9).principal == principal


@pytest.mark.parametrize("value", ["", "abc", "a.b", "a.b.c.d", "a.bm90IGpzb24.c", "a.WzEsMl0.c", "a.!!!.c"])
def test_what_is_not_a_readable_jwt_has_no_claims_and_no_expiry(value: str) -> None:
    assert display_claims(value) == {} and expiry(value) is None


def test_a_non_numeric_exp_is_no_expiry() -> None:
    assert expiry(fake_jwt({"exp": "tomorrow"})) is None
    assert expiry(fake_jwt({"exp": 1_700_000_000})) == 1_700_000_000.0  # type: ignore[dict-item]


class Clocks:
    """A wall clock and a boot clock that a test moves by hand (seconds)."""

    def __init__(self, wall: float, boot: float) -> None:
        self.wall, self.boot_ = wall, boot
        self.clock = Clock(now=lambda: self.wall, boot=lambda: self.boot_)


@pytest.mark.parametrize(
    ("wall_step", "boot_step", "left"),
    [
        (0.0, 0.0, 3600.0),  # just arrived
        (600.0, 600.0, 3000.0),  # both clocks agree
        (-7200.0, 600.0, 3000.0),  # wall clock stepped back two hours: the boot clock still counts 600 s gone
        (1800.0, 600.0, 1800.0),  # wall clock stepped forward: the server sees that too
        (600.0, 3000.0, 600.0),  # a sleep the wall clock missed (boot clock counts suspend)
    ],
)
def test_remaining_life_is_the_shorter_of_the_wall_clocks_and_the_boot_clocks(
    wall_step: float, boot_step: float, left: float
) -> None:
    c = Clocks(wall=10_000.0, boot=50.0)
    t = Token("v", 10_000.0 + 3600, 10_000.0, received=50.0)
    c.wall += wall_step
    c.boot_ += boot_step
    assert t.remaining(c.clock) == left


def test_a_token_read_back_from_elsewhere_is_judged_on_the_wall_clock_alone() -> None:
    c = Clocks(wall=10_000.0, boot=50.0)
    t = Token("v", 10_000.0 + 3600, 10_000.0)  # received=None: the keychain's, the daemon's
    c.boot_ += 1e6
    assert t.remaining(c.clock) == 3600.0


def test_a_token_stops_being_valid_end_margin_seconds_before_its_end() -> None:
    c = Clocks(wall=10_000.0, boot=0.0)
    t = Token("v", 10_000.0 + 100, 10_000.0 - 3500, received=0.0)
    c.wall, c.boot_ = t.expires_on - END_MARGIN - 0.5, t.lifetime - END_MARGIN - 0.5  # both: 5.5 s left
    assert t.valid(c.clock)
    c.wall, c.boot_ = c.wall + 1.0, c.boot_ + 1.0
    assert not t.valid(c.clock)


def test_tokens_compare_by_value_and_times_not_by_claims() -> None:
    a = Token("v", 2e9, 1e9, claims={"upn": "a@x"})
    assert a == Token("v", 2e9, 1e9, claims={})
    assert a != Token("w", 2e9, 1e9)
