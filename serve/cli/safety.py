"""`aligner safety set|get|versions|activate|delete|audit`: tenants' safety configs in the tenant store.

Every change is a new audited version (actor `cli`). Writes check the active version the
caller expects (`--expected-version`; `none` when the tenant has no active config) and fail
with a conflict if someone changed it first; without the flag, the version active when the
command starts is expected. The store is --tenant-store, else $ALIGNER_TENANT_STORE, else the
SQLite file in the cache directory. With --server URL (and an admin --key) the same commands go
through a running server's admin API instead (audited with the key's id).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

import yaml

from aligner.contract import parse_model
from aligner.errors import InvalidRequest
from aligner.safety.config import SafetyConfig
from aligner.tenants import SafetyConfigStore, TenantStore, validate_tenant
from serve.cli.options import add_store_flag, store_url
from serve.client.http import KEY_ENV, AdminClient, api_key

CLI_ACTOR = "cli"
_ACTIVE_NOW = object()  # --expected-version not given: expect the version active when the command starts


def add_arguments(safety: argparse.ArgumentParser) -> None:
    actions = safety.add_subparsers(dest="safety_command", required=True)

    def command(name: str, help_text: str, *, tenant: bool = True, expected: bool = False):
        parser = actions.add_parser(name, help=help_text)
        if tenant:
            parser.add_argument("tenant", help="The tenant (lower-case, e.g. acme).")
        if expected:
            parser.add_argument(
                "--expected-version",
                type=_version_or_none,
                default=_ACTIVE_NOW,
                help="The active version you expect (`none`: no active config); default: the one active now.",
            )
        add_store_flag(parser)
        parser.add_argument(
            "--server",
            metavar="URL",
            help="Go through a running server's admin API (e.g. "
            "http://127.0.0.1:8000) instead of opening the tenant store.",
        )
        parser.add_argument("--key", help=f"With --server: an admin API key (default: ${KEY_ENV}).")
        return parser

    setter = command("set", "Store a new version of a tenant's config and activate it.", expected=True)
    setter.add_argument("--file", required=True, help="The config as YAML or JSON (`-` for standard input).")
    getter = command("get", "Show the tenant's active config.")
    getter.add_argument("--json", action="store_true", help="Print it as JSON.")
    command("versions", "List every version of the tenant's config.")
    activate = command("activate", "Activate an older version (a rollback).", expected=True)
    activate.add_argument("version", type=int, help="The version to activate.")
    command("delete", "Deactivate the tenant's config (its history stays).", expected=True)
    audit = command("audit", "Print the audit log (every change, oldest first).", tenant=False)
    audit.add_argument("--tenant", help="Only this tenant's changes.")
    audit.add_argument("--since", type=datetime.fromisoformat, help="Only changes at or after this ISO time.")


def run(args: argparse.Namespace) -> int:
    actions = {
        "set": run_set,
        "get": run_get,
        "versions": run_versions,
        "activate": run_activate,
        "delete": run_delete,
        "audit": run_audit,
    }
    return actions[args.safety_command](args)


def _version_or_none(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a version number or `none`, got {text!r}") from None


def open_configs(args: argparse.Namespace) -> SafetyConfigStore:
    """The tenant store, or with --server the server's admin API behind the same methods."""
    if args.server:
        return AdminClient(args.server, api_key(args.key))
    return TenantStore.open(store_url(args))


def _expected(args: argparse.Namespace, store: SafetyConfigStore) -> int | None:
    if args.expected_version is not _ACTIVE_NOW:
        return args.expected_version
    active = store.get_safety_config(args.tenant)
    return None if active is None else active.version


def read_config(path: str) -> SafetyConfig:
    """A SafetyConfig from a YAML or JSON file (or stdin); InvalidRequest names a bad field."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidRequest("file", f"is not valid YAML or JSON: {exc}") from None
    return parse_model(SafetyConfig, data)


def run_set(args: argparse.Namespace) -> int:
    validate_tenant(args.tenant)
    config = read_config(args.file)
    with open_configs(args) as store:
        stored = store.set_safety_config(args.tenant, config, expected_version=_expected(args, store), actor=CLI_ACTOR)
    print(f"aligner: tenant {stored.tenant!r} safety config is now version {stored.version}", file=sys.stderr)
    return 0


def run_get(args: argparse.Namespace) -> int:
    with open_configs(args) as store:
        active = store.get_safety_config(args.tenant)
    if active is None:
        print(f"aligner: tenant {args.tenant!r} has no active safety config", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(active.to_dict(), indent=2))
    else:
        print(
            f"# tenant {active.tenant}, version {active.version}, "
            f"created {active.created_at.isoformat(timespec='seconds')}"
        )
        print(yaml.safe_dump(active.config.model_dump(mode="json"), sort_keys=False, allow_unicode=True), end="")
    return 0


def run_versions(args: argparse.Namespace) -> int:
    with open_configs(args) as store:
        versions = store.safety_config_versions(args.tenant)
        active = store.get_safety_config(args.tenant)
    for v in versions:
        mark = "*" if active is not None and v.version == active.version else " "
        print(
            f"{mark} {v.version:>4}  {v.created_at.isoformat(timespec='seconds')}  "
            f"{v.created_by or '-':<16}  {v.content_hash[:12]}"
        )
    if not versions:
        print(f"aligner: tenant {args.tenant!r} has no safety config versions", file=sys.stderr)
    return 0


def run_activate(args: argparse.Namespace) -> int:
    with open_configs(args) as store:
        chosen = store.activate_safety_config(
            args.tenant, args.version, expected_version=_expected(args, store), actor=CLI_ACTOR
        )
    print(f"aligner: tenant {chosen.tenant!r} safety config is now version {chosen.version}", file=sys.stderr)
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with open_configs(args) as store:
        store.delete_safety_config(args.tenant, expected_version=_expected(args, store), actor=CLI_ACTOR)
    print(f"aligner: tenant {args.tenant!r} has no active safety config now (its versions are kept)", file=sys.stderr)
    return 0


def run_audit(args: argparse.Namespace) -> int:
    with open_configs(args) as store:
        entries = store.safety_audit(args.tenant, args.since)
    for e in entries:
        print(json.dumps(e.to_dict()))
    return 0
