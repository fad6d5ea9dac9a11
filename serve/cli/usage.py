"""`aligner usage [--tenant T] [--since TIME] [--until TIME] [--json]`: tenants' metered usage.

Reads the usage the ingress replicas added to the tenant store, per tenant and UTC hour: every hour
overlapping [since, until) (ISO 8601; a time without a zone is UTC). The store is --tenant-store,
else $ALIGNER_TENANT_STORE, else the SQLite file in the cache directory; with --server URL (and an
admin --key) the same report comes from a running server's GET /v1/admin/usage. `--json` prints
the route's answer as it is; otherwise a table, one line per tenant and hour and a total per tenant.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from aligner.tenants import TenantStore, hour_range, usage_report, validate_tenant
from serve.cli.options import add_store_flag, store_url
from serve.client.http import KEY_ENV, AdminClient, api_key

COLUMNS = (
    ("prompt_tokens", "PROMPT"),
    ("completion_tokens", "COMPLETION"),
    ("generated_tokens", "GENERATED"),
    ("candidate_tokens", "CANDIDATE"),
    ("prefill_tokens", "PREFILL"),
    ("reward_calls", "REWARD_CALLS"),
    ("engine_requests", "ENGINE_REQS"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", help="Only this tenant's usage.")
    parser.add_argument("--since", metavar="TIME", help="ISO 8601 date or time (no zone: UTC); from its hour on.")
    parser.add_argument("--until", metavar="TIME", help="ISO 8601 date or time, exclusive (no zone: UTC).")
    parser.add_argument("--json", action="store_true", help="Print the report as JSON (as GET /v1/admin/usage).")
    add_store_flag(parser)
    parser.add_argument(
        "--server",
        metavar="URL",
        help="Ask a running server's admin API (e.g. http://127.0.0.1:8000) instead of opening the tenant store.",
    )
    parser.add_argument("--key", help=f"With --server: an admin API key (default: ${KEY_ENV}).")


def report(args: argparse.Namespace) -> dict[str, Any]:
    """The usage report, from the store or the server; bad --tenant/--since/--until fail before either is asked."""
    since, until = hour_range(args.since, args.until)
    if args.tenant is not None:
        validate_tenant(args.tenant)
    if args.server:
        with AdminClient(args.server, api_key(args.key)) as client:
            return client.usage(args.tenant, args.since, args.until)
    with TenantStore.open(store_url(args)) as store:
        return usage_report(store.usage(args.tenant, since, until), since, until)


def run(args: argparse.Namespace) -> int:
    answer = report(args)
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    rows = [("TENANT", "HOUR", "REQUESTS", "BY_STATUS", *(title for _, title in COLUMNS), "SAFETY")]
    for entry in [*answer["hours"], *({**total, "hour": "total"} for total in answer["totals"])]:
        rows.append(
            (
                entry["tenant"],
                entry["hour"],
                str(sum(entry["requests"].values())),
                ",".join(f"{status}:{n}" for status, n in entry["requests"].items()),
                *(str(entry[name]) for name, _ in COLUMNS),
                ",".join(f"{action}:{n}" for action, n in entry["safety_actions"].items()) or "-",
            )
        )
    rows.sort(key=lambda row: (row[0] != "TENANT", row[0], row[1] == "total", row[1]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if not answer["hours"]:
        print("aligner: no usage recorded" + (f" for tenant {args.tenant!r}" if args.tenant else ""), file=sys.stderr)
    return 0
