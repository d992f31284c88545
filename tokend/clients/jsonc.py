"""Just enough of JSON-with-comments (VS Code / Azure Data Studio settings) to read it and to replace one top-level
key's value while keeping every other byte, comments included."""

from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|//[^\n]*|/\*.*?\*/|\s+|[{}\[\]:,]|[^\s{}\[\]:,"/]+|/', re.S)


def _tokens(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(text)]


def _significant(tokens: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    return [t for t in tokens if not (t[2].isspace() or t[2].startswith(("//", "/*")))]


def loads(text: str) -> Any:
    """Parse JSONC: comments and trailing commas allowed. An empty file is an empty object."""
    sig = _significant(_tokens(text))
    if not sig:
        return {}
    kept = [tok for i, (_, _, tok) in enumerate(sig)
            if not (tok == "," and i + 1 < len(sig) and sig[i + 1][2] in "}]")]
    return json.loads(" ".join(kept))


def set_key(text: str, key: str, value: Any, indent: str = "    ") -> str:
    """``text`` with the top-level ``key`` set to ``value`` (inserted last when missing); other bytes unchanged."""
    rendered = json.dumps(value, indent=4).replace("\n", "\n" + indent)
    sig = _significant(_tokens(text))
    if not sig:
        return "{\n" + f'{indent}{json.dumps(key)}: {rendered}\n' + "}\n"
    if sig[0][2] != "{":
        raise ValueError("the settings file is not a JSON object")
    depth, i = 0, 0
    while i < len(sig):
        start, _end, tok = sig[i]
        if tok in "{[":
            depth += 1
        elif tok in "}]":
            depth -= 1
            if depth == 0:  # the closing brace of the top-level object: insert before it
                prev = sig[i - 1][2]
                comma = "" if prev in ("{", ",") else ","
                at = sig[i - 1][1]
                return text[:at] + comma + f"\n{indent}{json.dumps(key)}: {rendered}" + (
                    "\n" if prev == "{" else "") + text[at:start].rstrip(" \t") + text[start:]
        elif depth == 1 and tok.startswith('"') and i + 1 < len(sig) and sig[i + 1][2] == ":":
            if json.loads(tok) == key:
                vstart = sig[i + 2][0]
                vend = _value_end(sig, i + 2)
                return text[:vstart] + rendered + text[vend:]
            i += 2
            continue
        i += 1
    raise ValueError("unbalanced braces in the settings file")


def _value_end(sig: list[tuple[int, int, str]], i: int) -> int:
    if sig[i][2] not in "{[":
        return sig[i][1]
    depth = 0
    for _start, end, tok in sig[i:]:
        if tok in "{[":
            depth += 1
        elif tok in "}]":
            depth -= 1
            if depth == 0:
                return end
    raise ValueError("unbalanced brackets in the settings file")
