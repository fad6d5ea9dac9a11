"""`aligner keys create|list|revoke`: manage API keys in the tenant store.

`create` prints only the new key on stdout (it is shown this once); `list` never
shows a key or its hash. The store is --tenant-store, else $ALIGNER_TENANT_STORE,
else the SQLite file in the cache directory. Only the store is imported here:
no engine, no torch.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(commands: argparse._SubParsersAction, parser_class: type) -> None:
    """Register `aligner keys ...` on the CLI."""
    keys = commands.add_parser("keys", help="Manage API keys in the tenant store.")
    actions = keys.add_subparsers(dest="keys_command", required=True, parser_class=parser_class)

    create = actions.add_parser("create", help="Create an API key and print it (the only time it is shown).")
    create.set_defaults(handler=run_create)
    create.add_argument("--tenant", required=True, help="Tenant the key belongs to (lower-case, e.g. acme).")
    create.add_argument("--admin", action="store_true", help="The key may manage keys and other tenants' settings.")
    _store_arg(create)

    generate = actions.add_parser(
        "generate", help="Print a fresh key without storing it: for a deployment's bootstrap admin key "
        "(put it in the Secret; the server imports it at start).")
    generate.set_defaults(handler=run_generate)

    listing = actions.add_parser("list", help="List keys (ids, tenants, flags; never the keys themselves).")
    listing.set_defaults(handler=run_list)
    listing.add_argument("--tenant", help="Only this tenant's keys.")
    listing.add_argument("--json", action="store_true", help="Print them as JSON.")
    _store_arg(listing)

    revoke = actions.add_parser("revoke", help="Revoke a key by its id (key_...); revoking twice is harmless.")
    revoke.set_defaults(handler=run_revoke)
    revoke.add_argument("id", help="The key's id, as shown by `aligner keys list`.")
    revoke.add_argument("--json", action="store_true", help="Print the revoked key's record as JSON.")
    _store_arg(revoke)


def _store_arg(parser: argparse.ArgumentParser) -> None:
    from aligner.tenants import STORE_ENV

    parser.add_argument(
        "--tenant-store",
        metavar="URL",
        help=f"sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB (default: ${STORE_ENV}, "
        "else sqlite:///<cache dir>/tenants.db).",
    )


def store_url(args: argparse.Namespace) -> str:
    from aligner.tenants import default_store_url

    return args.tenant_store or default_store_url()


def _open(args: argparse.Namespace):
    from aligner.tenants import TenantStore

    return TenantStore.open(store_url(args))


def run_create(args: argparse.Namespace) -> int:
    from aligner.tenants import validate_tenant

    validate_tenant(args.tenant)  # before touching the database
    with _open(args) as store:
        record, key = store.create_key(args.tenant, admin=args.admin)
    print(key, flush=True)
    role = "admin key" if record.admin else "key"
    print(f"aligner: created {role} {record.id} for tenant {record.tenant!r}; it is not shown again", file=sys.stderr)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from aligner.tenants import validate_tenant

    if args.tenant is not None:
        validate_tenant(args.tenant)
    with _open(args) as store:
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
    with _open(args) as store:
        record = store.revoke_key(args.id)
    if args.json:
        print(json.dumps(record.to_dict(), indent=2))
    else:
        print(f"revoked {record.id} (tenant {record.tenant}) at {record.revoked_at.isoformat(timespec='seconds')}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from aligner.tenants import generate_key

    print(generate_key())
    return 0
