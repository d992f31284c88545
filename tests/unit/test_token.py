from __future__ import annotations

import base64
import json

import pytest

from tokend.token import Token, display_claims

pytestmark = pytest.mark.portable  # runs on Linux, macOS and Windows (.github/workflows/ci.yml)


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
