"""Real PostgreSQL clients, run the way users run them: psql, pgjdbc, node-postgres; and pgpass read as libpq does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tokend.sinks.pgpass import parse

from support.builders import GROUP
from support.product import REPO


def psql(
    pg_port: int, user: str = GROUP, env: dict[str, str] | None = None, extra: str = ""
) -> subprocess.CompletedProcess[str]:
    """psql with no password given: libpq must find the token in pgpass."""
    e = dict(env or os.environ)
    e.pop("PGPASSWORD", None)
    conninfo = f"host=127.0.0.1 port={pg_port} dbname=appdb user='{user}' sslmode=require {extra}"
    return subprocess.run(
        ["psql", conninfo, "-w", "-Atc", "select current_user"], capture_output=True, text=True, env=e, timeout=30
    )


def psql_at(
    conninfo: str, sql: str = "select current_user", env: dict[str, str] | None = None, runner: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """psql with a whole conninfo and no password prompt (``runner``: e.g. runuser as another user)."""
    return subprocess.run(
        [*runner, "psql", conninfo, "-w", "-Atc", sql], capture_output=True, text=True, env=env, timeout=60
    )


def pgpass_token(pgpass: Path, user: str = GROUP) -> str | None:
    """The password of the first pgpass line for ``user``, as libpq would pick it; None when there is none."""
    try:
        lines = parse(pgpass.read_text())
    except FileNotFoundError:
        return None
    return next((ln[4] for ln in lines if ln[3] == user), None)


JAVA = """
import java.sql.*;
public class Jdbc {
  public static void main(String[] a) throws Exception {
    java.util.Properties p = new java.util.Properties();
    p.setProperty("user", "DBA Group");
    try (Connection c = DriverManager.getConnection(a[0], p)) {
      Statement st = c.createStatement();
      if (a.length > 1) {
        new Thread(() -> { try { Thread.sleep(1000); st.cancel(); } catch (Exception e) { } }).start();
        long t0 = System.nanoTime();
        try { st.execute("select pg_sleep(30)"); System.out.println("not cancelled"); }
        catch (SQLException e) { System.out.println(e.getSQLState() + " " + (System.nanoTime() - t0) / 1000000); }
      } else {
        ResultSet r = st.executeQuery("select current_user");
        r.next();
        System.out.println(r.getString(1));
      }
    }
  }
}
"""


def jdbc(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pgjdbc (Debian's libpostgresql-jdbc-java) on the JDK's single-file source launcher."""
    jar = Path("/usr/share/java/postgresql.jar")
    if not jar.exists() or not shutil.which("java"):
        pytest.fail("pgjdbc or java missing; tests/run.sh installs libpostgresql-jdbc-java and a JRE")
    src = tmp_path / "Jdbc.java"
    src.write_text(JAVA)
    r = subprocess.run(["java", "-cp", str(jar), str(src), url, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r


NODE = """
const { Client } = require('pg');
(async () => {
  const c = new Client(JSON.parse(process.argv[2]));
  await c.connect();
  const r = await c.query('select current_user as u');
  console.log(r.rows[0].u);
  await c.end();
})().catch(e => { console.error(e.message); process.exit(1); });
"""


def node_pg(options: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """node-postgres (npm `pg`, installed by tests/run.sh in .node/)."""
    modules = REPO / ".node" / "node_modules"
    if not (modules / "pg").exists() or not shutil.which("node"):
        pytest.fail("node-postgres missing; tests/run.sh installs it (npm install pg) into .node/")
    script = tmp_path / "pg.js"
    script.write_text(NODE)
    return subprocess.run(
        ["node", str(script), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NODE_PATH": str(modules)},
    )
