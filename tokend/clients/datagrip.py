"""DataGrip (and the other JetBrains IDEs' database tools): data sources with DataGrip's pgpass authentication.

DataGrip keeps a project's data sources in ``.idea/dataSources.xml`` (shared settings) and
``.idea/dataSources.local.xml`` (this machine's: the authentication). tokend writes both for the targets — JDBC URL
with host, port and database exactly as the pgpass block has them, authentication provider ``pgpass``, the
target's user — to stdout, or into a project folder with ``--output DIR`` (DataGrip closed; existing files are not
overwritten). DataGrip reads pgpass at every connect.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from tokend.config import Target
from tokend.errors import UsageError

_NS = uuid.UUID("6f1e4d1c-7a8b-4d6b-9c55-2a3f4e5d6c7b")


def data_source_id(owner: str, t: Target) -> str:
    return str(uuid.uuid5(_NS, f"{owner}/{t.name}"))


def documents(owner: str, targets: Sequence[Target]) -> tuple[str, str]:
    """(dataSources.xml, dataSources.local.xml) for ``targets``."""
    shared, local = [], []
    for t in targets:
        if "pgpass" not in t.sinks:
            raise UsageError(f'DataGrip reads the token from pgpass: add "pgpass" to sinks under [targets.{t.name}]')
        db = t.database if t.database != "*" else "postgres"
        name, uid = quoteattr(f"{t.name} (tokend)"), data_source_id(owner, t)
        shared.append(f"""    <data-source source="LOCAL" name={name} uuid="{uid}">
      <driver-ref>postgresql</driver-ref>
      <synchronize>true</synchronize>
      <jdbc-driver>org.postgresql.Driver</jdbc-driver>
      <jdbc-url>{escape(f"jdbc:postgresql://{t.host}:{t.port}/{db}?sslmode=require")}</jdbc-url>
      <working-dir>$ProjectFileDir$</working-dir>
    </data-source>""")
        local.append(f"""    <data-source name={name} uuid="{uid}">
      <auth-provider>pgpass</auth-provider>
      <user-name>{escape(t.user)}</user-name>
    </data-source>""")
    head, tail = '<?xml version="1.0" encoding="UTF-8"?>\n<project version="4">\n', "\n  </component>\n</project>\n"
    return (head + '  <component name="DataSourceManagerImpl" format="xml" multifile-model="true">\n'
            + "\n".join(shared) + tail,
            head + '  <component name="dataSourceStorageLocal">\n' + "\n".join(local) + tail)


def write(folder: Path, owner: str, targets: Sequence[Target]) -> list[str]:
    """Both files into ``folder``/.idea/ (a DataGrip project), refusing to overwrite existing ones."""
    from tokend.sinks.atomic import write_private

    idea = folder / ".idea"
    shared, local = documents(owner, targets)
    files = {idea / "dataSources.xml": shared, idea / "dataSources.local.xml": local}
    taken = [str(p) for p in files if p.exists()]
    if taken:
        raise UsageError(f"{', '.join(taken)} already exist: print the definitions (no --output) and add the "
                         "<data-source> elements to them with DataGrip closed, or choose an empty project folder")
    for p, text in files.items():
        write_private(p, text)
    return [f"wrote {idea}: open {folder} as a project in DataGrip; the data sources use pgpass authentication"]
