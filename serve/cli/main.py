"""The `aligner` command: its subcommands, exit codes and logging.

Each subcommand is one module of this package with `add_arguments(parser)` and `run(args)`.
Bad input exits with status 2 and one line naming the field; a model, engine, store or server
failure exits with status 1. Status messages go to stderr, results to stdout. Only `serve` and
the server benches import Ray, inside their `run`, so every other command works without it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import serve.cli.bench as bench
import serve.cli.generate as generate
import serve.cli.keys as keys
import serve.cli.objectives as objectives
import serve.cli.prepare_model as prepare_model
import serve.cli.safety as safety
import serve.cli.serve as serve_command
import serve.cli.tenants as tenants
import serve.cli.usage as usage
from aligner.errors import AlignerError, InvalidRequest

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

# (name, module, help), in the order `aligner --help` lists them.
COMMANDS = (
    ("generate", generate, "Generate one aligned response in-process."),
    ("objectives", objectives, "List the reward objectives a preference vector can name."),
    ("bench", bench, "Benchmarks that write JSON with side-by-side ratios."),
    ("prepare-model", prepare_model, "Materialise the embedded model into the cache and print its path."),
    ("keys", keys, "Manage API keys in the tenant store."),
    ("safety", safety, "Manage tenants' safety configs in the tenant store."),
    ("tenants", tenants, "Manage tenants' policies (caps, defaults, rates, weight) in the tenant store."),
    ("usage", usage, "Show tenants' metered usage per hour (tokens, calls, requests by status)."),
    ("serve", serve_command, "Run the Aligner server (Ray Serve: HTTP API, metrics)."),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line naming the argument, no usage dump."""
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand's parser; `args.run(args)` runs the chosen one (subparsers inherit `_Parser`)."""
    parser = _Parser(prog="aligner", description="Decoding-time alignment on a vLLM engine.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Show vLLM's own logs.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, module, help_text in COMMANDS:
        command = commands.add_parser(name, help=help_text)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # stdout carries only results (text or JSON); vLLM logs to stdout by default.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    if not args.verbose:
        # vLLM's start-up warnings (no Triton on CPU, eager mode) are noise for a CLI user.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return args.run(args)
    except InvalidRequest as exc:
        print(f"aligner: error: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except AlignerError as exc:
        print(f"aligner: error: {exc.message}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("aligner: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
