"""The group-login diagnosis's pure part: one case per refusal, from what the server showed and the token said."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokend.admin import Listed
from tokend.config import Config
from tokend.diagnose import Diagnosis, Seen, Who, askers, explain

from support.builders import target

GROUP = "DBA Group"
GROUP_OID = "11111111-1111-1111-1111-111111111111"
ME = "alice@contoso.example"
PRINCIPALS = (Listed(GROUP, "group", GROUP_OID, False), Listed(ME, "user", "o-alice", False))


def seen(
    roles: dict[str, bool] | None = None, sync: str = "off", principals: tuple[Listed, ...] | None = PRINCIPALS
) -> Seen:
    return Seen(ME, {GROUP: True, ME: True} if roles is None else roles, principals, sync)


def diagnose(user: str, s: Seen | None, groups: tuple[str, ...] | None = None, refusal: str = "refused") -> Diagnosis:
    return explain(target("db", user=user), refusal, Who(ME, "o-alice", groups), s)


def test_no_such_role() -> None:
    d = diagnose("Reporting", seen())
    assert d.case == "no-role" and "no role 'Reporting'" in d.what and "tokend admin add-group Reporting" in d.fix


@pytest.mark.parametrize("wrong", ["dba group", "DBA  Group", "DBAGroup"])
def test_a_name_that_differs_only_in_case_or_spaces(wrong: str) -> None:
    d = diagnose(wrong, seen())
    assert d.case == "near-miss" and f"but {GROUP!r}" in d.what and f'user = "{GROUP}"' in d.fix


def test_a_nologin_group_with_sync_on_says_log_in_as_yourself() -> None:
    d = diagnose(GROUP, seen({GROUP: False, ME: True}, sync="on"))
    assert d.case == "nologin-sync-on" and 'user = "@principal"' in d.fix and "next group sync" not in d.fix
    waiting = diagnose(GROUP, seen({GROUP: False}, sync="on"))
    assert waiting.case == "nologin-sync-on" and "tokend admin sync" in waiting.fix  # her own role is not there yet


def test_a_nologin_group_with_sync_off_needs_an_administrator() -> None:
    d = diagnose(GROUP, seen({GROUP: False, ME: True}, sync="off"))
    assert d.case == "nologin" and 'ALTER ROLE "DBA Group" LOGIN;' in d.fix


def test_ones_own_role_not_synced_yet() -> None:
    d = diagnose(ME, seen({GROUP: True}, sync="on"), groups=(GROUP_OID,))
    assert d.case == "not-synced-yet" and "every 30 minutes" in d.what and "tokend admin sync" in d.fix
    assert f"you are in {GROUP!r}" in d.what and f'user = "{GROUP}" works' in d.fix
    off = diagnose(ME, seen({GROUP: True}, sync="off"))
    assert off.case == "no-own-role" and "group sync is off" in off.what


def test_not_a_member_by_the_groups_claim() -> None:
    d = diagnose(GROUP, seen(), groups=("another-group",))
    assert d.case == "not-a-member" and GROUP_OID in d.what and "Add members" in d.fix


@pytest.mark.parametrize(
    ("groups", "principals", "why"),
    [
        (None, PRINCIPALS, "the token carries no groups claim"),
        (("another-group",), None, "not readable as 'alice@contoso.example'"),
        ((GROUP_OID,), PRINCIPALS, "cannot tell whether you are a member"),
    ],
)
def test_cannot_tell_says_what_it_saw(
    groups: tuple[str, ...] | None, principals: tuple[Listed, ...] | None, why: str
) -> None:
    d = diagnose(GROUP, seen(principals=principals), groups=groups)
    assert d.case == "cannot-tell" and why in d.what and f"tokend admin check '{GROUP}'" in d.fix


def test_without_another_login_the_refusal_alone_speaks() -> None:
    d = diagnose(GROUP, None, refusal=f'role "{GROUP}" is not permitted to log in')
    assert d.case == "nologin" and 'user = "@principal"' in d.fix
    d = diagnose(GROUP, None, refusal="password authentication failed")
    assert d.case == "cannot-tell" and "password authentication failed" in d.what


def test_askers_are_ones_own_role_then_the_other_targets_on_that_server() -> None:

    mine = target("db", user=GROUP)
    others = [
        target("b", user="Readers"),
        target("c", host="elsewhere.example", user="x"),
        target("d", user="@principal"),
    ]
    cfg = Config(Path("/c"), {}, {t.name: t for t in [mine, *others]}, {})
    assert askers(cfg, mine, Who(ME, "o")) == [ME, GROUP, "Readers"]
    assert askers(None, mine, Who(None, "o")) == [GROUP]
    assert diagnose(GROUP, seen()).line().startswith("the server refused")


def test_without_another_login_a_missing_role_is_named_from_the_refusal() -> None:
    gone = 'role "x" does not exist'
    mine = diagnose(ME, None, refusal=gone)
    assert mine.case == "not-synced-yet" and "tokend admin sync" in mine.fix and "every 30 minutes" in mine.what
    other = diagnose("Reporting", None, refusal=gone)
    assert other.case == "no-role" and "case and spaces count" in other.fix
