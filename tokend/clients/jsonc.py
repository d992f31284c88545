"""Just enough of JSON-with-comments (VS Code / Azure Data Studio settings, DBeaver's workspace files) to read it and
to change the members of one top-level key's array or object while keeping every other byte — the user's own
entries in that same array, their comments and their spacing included.

Any text is either read or refused with a ``JsoncError`` (a ValueError) saying what is wrong and where (line and
column): never another exception, whatever the text. Texts are bounded (``MAX_CHARS``, ``MAX_DEPTH``), so a hostile
or broken file costs little memory and time before it is refused.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

MAX_CHARS = 4 << 20  # characters; settings files are kilobytes
MAX_TOKENS = 250_000  # ~400 bytes and ~4 µs each to edit: a DBeaver workspace of 1,000 connections is 99,000
MAX_DEPTH = 64  # nesting of arrays and objects; settings files nest a few levels
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|//[^\n]*|/\*.*?\*/|\s+|[{}\[\]:,]|[^\s{}\[\]:,"/]+|/', re.S)
Token = tuple[int, int, str]


class JsoncError(ValueError):
    """What is wrong with a JSONC text, and where: one line for people."""


def _where(text: str, pos: int) -> str:
    line, line_start = text.count("\n", 0, pos) + 1, text.rfind("\n", 0, pos) + 1
    return f"line {line}, column {pos - line_start + 1}"


def _tokens(text: str) -> list[Token]:
    if len(text) > MAX_CHARS:
        raise JsoncError(f"{len(text):,} characters, more than the {MAX_CHARS:,} tokend reads in a settings file")
    out, pos, depth = [], 0, 0
    for m in _TOKEN.finditer(text):
        if m.start() != pos:  # a character no token starts with: a string or a comment that never ends
            raise JsoncError(f"a string that never ends at {_where(text, pos)}")
        tok = m.group()
        if tok in ("{", "["):
            depth += 1
            if depth > MAX_DEPTH:
                raise JsoncError(f"nested more than {MAX_DEPTH} levels deep at {_where(text, m.start())}")
        elif tok in ("}", "]"):
            depth -= 1
        out.append((m.start(), m.end(), tok))
        pos = m.end()
        if len(out) > MAX_TOKENS:
            raise JsoncError(f"more than {MAX_TOKENS:,} tokens (numbers, strings, brackets), far more than settings")
    if pos != len(text):
        raise JsoncError(f"a string that never ends at {_where(text, pos)}")
    return out


def _significant(tokens: list[Token]) -> list[Token]:
    return [t for t in tokens if not (t[2].isspace() or t[2].startswith(("//", "/*")))]


def loads(text: str) -> Any:
    """Parse JSONC: comments and trailing commas allowed. An empty file is an empty object. JsoncError otherwise."""
    sig = _significant(_tokens(text))
    if not sig:
        return {}
    kept = [t for i, t in enumerate(sig) if not (t[2] == "," and i + 1 < len(sig) and sig[i + 1][2] in "}]")]
    joined = " ".join(t[2] for t in kept)
    try:
        return json.loads(joined)
    except json.JSONDecodeError as e:
        raise JsoncError(f"not valid JSON at {_where(text, _source(kept, e.pos, len(text)))} ({e.msg})") from None
    except (ValueError, RecursionError):  # Python's limit on the digits of an integer
        raise JsoncError("not valid JSON (a number with thousands of digits)") from None


def _source(kept: list[Token], pos: int, end: int) -> int:
    """Where in the text position ``pos`` of the kept tokens joined by spaces lies (``end``: past the last)."""
    starts, at = [], 0
    for t in kept:
        starts.append(at)
        at += len(t[2]) + 1
    if pos >= at - 1:
        return end
    i = bisect.bisect_right(starts, pos) - 1
    return kept[i][0] + min(pos - starts[i], len(kept[i][2]))


def _kind(value: object) -> str:
    return {dict: "an object {…}", list: "a list […]", str: "a string", bool: "true or false"}.get(
        type(value), "null" if value is None else "a number"
    )


def settings(text: str, shape: Mapping[str, type]) -> dict[str, Any]:
    """The top-level object of a settings text, checked: each key of ``shape`` that is there holds that type
    (``list`` or ``dict``). JsoncError saying what the file holds instead."""
    data = loads(text)
    if not isinstance(data, dict):
        raise JsoncError(f"the file holds {_kind(data)}, not the object {{…}} of settings")
    for key, kind in shape.items():
        if key in data and not isinstance(data[key], kind):
            raise JsoncError(f"{json.dumps(key)} holds {_kind(data[key])}, not {_kind(kind())}")
    return data


def _render(value: Any, indent: str) -> str:
    return json.dumps(value, indent=4, ensure_ascii=False).replace("\n", "\n" + indent)


def set_key(text: str, key: str, value: Any, indent: str = "    ") -> str:
    """``text`` with the top-level ``key`` set to ``value`` (inserted last when missing); other bytes unchanged."""
    settings(text, {})  # a settings object, well-formed: the byte positions below are then sound
    rendered = _render(value, indent)
    sig = _significant(_tokens(text))
    if not sig:
        return "{\n" + f"{indent}{json.dumps(key)}: {rendered}\n" + "}\n"
    span = _key_value(sig, key)
    if span is not None:
        return text[: span[0]] + rendered + text[span[1] :]
    return _insert_last(text, sig, f"{json.dumps(key)}: {rendered}", indent)


def _check_object(sig: list[Token]) -> None:
    if sig[0][2] != "{":
        raise JsoncError("the file is not the object {…} of settings")


def _key_value(sig: list[Token], key: str) -> tuple[int, int] | None:
    """The byte span of the value of top-level ``key``, or None."""
    _check_object(sig)
    depth, i = 0, 0
    while i < len(sig):
        tok = sig[i][2]
        if tok in "{[":
            depth += 1
        elif tok in "}]":
            depth -= 1
        elif depth == 1 and tok.startswith('"') and i + 1 < len(sig) and sig[i + 1][2] == ":":
            if json.loads(tok) == key:
                return sig[i + 2][0], _value_end(sig, i + 2)
            i += 2
            continue
        i += 1
    return None


def _insert_last(text: str, sig: list[Token], member: str, indent: str) -> str:
    """``member`` inserted as the last member of the top-level object."""
    _check_object(sig)
    close = _close_of(sig, 0)
    start = sig[close][0]
    prev = sig[close - 1][2]
    comma = "" if prev in ("{", ",") else ","
    at = sig[close - 1][1]
    gap = text[at:start]
    line_end = gap.find("\n")
    if prev != "{" and line_end > 0 and gap[:line_end].strip():
        # a comment ends the last member's line: it stays on that line, the new member goes below it
        return text[:at] + comma + gap[:line_end] + f"\n{indent}{member}" + gap[line_end:].rstrip(" \t") + text[start:]
    return (
        text[:at]
        + comma
        + f"\n{indent}{member}"
        + ("\n" if prev == "{" else "")
        + text[at:start].rstrip(" \t")
        + text[start:]
    )


def _close_of(sig: list[Token], i: int) -> int:
    depth = 0
    for j in range(i, len(sig)):
        if sig[j][2] in "{[":
            depth += 1
        elif sig[j][2] in "}]":
            depth -= 1
            if depth == 0:
                return j
    raise JsoncError("unbalanced brackets")


def _value_end(sig: list[Token], i: int) -> int:
    if sig[i][2] not in "{[":
        return sig[i][1]
    return sig[_close_of(sig, i)][1]


def edit_members(
    text: str,
    key: str,
    drop: Callable[[str | None, Any], bool],
    add: Sequence[tuple[str | None, Any]],
    indent: str = "    ",
) -> str:
    """Change the members of top-level ``key``'s array (member keys None) or object: those ``drop(key, value)``
    says are removed with their separator, ``add`` appended at the end; every other byte stays as it was. A
    missing ``key`` is created with just ``add``."""
    settings(text, {})  # a settings object, well-formed: the byte positions below are then sound
    sig = _significant(_tokens(text))
    found = _container(sig, key) if sig else None
    if found is None:
        if not add:
            return text
        value: Any = dict(add) if add[0][0] is not None else [v for _, v in add]
        return set_key(text, key, value, indent)
    open_i, close_i, is_object = found
    if add and (add[0][0] is not None) != is_object:
        raise JsoncError(f"{json.dumps(key)} holds {'an object {…}' if is_object else 'a list […]'}, not the other")
    text = _cut(text, _separated(_members(text, sig, open_i, close_i, is_object), drop))
    if not add:
        return text
    sig = _significant(_tokens(text))
    found = _container(sig, key)
    assert found is not None
    return _append(text, sig, found, add, indent)


def _container(sig: list[Token], key: str) -> tuple[int, int, bool] | None:
    """(index of the opening bracket, of the closing one, whether it is an object) of top-level ``key``'s value;
    None when there is no such key; JsoncError when it holds neither a list nor an object."""
    span = _key_value(sig, key)
    if span is None:
        return None
    open_i = next(i for i, t in enumerate(sig) if t[0] == span[0])
    if sig[open_i][2] not in "[{":
        raise JsoncError(f"{json.dumps(key)} holds neither a list […] nor an object {{…}}")
    return open_i, _close_of(sig, open_i), sig[open_i][2] == "{"


def _separated(
    members: list[tuple[str | None, Any, int, int]], drop: Callable[[str | None, Any], bool]
) -> list[tuple[int, int]]:
    """The byte spans to cut: each dropped member with the separator before it (after it, for the first one)."""
    verdicts = [(s, e, drop(k, v)) for (k, v, s, e) in members]
    kept = [(s, e) for s, e, dropped in verdicts if not dropped]
    cuts = []
    for s, e, dropped in verdicts:
        if not dropped:
            continue
        before = max((ke for _ks, ke in kept if ke <= s), default=None)
        after = min((ks for ks, _ke in kept if ks >= e), default=None)
        if before is not None:
            cuts.append((before, e))  # from the end of the kept member before it: drops ", member"
        elif after is not None:
            cuts.append((s, after))  # first of the list: drops "member, " up to the next kept one
        else:
            cuts.append((s, e))
    return _merge(cuts)


def _cut(text: str, cuts: list[tuple[int, int]]) -> str:
    """``text`` without the (sorted, disjoint) byte spans ``cuts``."""
    out, pos = [], 0
    for s, e in cuts:
        out.append(text[pos:s])
        pos = e
    out.append(text[pos:])
    return "".join(out)


def _append(
    text: str, sig: list[Token], found: tuple[int, int, bool], add: Sequence[tuple[str | None, Any]], indent: str
) -> str:
    """``add`` as the last members of the container ``found`` (``_container``'s answer), one a line."""
    _open_i, close_i, is_object = found
    inner = indent * 2
    rendered = [(f"{json.dumps(k)}: " if is_object else "") + _render(v, inner) for k, v in add]
    body = "".join(f"\n{inner}{r}" + ("," if i < len(rendered) - 1 else "") for i, r in enumerate(rendered))
    last = sig[close_i - 1]
    if last[2] in "[{":  # empty container
        return text[: last[1]] + body + "\n" + indent + text[sig[close_i][0] :]
    comma = "" if last[2] == "," else ","
    return text[: last[1]] + comma + body + text[last[1] :]


def _members(
    text: str, sig: list[Token], open_i: int, close_i: int, is_object: bool
) -> list[tuple[str | None, Any, int, int]]:
    """(key, value, start, end) of each member directly inside the container between open_i and close_i."""
    out = []
    i = open_i + 1
    while i < close_i:
        if sig[i][2] == ",":
            i += 1
            continue
        key = None
        start = sig[i][0]
        if is_object:
            key = json.loads(sig[i][2])
            i += 2
        end_i = i if sig[i][2] not in "{[" else _close_of(sig, i)
        value = loads(text[sig[i][0] : sig[end_i][1]])
        out.append((key, value, start, sig[end_i][1]))
        i = end_i + 1
    return out


def _merge(cuts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(cuts):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out
