"""`aligner objectives`: the reward objectives a preference vector can name, with their ranges."""

from __future__ import annotations

import argparse
import json

from aligner.model_cache import resolve_model
from serve.cli.options import rewards_config, status


def add_arguments(objectives: argparse.ArgumentParser) -> None:
    objectives.add_argument("--json", action="store_true", help="Print them as JSON.")
    objectives.add_argument(
        "--reward-model", action="append", default=[], help="Also load this HF reward model directory."
    )
    objectives.add_argument("--model", default="embedded", help="Policy model (its tokenizer measures verbosity).")


def run(args: argparse.Namespace) -> int:
    # Here, not at the top: transformers and aligner.rewards import torch, which `aligner --help` never needs.
    from transformers import AutoTokenizer

    from aligner.rewards import build_catalog

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model, progress=status))
    rows = build_catalog(rewards_config(args), tokenizer=tokenizer).describe()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max(len(r["name"]) for r in rows)
        for r in sorted(rows, key=lambda r: r["name"]):
            print(f"{r['name']:<{width}}  [{r['low']:g}, {r['high']:g}]  {r['description']}")
    return 0
