"""`aligner tenants policy set|get|versions|activate|audit`: tenants' policies in the tenant store.

A policy (caps at or below the server's limits, defaults, allowed strategies and objectives, rates,
concurrency, weight, priority tier; see docs/tenancy.md) is a YAML or JSON file. Every change is a new
audited version (actor `cli`). Writes check the active version the caller expects
(`--expected-version`; `none` when the tenant has no policy) and fail with a conflict if someone changed
it first; without the flag, the version active when the command starts is expected. The store is
--tenant-store, else $ALIGNER_TENANT_STORE, else the SQLite file in the cache directory. With --server URL
(and an admin --key) the commands go through a running server's admin API instead: audited with the
key's id, and the policy checked against the server's limits and served objectives.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from aligner.contract import parse_model
from aligner.errors import InvalidRequest
from aligner.tenants import TenantPolicy, TenantPolicyStore, TenantStore, validate_tenant
from serve.cli.options import add_store_flag, status, store_url
from serve.client.http import KEY_ENV, AdminClient, api_key

CLI_ACTOR = "cli"
_ACTIVE_NOW = object()  # --expected-version not given: expect the version active when the command starts


def add_arguments(tenants: argparse.ArgumentParser) -> None:
    kinds = tenants.add_subparsers(dest="tenants_command", required=True)
    policy = kinds.add_parser("policy", help="A tenant's policy: caps, defaults, allowed strategies, rates, weight.")
    actions = policy.add_subparsers(dest="policy_command", required=True)

    def command(name: str, help_text: str, *, expected: bool = False) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text)
        parser.add_argument("tenant", help="The tenant (lower-case, e.g. acme).")
        if expected:
            parser.add_argument(
                "--expected-version",
                type=_version_or_none,
                default=_ACTIVE_NOW,
                help="The active version you expect (`none`: no policy); default: the one active now.",
            )
        add_store_flag(parser)
        parser.add_argument(
            "--server",
            metavar="URL",
            help="Go through a running server's admin API (e.g. http://127.0.0.1:8000) instead of opening the "
            "tenant store; the policy is then checked against the server's limits and objectives.",
        )
        parser.add_argument("--key", help=f"With --server: an admin API key (default: ${KEY_ENV}).")
        return parser

    setter = command("set", "Store a new version of a tenant's policy and activate it.", expected=True)
    setter.add_argument("--file", required=True, help="The policy as YAML or JSON (`-` for standard input).")
    getter = command("get", "Show the tenant's active policy.")
    getter.add_argument("--json", action="store_true", help="Print it as JSON (with its version).")
    command("versions", "List every version of the tenant's policy (* marks the active one).")
    activate = command("activate", "Activate an older version (a rollback).", expected=True)
    activate.add_argument("version", type=int, help="The version to activate.")
    command("audit", "Print the tenant's policy changes, oldest first (one JSON object a line).")


def run(args: argparse.Namespace) -> int:
    actions = {"set": run_set, "get": run_get, "versions": run_versions, "activate": run_activate, "audit": run_audit}
    return actions[args.policy_command](args)


def _version_or_none(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a version number or `none`, got {text!r}") from None


def open_policies(args: argparse.Namespace) -> TenantPolicyStore:
    """The tenant store, or with --server the server's admin API behind the same methods."""
    if args.server:
        return AdminClient(args.server, api_key(args.key))
    return TenantStore.open(store_url(args))


def _expected(args: argparse.Namespace, store: TenantPolicyStore) -> int | None:
    if args.expected_version is not _ACTIVE_NOW:
        return args.expected_version
    active = store.get_tenant_policy(args.tenant)
    return None if active is None else active.version


def read_policy(path: str) -> TenantPolicy:
    """A TenantPolicy from a YAML or JSON file (or stdin); InvalidRequest names a bad field."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise InvalidRequest("--file", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidRequest("--file", f"is not valid YAML or JSON: {exc}") from None
    if data is None:
        data = {}  # an empty file: the empty policy (the server's limits alone)
    return parse_model(TenantPolicy, data)


def run_set(args: argparse.Namespace) -> int:
    validate_tenant(args.tenant)
    policy = read_policy(args.file)
    with open_policies(args) as store:
        stored = store.set_tenant_policy(args.tenant, policy, expected_version=_expected(args, store), actor=CLI_ACTOR)
    status(f"tenant {stored.tenant!r} policy is now version {stored.version}")
    return 0


def run_get(args: argparse.Namespace) -> int:
    validate_tenant(args.tenant)
    with open_policies(args) as store:
        active = store.get_tenant_policy(args.tenant)
    if active is None:
        status(f"tenant {args.tenant!r} has no policy (the server's limits alone apply)")
        return 1
    if args.json:
        print(json.dumps(active.to_dict(), indent=2))
    else:
        print(
            f"# tenant {active.tenant}, policy version {active.version}, "
            f"created {active.created_at.isoformat(timespec='seconds')}"
        )
        shown = active.policy.model_dump(mode="json", exclude_none=True)
        print(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True), end="")
    return 0


def run_versions(args: argparse.Namespace) -> int:
    validate_tenant(args.tenant)
    with open_policies(args) as store:
        versions = store.tenant_policy_versions(args.tenant)
        active = store.get_tenant_policy(args.tenant)
    for v in versions:
        mark = "*" if active is not None and v.version == active.version else " "
        print(
            f"{mark} {v.version:>4}  {v.created_at.isoformat(timespec='seconds')}  "
            f"{v.created_by or '-':<16}  {v.content_hash[:12]}"
        )
    if not versions:
        status(f"tenant {args.tenant!r} has no policy versions")
    return 0


def run_activate(args: argparse.Namespace) -> int:
    validate_tenant(args.tenant)
    with open_policies(args) as store:
        chosen = store.activate_tenant_policy(
            args.tenant, args.version, expected_version=_expected(args, store), actor=CLI_ACTOR
        )
    status(f"tenant {chosen.tenant!r} policy is now version {chosen.version}")
    return 0


def run_audit(args: argparse.Namespace) -> int:
    validate_tenant(args.tenant)
    with open_policies(args) as store:
        entries = store.tenant_policy_audit(args.tenant)
    for e in entries:
        print(json.dumps(e.to_dict()))
    return 0
