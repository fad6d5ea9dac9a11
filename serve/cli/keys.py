"""`aligner keys create|generate|list|revoke`: manage API keys in the tenant store.

`create` prints only the new key on stdout (it is shown this once); `list` never
shows a key or its hash. The store is --tenant-store, else $ALIGNER_TENANT_STORE,
else the SQLite file in the cache directory. Only the store is imported here:
no engine, no torch.
"""

from __future__ import annotations

import argparse
import json
import sys

from aligner.tenants import TenantStore, generate_key, validate_tenant
from serve.cli.options import add_store_flag, store_url


def add_arguments(keys: argparse.ArgumentParser) -> None:
    actions = keys.add_subparsers(dest="keys_command", required=True)

    create = actions.add_parser("create", help="Create an API key and print it (the only time it is shown).")
    create.add_argument("--tenant", required=True, help="Tenant the key belongs to (lower-case, e.g. acme).")
    create.add_argument("--admin", action="store_true", help="The key may manage keys and other tenants' settings.")
    add_store_flag(create)

    actions.add_parser(
        "generate",
        help="Print a fresh key without storing it: for a deployment's bootstrap admin key "
        "(put it in the Secret; the server imports it at start).",
    )

    listing = actions.add_parser("list", help="List keys (ids, tenants, flags; never the keys themselves).")
    listing.add_argument("--tenant", help="Only this tenant's keys.")
    listing.add_argument("--json", action="store_true", help="Print them as JSON.")
    add_store_flag(listing)

    revoke = actions.add_parser("revoke", help="Revoke a key by its id (key_...); revoking twice is harmless.")
    revoke.add_argument("id", help="The key's id, as shown by `aligner keys list`.")
    revoke.add_argument("--json", action="store_true", help="Print the revoked key's record as JSON.")
    add_store_flag(revoke)


def run(args: argparse.Namespace) -> int:
    actions = {"create": run_create, "generate": run_generate, "list": run_list, "revoke": run_revoke}
    return actions[args.keys_command](args)


def run_create(args: argparse.Namespace) -> int:
    validate_tenant(args.tenant)  # before touching the database
    with TenantStore.open(store_url(args)) as store:
        record, key = store.create_key(args.tenant, admin=args.admin)
    print(key, flush=True)
    role = "admin key" if record.admin else "key"
    print(f"aligner: created {role} {record.id} for tenant {record.tenant!r}; it is not shown again", file=sys.stderr)
    return 0


def run_list(args: argparse.Namespace) -> int:
    if args.tenant is not None:
        validate_tenant(args.tenant)
    with TenantStore.open(store_url(args)) as store:
        keys = store.list_keys(args.tenant)
    if args.json:
        print(json.dumps([k.to_dict() for k in keys], indent=2))
        return 0
    rows = [("ID", "TENANT", "ADMIN", "CREATED", "REVOKED")]
    for k in keys:
        rows.append(
            (
                k.id,
                k.tenant,
                "yes" if k.admin else "no",
                k.created_at.isoformat(timespec="seconds"),
                k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if not keys:
        print("aligner: no keys" + (f" for tenant {args.tenant!r}" if args.tenant else ""), file=sys.stderr)
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    with TenantStore.open(store_url(args)) as store:
        record = store.revoke_key(args.id)
    if args.json:
        print(json.dumps(record.to_dict(), indent=2))
    else:
        revoked_at = record.revoked_at.isoformat(timespec="seconds") if record.revoked_at else "-"
        print(f"revoked {record.id} (tenant {record.tenant}) at {revoked_at}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    print(generate_key())
    return 0
