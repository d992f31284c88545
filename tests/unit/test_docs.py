"""The README's tables agree with the code they describe: identity sources and sink kinds (tokend.kinds), every
command of the parser, every client `tokend clients` sets up."""

from __future__ import annotations

import re

import pytest

from tokend.clients import CLIENTS
from tokend.kinds import SINKS, SOURCES

from support.product import REPO

pytestmark = pytest.mark.portable

README = (REPO / "README.md").read_text(encoding="utf-8")


def table_after(heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first Markdown table after ``heading``, header and rule left out."""
    rest = README.split(f"\n{heading}\n", 1)[1]
    lines = rest[rest.index("\n|") :].strip("\n").splitlines()
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows[2:]


def names(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def test_identity_table_is_kinds_sources() -> None:
    rows = {names(r[0]).pop(): r for r in table_after("### Identities")}
    assert set(rows) == set(SOURCES)
    for name, (_, keys, uses, _notes) in rows.items():
        kind = SOURCES[name]
        assert uses == kind.uses, name
        assert names(keys) == set(kind.keys | kind.required), name
        assert set(re.findall(r"\*\*`([^`]+)`\*\*", keys)) == set(kind.required), name


def test_sink_table_is_kinds_sinks() -> None:
    rows = {names(r[0]).pop(): r for r in table_after("### Where the token goes")}
    assert set(rows) == set(SINKS)
    for name, (_, keys, serves, _notes) in rows.items():
        assert serves == SINKS[name].serves, name
        assert names(keys) == set(SINKS[name].keys), name


def test_every_command_and_client_is_in_the_commands_table() -> None:
    from tokend.cli import _parser

    table = "\n".join(" ".join(r) for r in table_after("## Commands"))
    sub = next(a for a in _parser()._actions if a.dest == "command")
    for command in sub.choices:  # type: ignore[union-attr]
        assert f"`tokend {command}" in table, command
    assert f"`tokend clients {'|'.join(CLIENTS)} " in table.replace("\\|", "|")
    clients = table_after("## Clients")
    for key in CLIENTS:
        assert any(f"tokend clients {key}" in r[2] for r in clients), key


def test_the_layout_names_every_module_and_package_of_tokend() -> None:
    """§Layout is where a newcomer looks for the one place of a concern: each top-level module and package of
    tokend/ has its line, and no line names one that is gone."""
    layout = README.split("\n## Layout\n", 1)[1].split("```")[1]
    listed = set(re.findall(r"^tokend/(\w+)(?:\.py|/)", layout, re.M))
    src = REPO / "tokend"
    present = {p.stem for p in src.glob("*.py") if p.stem not in ("__init__", "__main__")}
    present |= {p.name for p in src.iterdir() if (p / "__init__.py").exists()}
    assert listed == present
