"""tokend's import graph, built from the source: no circle between modules, counting imports inside functions too
(a function-level import only hides a circle until the function runs); and every function-level import of a
tokend or third-party module says why on its line or the line above (start-up time is the only accepted reason:
``tokend token`` and the hand-off must answer in the time Python needs to start)."""

from __future__ import annotations

import ast
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.portable

ROOT = Path(__file__).resolve().parents[2] / "tokend"
PACKAGE = ROOT.name


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    names: tuple[str, ...]  # dotted names it may load: "tokend.x" for `from tokend import x`, and the module itself
    line: int
    in_function: bool


def modules() -> dict[str, Path]:
    out = {}
    for f in sorted(ROOT.rglob("*.py")):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imports_of(module: str, path: Path) -> list[Import]:
    base = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.append(Import(module, tuple(a.name for a in child.names), child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    up = base.split(".")
                    up = up[: len(up) - (child.level - 1)] if child.level > 1 else up
                    source = ".".join(up + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                names = (source, *(f"{source}.{a.name}" for a in child.names))
                found.append(Import(module, names, child.lineno, in_function))
            visit(child, inside)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
    return found


def resolve(name: str, known: dict[str, Path]) -> str | None:
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    for m, path in known.items():
        for imp in imports_of(m, path):
            for name in imp.names:
                if name.split(".")[0] != PACKAGE:
                    continue
                r = resolve(name, known)
                # a package and its own submodules (its face re-exporting them) are one room, not a circle
                if r and r != m and not m.startswith(r + ".") and not r.startswith(m + "."):
                    edges[m].add(r)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected sets of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def comment_lines(path: Path) -> set[int]:
    """Lines that carry a comment, and lines just below a line that is only a comment."""
    lines = set()
    with open(path, encoding="utf-8") as f:
        for tok in tokenize.generate_tokens(f.readline):
            if tok.type == tokenize.COMMENT:
                lines.add(tok.start[0])
                if tok.line.strip().startswith("#"):
                    lines.add(tok.start[0] + 1)
    return lines


def test_the_circle_finder_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_tokend_has_no_import_circle() -> None:
    found = circles(graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_from_tokend_import_x_counts_as_importing_tokend_x() -> None:
    edges = graph()
    assert "tokend.ipc" in edges["tokend.daemon"]  # `from tokend import ... ipc ...`
    assert "tokend.ipc.protocol" in edges["tokend.ipc.winpipe"]


def test_every_function_level_import_of_tokend_or_a_library_says_why() -> None:
    stdlib = set(sys.stdlib_module_names)
    bare = []
    for m, path in modules().items():
        commented = comment_lines(path)
        for imp in imports_of(m, path):
            top = imp.names[0].split(".")[0]
            if imp.in_function and top and top not in stdlib and imp.line not in commented:
                bare.append(f"{path.relative_to(ROOT.parent)}:{imp.line} ({imp.names[0]})")
    assert not bare, "function-level imports without a comment saying why:\n" + "\n".join(bare)
