"""What several `aligner` commands share: the status line, flags built from pydantic fields, the
tenant-store flag, and parsers of list-valued flags."""

from __future__ import annotations

import argparse
import sys
import typing

from pydantic import BaseModel

from aligner.errors import InvalidRequest
from aligner.tenants import STORE_ENV, default_store_url


def status(message: str) -> None:
    """A progress or status line: stderr, so stdout carries only results (text or JSON)."""
    print(f"aligner: {message}", file=sys.stderr, flush=True)


def add_model_flags(parser, model: type[BaseModel], names: tuple[str, ...]) -> None:
    """One --flag per pydantic field, with the field's own description and default: one source of truth."""
    for name in names:
        field = model.model_fields[name]
        kinds = [k for k in typing.get_args(field.annotation) if k is not type(None)] or [field.annotation]
        if kinds[0] is bool:  # a switch: present is true, absent leaves the model's default
            parser.add_argument(
                f"--{name.replace('_', '-')}", action="store_true", default=None, help=field.description
            )
            continue
        kind = kinds[0] if kinds[0] in (int, float) else str
        default = "" if field.default is None else f" (default: {field.default})"
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"{field.description}{default}")


def given(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The flags the user set; the rest take the model's defaults."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def add_store_flag(parser: argparse.ArgumentParser) -> None:
    """`--tenant-store URL` of `aligner keys` and `aligner safety`."""
    parser.add_argument(
        "--tenant-store",
        metavar="URL",
        help=f"sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB (default: ${STORE_ENV}, "
        "else sqlite:///<cache dir>/tenants.db).",
    )


def store_url(args: argparse.Namespace) -> str:
    return args.tenant_store or default_store_url()


def add_reward_flags(parser) -> None:
    parser.add_argument(
        "--reward-model", action="append", default=[], help="An HF reward model directory to serve; repeatable."
    )
    parser.add_argument("--no-judge", action="store_true", help="Do not serve the `helpfulness` judge objective.")


def rewards_config(args: argparse.Namespace):
    """The objective catalog's config from `--reward-model` and `--no-judge` (an `aligner.rewards.RewardsConfig`)."""
    # Here, not at the top: aligner.rewards imports torch, which `aligner --help`, `keys` and `safety` never need.
    from aligner.rewards import RewardsConfig

    return RewardsConfig(judge=not getattr(args, "no_judge", False), models=[{"path": p} for p in args.reward_model])


def parse_vector(text: str, field: str = "preference_vector") -> dict[str, float]:
    """'helpfulness=0.8,verbosity=-0.6' -> {'helpfulness': 0.8, 'verbosity': -0.6}."""
    vector: dict[str, float] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        name, sep, weight = pair.partition("=")
        if not sep or not name.strip():
            raise InvalidRequest(field, f"expected NAME=VALUE pairs separated by commas, got {pair!r}")
        try:
            vector[name.strip()] = float(weight)
        except ValueError:
            raise InvalidRequest(field, f"value of {name.strip()!r} is not a number: {weight!r}") from None
    return vector


def int_list(text: str, field: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16]; InvalidRequest naming `field` unless every value is a positive integer."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InvalidRequest(field, f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise InvalidRequest(field, f"expected positive integers, got {text!r}")
    return values
