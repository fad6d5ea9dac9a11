"""`aligner prepare-model`: materialise the embedded model into the cache and print its path."""

from __future__ import annotations

import argparse

from aligner.model_cache import resolve_model
from serve.cli.options import status


def add_arguments(prep: argparse.ArgumentParser) -> None:
    prep.add_argument("--model", default="embedded", help="'embedded' or a local HF model directory.")


def run(args: argparse.Namespace) -> int:
    print(resolve_model(args.model, progress=status))
    return 0
