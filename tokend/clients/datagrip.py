"""DataGrip (and the other JetBrains IDEs' database tools): data sources with DataGrip's pgpass authentication.

DataGrip keeps a project's data sources in ``.idea/dataSources.xml`` (shared settings) and
``.idea/dataSources.local.xml`` (this machine's: the authentication). tokend adds one ``<data-source>`` per target to
each — JDBC URL with host, port and database exactly as the pgpass block has them, authentication provider
``pgpass``, the target's user — printed, or written into a project with ``--output DIR`` (DataGrip closed: it keeps
its own copy and writes it back on exit). Every other byte of an existing file stays; tokend's elements are known by
their uuid (derived from the config and the target), so ``clients remove datagrip --output DIR`` takes out exactly
those. DataGrip reads pgpass at every connect.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from tokend import paths
from tokend.clients import edits
from tokend.clients.base import Request
from tokend.config import Target
from tokend.errors import UsageError

PROGRAM = "datagrip"
_NS = uuid.UUID("6f1e4d1c-7a8b-4d6b-9c55-2a3f4e5d6c7b")
# (file, component, the component's other attributes)
SHARED = ("dataSources.xml", "DataSourceManagerImpl", ' format="xml" multifile-model="true"')
LOCAL = ("dataSources.local.xml", "dataSourceStorageLocal", "")
# one <data-source> element with the line it stands on (they never nest)
_ELEMENT = re.compile(r'\n?[ \t]*<data-source\b(?=[^>]*\buuid="(?P<uuid>[^"]*)")[^>]*?(?:/>|>.*?</data-source>)', re.S)


def data_source_id(owner: str, name: str) -> str:
    """A UUID per config and target whose last group is the config's id: what tokend added is known by it."""
    return str(uuid.uuid5(_NS, f"{owner}/{name}"))[:24] + owner


def elements(owner: str, t: Target) -> tuple[str, str]:
    """The target's (shared, local) ``<data-source>`` elements."""
    if "pgpass" not in t.sinks:
        raise UsageError(f'DataGrip reads the token from pgpass: add "pgpass" to sinks under [targets.{t.name}]')
    db = t.database if t.database != "*" else "postgres"
    name, uid = quoteattr(f"{t.name} (tokend)"), data_source_id(owner, t.name)
    return (
        f"""    <data-source source="LOCAL" name={name} uuid="{uid}">
      <driver-ref>postgresql</driver-ref>
      <synchronize>true</synchronize>
      <jdbc-driver>org.postgresql.Driver</jdbc-driver>
      <jdbc-url>{escape(f"jdbc:postgresql://{t.host}:{t.port}/{db}?sslmode=require")}</jdbc-url>
      <working-dir>$ProjectFileDir$</working-dir>
    </data-source>""",
        f"""    <data-source name={name} uuid="{uid}">
      <auth-provider>pgpass</auth-provider>
      <user-name>{escape(t.user)}</user-name>
    </data-source>""",
    )


def without(text: str, owner: str, names: Sequence[str] | None = None) -> str:
    """``text`` without this config's data sources (those of ``names`` only, when given), each with its line."""
    chosen = None if names is None else {data_source_id(owner, n) for n in names}
    return _ELEMENT.sub(
        lambda m: "" if m["uuid"].endswith(owner) and (chosen is None or m["uuid"] in chosen) else m[0], text
    )


def edit(text: str, kind: tuple[str, str, str], owner: str, targets: Sequence[Target]) -> str:
    """``text`` (one of the two files, ``kind`` says which; empty: a new one) with the targets' data sources, once
    each, at the end of its component."""
    file, component, attrs = kind
    if not text.strip():
        text = '<?xml version="1.0" encoding="UTF-8"?>\n<project version="4">\n</project>\n'
    text = without(text, owner, [t.name for t in targets])
    which = 1 if kind is LOCAL else 0
    block = "".join(elements(owner, t)[which] + "\n" for t in targets)
    m = re.search(rf'<component\s+name="{component}"[^>]*?(/?)>', text)
    if m is None:
        end = text.rfind("</project>")
        if end < 0:
            raise UsageError(f"{file} is not a DataGrip project file (no </project>): fix or move it, then run again")
        return text[:end] + f'  <component name="{component}"{attrs}>\n{block}  </component>\n' + text[end:]
    if m[1]:  # <component …/>
        return text[: m.start()] + m[0][:-2].rstrip() + f">\n{block}  </component>" + text[m.end() :]
    close = text.index("</component>", m.end())
    line = text.rfind("\n", 0, close) + 1
    at = line if not text[line:close].strip() else close
    return text[:at] + ("" if at == line else "\n") + block + text[at:]


def documents(owner: str, targets: Sequence[Target]) -> tuple[str, str]:
    """New (dataSources.xml, dataSources.local.xml) for ``targets``."""
    return edit("", SHARED, owner, targets), edit("", LOCAL, owner, targets)


def install(folder: Path, owner: str, targets: Sequence[Target]) -> list[str]:
    """The targets' data sources into the project ``folder``'s .idea/ files (made, or edited in place)."""
    documents(owner, targets)  # every target checked before anything is written
    changes = [
        (folder / ".idea" / kind[0], functools.partial(edit, kind=kind, owner=owner, targets=targets))
        for kind in (SHARED, LOCAL)
    ]
    for path, change in changes:
        edits.check(path, change)  # both files readable and editable before either is written
    for path, change in changes:
        edits.change(path, change, program=PROGRAM)
    return [
        f"{folder / '.idea'}: data sources {', '.join(t.name for t in targets)} with pgpass authentication; "
        f"open {folder} as a project in DataGrip"
    ]


def uninstall(folder: Path, owner: str, names: Sequence[str] | None) -> list[str]:
    return [
        edits.undo(
            folder / ".idea" / kind[0], lambda text: without(text, owner, names), everything=not names, program=PROGRAM
        )
        for kind in (SHARED, LOCAL)
    ]


def places() -> list[Path]:
    """The newest DataGrip settings folder, whose presence shows DataGrip is installed here."""
    return sorted(paths.app_config_dir("JetBrains").glob("DataGrip*"))[-1:]


def set_up(owner: str) -> bool | None:
    """None: what tokend adds lives in project folders, which tokend does not search."""
    return None


def setup(request: Request) -> list[str]:
    """Into the project folder ``request.output``, or (none) both files to print."""
    if request.output is not None:
        return install(request.output, request.owner, request.targets)
    shared_xml, local_xml = documents(request.owner, request.targets)
    printed = f"<!-- .idea/dataSources.xml -->\n{shared_xml}\n<!-- .idea/dataSources.local.xml -->\n{local_xml}"
    return [printed.removesuffix("\n")]


def undo(request: Request) -> list[str]:
    assert request.output is not None  # needs_output: the dispatcher asks for it
    return uninstall(request.output, request.owner, request.names)
