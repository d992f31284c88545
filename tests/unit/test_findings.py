"""A finding carries exactly doctor's JSON contract fields, and one failed finding fails the lot."""

from __future__ import annotations

import dataclasses

import pytest

from tokend.findings import Finding, failed


def test_a_finding_is_the_doctor_json_contract() -> None:
    f = Finding("pgpass mode", "fail", "/h/.pgpass is 0644", "chmod 600 /h/.pgpass")
    assert f.as_dict() == {
        "name": "pgpass mode",
        "status": "fail",
        "evidence": "/h/.pgpass is 0644",
        "fix": "chmod 600 /h/.pgpass",
    }
    assert Finding("x", "ok", "fine").fix == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.status = "ok"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("statuses", "fails"),
    [((), False), (("ok",), False), (("ok", "warn"), False), (("ok", "fail", "warn"), True)],
)
def test_one_failed_finding_fails_the_lot(statuses: tuple[str, ...], fails: bool) -> None:
    assert failed([Finding(f"c{i}", s, "e") for i, s in enumerate(statuses)]) is fails  # type: ignore[arg-type]
