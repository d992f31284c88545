"""`tokend emulator`: the Entra emulator on its own (demos, trials), as a command of the installed tool
(``python -m tokend.emulator`` runs the same with the product's Python).

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

It prints one JSON line (URL, LDAP port, tenant, principals, and every CA a client needs: ``ca`` for Entra's HTTPS,
``postgres.sslrootcert`` for its PostgreSQL, ``ca_bundle`` holding both) and serves until Ctrl-C or SIGTERM, then
removes everything it made: the temp folder with the CAs and ``server.key``, the PostgreSQL cluster. With
``--postgres`` it also starts the token-checking PostgreSQL with a LOGIN role per user, app, identity and group, and
Azure's pgaadauth functions in its database ``appdb`` (those roles their principals); ``--group-sync`` turns the
server parameter ``pgaadauth.enable_group_sync`` on, and the server then syncs group members' roles every
``--group-sync-interval`` seconds (Azure: 1800) — or at once with ``SELECT * FROM
pgaadauth_sync_roles_for_group_members()`` as an administrator (``--admin NAME``: a user, app or identity).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
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


HELP = "run the local Entra emulator (and its PostgreSQL) on its own, for demos and trials"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tokend emulator", description=HELP)
    p.add_argument("--config", type=Path, help="directory TOML (see README, 'The emulator on its own')")
    p.add_argument("--folder", type=Path, help="where to keep the CAs and state (default: a new temp folder)")
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
    done = threading.Event()  # set by SIGINT/SIGTERM: from here on every exit cleans up
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    made = args.folder is None
    folder = Path(tempfile.mkdtemp(prefix="tokend-emulator-")) if made else args.folder
    folder.mkdir(parents=True, exist_ok=True)
    em: Emulator | None = None
    pg: Postgres | None = None
    try:
        em = Emulator(directory_from(raw), folder=folder / "entra", port=args.port).start()
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
        cas = [em.certs.ca_cert]
        if args.postgres and not done.is_set():
            # its own temp folder (which root's `postgres` user can enter), removed by stop()
            pg = Postgres(em.ldap.port).start()
            pg.add_roles(
                [*d.users, *(a.name for a in d.apps.values()), *(m.name for m in d.identities.values()), *d.groups]
            )
            pg.install_pgaadauth("appdb", d, admins=args.admin, adopt=True)
            if args.group_sync:
                pg.set_parameter(pgaadauth.SETTING, "on")
            pg.start_group_sync(args.group_sync_interval)
            cas.append(pg.ca_cert)
            info["postgres"] = {
                "host": "127.0.0.1",
                "port": pg.port,
                "database": "appdb",
                "sslrootcert": str(pg.ca_cert),
                "group_sync": bool(args.group_sync),
                "group_sync_interval": args.group_sync_interval,
            }
        bundle = folder / "ca-bundle.pem"
        bundle.write_bytes(b"".join(c.read_bytes() for c in cas))
        info["ca_bundle"] = str(bundle)
        print(json.dumps(info), flush=True)
        while not done.wait(1.0):
            pass
    finally:
        if pg is not None:
            pg.stop()
        if em is not None:
            em.stop()
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
