"""JSON with comments: member edits keep every other byte (table-driven), and any text is read or refused with
one line saying what is wrong."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokend.clients import jsonc


def test_jsonc_member_edits_keep_every_other_byte() -> None:
    text = '{\n  // c\n  "a": [ {"x": 1},  /* k */ {"x": 2} ],\n  "b": {"k": 1, "tokend-1": {"y": 2}}\n}\n'
    added = jsonc.edit_members(text, "a", lambda _k, v: v.get("x") == 2, [(None, {"x": 3})])
    assert jsonc.loads(added)["a"] == [{"x": 1}, {"x": 3}] and added.startswith('{\n  // c\n  "a": [ {"x": 1}')
    cut = jsonc.edit_members(text, "b", lambda k, _v: k == "tokend-1", [])
    assert jsonc.loads(cut)["b"] == {"k": 1} and '"a": [ {"x": 1},  /* k */ {"x": 2} ]' in cut
    first = jsonc.edit_members(text, "a", lambda _k, v: v.get("x") == 1, [])
    assert jsonc.loads(first)["a"] == [{"x": 2}]
    made = jsonc.edit_members("{}", "new", lambda _k, _v: False, [("id", {"z": 1})])
    assert jsonc.loads(made) == {"new": {"id": {"z": 1}}}


# (text, key, drop, add, the text afterwards): exact bytes, comments and spacing included
EDITS: list[tuple[str, str, Any, list[tuple[str | None, Any]], str]] = [
    ('{"a": [1, 2, 3]}', "a", lambda _k, v: v == 2, [], '{"a": [1, 3]}'),
    ('{"a": [1, 2, 3]}', "a", lambda _k, v: v == 1, [], '{"a": [2, 3]}'),  # the first: its comma after it goes
    ('{"a": [1, 2, 3]}', "a", lambda _k, v: v == 3, [], '{"a": [1, 2]}'),
    ('{"a": [1, 2, 3]}', "a", lambda _k, v: v != 2, [], '{"a": [2]}'),
    ('{"a": [1]}', "a", lambda _k, _v: True, [], '{"a": []}'),
    ('{"a": [1] /* mine */}', "a", lambda _k, _v: False, [], '{"a": [1] /* mine */}'),
    ('{"a": []}', "a", lambda _k, _v: False, [(None, 7)], '{"a": [\n        7\n    ]}'),
    ('{"a": [1]}', "a", lambda _k, _v: False, [(None, 7)], '{"a": [1,\n        7]}'),
    ('{"a": [1,]}', "a", lambda _k, _v: False, [(None, 7)], '{"a": [1,\n        7]}'),  # a trailing comma kept
    ('{"o": {"k": 1, "t": 2}}', "o", lambda k, _v: k == "t", [("t", 3)], '{"o": {"k": 1,\n        "t": 3}}'),
    ("{}", "a", lambda _k, _v: False, [], "{}"),  # nothing to add to a missing key: the text as it was
    ('{\n    "x": 1\n}\n', "a", lambda _k, _v: False, [(None, 1)], '{\n    "x": 1,\n    "a": [\n        1\n    ]\n}\n'),
]


@pytest.mark.parametrize(("text", "key", "drop", "add", "after"), EDITS)
def test_member_edits_change_only_those_members(
    text: str, key: str, drop: Any, add: list[tuple[str | None, Any]], after: str
) -> None:
    assert jsonc.edit_members(text, key, drop, add) == after


@pytest.mark.parametrize(
    ("text", "key", "add", "says"),
    [
        ('{"a": 1}', "a", [(None, 1)], '"a" holds neither a list'),
        ('{"a": [1]}', "a", [("k", 1)], '"a" holds a list […], not the other'),
        ('{"a": {}}', "a", [(None, 1)], '"a" holds an object {…}, not the other'),
        ("[1]", "a", [(None, 1)], "holds a list"),
    ],
)
def test_member_edits_refuse_what_they_cannot_do(text: str, key: str, add: list[Any], says: str) -> None:
    with pytest.raises(jsonc.JsoncError, match=re.escape(says)):
        jsonc.edit_members(text, key, lambda _k, _v: False, add)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.text(alphabet='{}[]:,"\\/ *\n01ab-.e', max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
        ).map(json.dumps),
    )
)
def test_jsonc_reads_any_text_or_says_what_is_wrong(text: str) -> None:
    """Whatever the text: a value, or a ValueError (JsoncError) — never an IndexError, RecursionError, …"""
    for attempt in (
        lambda: jsonc.loads(text),
        lambda: jsonc.settings(text, {"a": list}),
        lambda: jsonc.set_key(text, "a", [1]),
        lambda: jsonc.edit_members(text, "a", lambda _k, _v: True, [(None, {"x": 1})]),
        lambda: jsonc.edit_members(text, "b", lambda _k, _v: False, [("k", 2)]),
    ):
        try:
            attempt()
        except jsonc.JsoncError as e:
            assert str(e) and "\n" not in str(e)


def test_a_comment_at_the_end_of_the_last_line_stays_on_that_line() -> None:
    for text in ('{\n  "a": 1 // mine\n}\n', '{\n  "a": 1, // mine\n}\n'):
        added = jsonc.set_key(text, "b", [2])
        assert added.splitlines()[1] == '  "a": 1, // mine', added
        assert jsonc.loads(added) == {"a": 1, "b": [2]}
