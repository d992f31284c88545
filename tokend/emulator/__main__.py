"""Run the Entra emulator on its own (demos, manual testing): ``python -m tokend.emulator [--config FILE]``.

The config is a small TOML file; everything is optional:

    tenant_id = "…"               # default: a new GUID
    lifetime = 3600               # access token lifetime, seconds
    groups_claim = false          # true: tokens carry the groups claim (the principal's groups' object ids)
    [[users]]
    upn = "alice@contoso.example"
    [[apps]]
    name = "ci-app"
    client_id = "…"               # default: a new GUID
    secret = "…"                  # test data only: this is an emulator
    [[managed_identities]]
    name = "my-vm"
    system = true
    [[groups]]
    name = "DBA Group"
    members = ["alice@contoso.example", "ci-app", "my-vm"]   # UPNs and app / identity names

It prints one JSON line (URL, LDAP port, CA file, tenant, principals) and serves until interrupted. With
``--postgres`` it also starts the token-checking PostgreSQL with a LOGIN role per user, app, identity and group, and
Azure's pgaadauth functions in its database ``appdb`` (those roles their principals); ``--group-sync`` turns the
server parameter ``pgaadauth.enable_group_sync`` on, and the server then syncs group members' roles every
``--group-sync-interval`` seconds (Azure: 1800) — or at once with ``SELECT * FROM
pgaadauth_sync_roles_for_group_members()`` as an administrator (``--admin NAME``: a user, app or identity).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from tokend.config import tomllib
from tokend.emulator import pgaadauth
from tokend.emulator.directory import Directory
from tokend.emulator.postgres import Postgres
from tokend.emulator.server import Emulator


def directory_from(raw: dict[str, Any]) -> Directory:
    d = Directory(lifetime=float(raw.get("lifetime", 3600)), groups_claim=bool(raw.get("groups_claim", False)))
    if "tenant_id" in raw:
        d.tenant_id = str(raw["tenant_id"])
    names: dict[str, str] = {}
    for u in raw.get("users", []):
        names[u["upn"]] = d.add_user(u["upn"], u.get("name", "")).oid
    for a in raw.get("apps", []):
        app = d.add_app(a["name"], secret=a.get("secret"), federated=bool(a.get("federated", False)))
        if "client_id" in a:
            del d.apps[app.client_id]
            app.client_id = a["client_id"]
            d.apps[app.client_id] = app
        names[app.name] = app.oid
    for m in raw.get("managed_identities", []):
        names[m["name"]] = d.add_managed_identity(m["name"], system=bool(m.get("system", False))).oid
    for g in raw.get("groups", []):
        d.add_group(g["name"], *(names[m] for m in g.get("members", [])))
    return d


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tokend.emulator", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="directory TOML (see the module's doc)")
    p.add_argument("--folder", type=Path, help="where to keep the CA and state (default: a new temp folder)")
    p.add_argument("--port", type=int, default=0, help="HTTPS port (default: any free one)")
    p.add_argument("--postgres", action="store_true", help="also start the token-checking PostgreSQL")
    p.add_argument("--admin", action="append", default=[], metavar="NAME", help="with --postgres: an Entra admin")
    p.add_argument("--group-sync", action="store_true", help=f"with --postgres: {pgaadauth.SETTING} = on")
    p.add_argument(
        "--group-sync-interval",
        type=float,
        default=pgaadauth.AZURE_INTERVAL,
        metavar="SECONDS",
        help="with --postgres: seconds between automatic group syncs (default: Azure's 1800)",
    )
    args = p.parse_args(argv)
    raw = tomllib.loads(args.config.read_text()) if args.config else {}
    em = Emulator(directory_from(raw), folder=args.folder, port=args.port).start()
    d = em.directory
    info: dict[str, Any] = {
        "url": em.url,
        "ldap_port": em.ldap.port,
        "ca": str(em.certs.ca_cert),
        "tenant_id": d.tenant_id,
        "identity_endpoint": f"{em.url}/msi/token",
        "identity_header": em.identity_header,
        "apps": {a.name: a.client_id for a in d.apps.values()},
        "managed_identities": {m.name: m.client_id for m in d.identities.values()},
    }
    pg = None
    if args.postgres:
        pg = Postgres(em.ldap.port).start()
        pg.add_roles(
            [*d.users, *(a.name for a in d.apps.values()), *(m.name for m in d.identities.values()), *d.groups]
        )
        pg.install_pgaadauth("appdb", d, admins=args.admin, adopt=True)
        if args.group_sync:
            pg.set_parameter(pgaadauth.SETTING, "on")
        pg.start_group_sync(args.group_sync_interval)
        info["postgres"] = {
            "host": "127.0.0.1",
            "port": pg.port,
            "database": "appdb",
            "group_sync": bool(args.group_sync),
            "group_sync_interval": args.group_sync_interval,
        }
    print(json.dumps(info), flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    if pg is not None:
        pg.stop()
    em.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
