"""`aligner` command line: generate in-process, prepare the embedded model.

Bad input exits with status 2 and one line naming the field; a model or engine
failure exits with status 1. Status messages go to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from aligner.engine.vllm import EngineConfig
from aligner.errors import AlignerError, InvalidRequest
from aligner.contract import AlignRequest, Budget, SearchSpec, parse_model

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
SEARCH_FLAGS = ("n", "batch", "threshold", "max_rounds", "beam_width", "expansions", "chunk_tokens", "prune", "neighbors", "spread")
BUDGET_FLAGS = ("max_candidate_tokens", "max_reward_calls", "deadline_ms")
REQUEST_FLAGS = ("combination", "seed", "temperature", "top_p", "max_tokens")
ENGINE_FLAGS = ("model", "dtype", "max_model_len", "kv_cache_gib", "block_size")


def status(message: str) -> None:
    print(f"aligner: {message}", file=sys.stderr, flush=True)


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


def safety_config_arg(value: str | None):
    """`--safety-config`: literal text, @FILE of text, or @FILE.yaml/.yml/.json holding a whole SafetyConfig
    (thresholds and action included, as `aligner safety set` takes it)."""
    from aligner.safety.config import SafetyConfig
    from serve.cli.safety import read_config
    from aligner.contract import parse_model

    if value is None:
        return None
    if not value.startswith("@"):
        return parse_model(SafetyConfig, {"text": value})
    path = value[1:]
    try:
        if Path(path).suffix.lower() in (".yaml", ".yml", ".json"):
            return read_config(path)
        return parse_model(SafetyConfig, {"text": Path(path).read_text()})
    except OSError as exc:
        raise InvalidRequest("safety_config", f"cannot read {path}: {exc.strerror}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line naming the argument, no usage dump."""
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


Extension = Callable[[argparse._SubParsersAction, argparse._SubParsersAction], None]


def build_parser(extend: Extension | None = None) -> argparse.ArgumentParser:
    """Every subcommand sets `handler(args) -> exit status`; `extend(commands, benches)` adds more
    (the server package adds `serve` and `bench serve` this way, so this module never imports it)."""
    parser = _Parser(prog="aligner", description="Decoding-time alignment on a vLLM engine.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Show vLLM's own logs.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = commands.add_parser("generate", help="Generate one aligned response in-process.")
    gen.set_defaults(handler=lambda args: asyncio.run(run_generate(args)))
    gen.add_argument("question", help="The user's message.")
    gen.add_argument("--system", help="A system message from the user (comes after the safety config).")
    gen.add_argument("--prefer", dest="preferences", help='Free-text preferences, e.g. "concise, formal".')
    gen.add_argument("--vector", help="Preference direction, e.g. helpfulness=0.8,verbosity=-0.6 (normalised).")
    gen.add_argument("--safety-config", help="Tenant safety config: text, @FILE of text, or @FILE.yaml/.json "
                     "with a whole config (text, thresholds, action, ...) enforced on the answer.")
    gen.add_argument(
        "--strategy", default="sample", help="Search strategy: sample (default), best_of_n, rejection, beam or rps."
    )
    add_model_flags(gen, SearchSpec, SEARCH_FLAGS)
    add_model_flags(gen, Budget, BUDGET_FLAGS)
    gen.add_argument("--return-candidates", action="store_true", help="Include every final candidate (with --json).")
    gen.add_argument(
        "--constraint", action="append", default=[], help="Hard constraint NAME=MIN on a raw score; repeatable."
    )
    add_model_flags(gen, AlignRequest, REQUEST_FLAGS)
    gen.add_argument("--stop", action="append", default=[], help="A stop string; repeatable.")
    gen.add_argument("--stream", action="store_true", help="Print the response as it is generated.")
    gen.add_argument("--json", action="store_true", help="Print the full AlignResponse as JSON.")
    gen.add_argument("--return-prompt", action="store_true", help="Include the composed conversation (with --json).")
    _engine_args(gen)

    objectives = commands.add_parser("objectives", help="List the reward objectives a preference vector can name.")
    objectives.set_defaults(handler=run_objectives)
    objectives.add_argument("--json", action="store_true", help="Print them as JSON.")
    objectives.add_argument("--reward-model", action="append", default=[], help="Also load this HF reward model directory.")
    objectives.add_argument("--model", default="embedded", help="Policy model (its tokenizer measures verbosity).")

    bench = commands.add_parser("bench", help="Benchmarks that write JSON with side-by-side ratios.")
    benches = bench.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    scoring = benches.add_parser("scoring", help="Reward scoring: one-at-a-time vs bucketed (vs CUDA graphs on GPU).")
    scoring.set_defaults(handler=run_bench)
    scoring.add_argument("--models", default="tiny,small", help="tiny (2-layer random) and/or small (SmolLM2-135M backbone).")
    scoring.add_argument("--candidates", default="1,4,16,64", help="Candidate counts (1,4,16,64).")
    scoring.add_argument("--lengths", default="64,128,256,512", help="Nominal token lengths (64,128,256,512).")
    scoring.add_argument("--repeats", type=int, default=3, help="Timed repeats per point; the median is kept (3).")
    scoring.add_argument("--device", help="cpu or cuda (default: cuda when available).")
    scoring.add_argument("--out", help="Output JSON (default: bench-results/scoring-DEVICE.json).")

    search = benches.add_parser("search", help="Latency, throughput and reward per compute of every strategy.")
    search.set_defaults(handler=run_search_bench)
    search.add_argument("--strategies", default="sample,best_of_n,rejection,beam,rps", help="Strategies to compare.")
    search.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request (64).")
    search.add_argument("--out", help="Output JSON (default: bench-results/search-cpu.json).")

    safety = benches.add_parser("safety", help="Refusal / false-refusal rates of tenant safety configs on a probe set.")
    safety.set_defaults(handler=run_safety_bench)
    safety.add_argument("--probes", help="The probe set YAML (default: tests/data/safety_probes.yaml of this checkout).")
    safety.add_argument("--max-tokens", type=int, default=48, help="max_tokens of every probe (48).")
    safety.add_argument("--out", help="Output JSON (default: bench-results/safety-cpu.json).")

    prep = commands.add_parser("prepare-model", help="Materialise the embedded model into the cache and print its path.")
    prep.add_argument("--model", default="embedded", help="'embedded' or a local HF model directory.")
    prep.set_defaults(handler=run_prepare_model)

    from serve.cli import keys as keys_cli, safety as safety_cli

    keys_cli.add_parser(commands, _Parser)
    safety_cli.add_parser(commands, _Parser)
    if extend is not None:
        extend(commands, benches)
    return parser


def add_model_flags(parser, model: type[BaseModel], names: tuple[str, ...]) -> None:
    """One --flag per pydantic field, with the field's own description and default: one source of truth."""
    for name in names:
        field = model.model_fields[name]
        kinds = [k for k in typing.get_args(field.annotation) if k is not type(None)] or [field.annotation]
        kind = kinds[0] if kinds[0] in (int, float) else str
        default = "" if field.default is None else f" (default: {field.default})"
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"{field.description}{default}")


def given(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The flags the user set; the rest take the model's defaults."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _engine_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine")
    add_model_flags(group, EngineConfig, ENGINE_FLAGS)
    group.add_argument(
        "--reward-model", action="append", default=[], help="An HF reward model directory to serve; repeatable."
    )
    group.add_argument("--no-judge", action="store_true", help="Do not serve the `helpfulness` judge objective.")


def request_from_args(args: argparse.Namespace) -> AlignRequest:
    return AlignRequest.parse(request_data_from_args(args))


def request_data_from_args(args: argparse.Namespace) -> dict:
    """The request's JSON body as the flags give it (unset flags absent, so the receiver's defaults apply)."""
    messages = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": args.question})
    data = {
        "messages": messages,
        "preferences": args.preferences,
        "search": {"strategy": args.strategy, **given(args, SEARCH_FLAGS)},
        "budget": given(args, BUDGET_FLAGS),
        "return_candidates": args.return_candidates,
        "stop": args.stop,
        "stream": args.stream,
        "return_prompt": args.return_prompt,
        **given(args, REQUEST_FLAGS),
    }
    if args.vector is not None:
        data["preference_vector"] = parse_vector(args.vector)
    if args.constraint:
        data["constraints"] = {n: {"min": m} for n, m in parse_vector(",".join(args.constraint), "constraints").items()}
    return {k: v for k, v in data.items() if v is not None and v != {}}


def rewards_config_from_args(args: argparse.Namespace):
    from aligner.rewards import RewardsConfig

    return RewardsConfig(judge=not getattr(args, "no_judge", False), models=[{"path": p} for p in args.reward_model])


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    # One-shot commands run eagerly: compiling the model would take longer than they do.
    return parse_model(EngineConfig, {"enforce_eager": True, **given(args, ENGINE_FLAGS)})


def format_scores(response) -> str:
    scores = ", ".join(f"{name}={value:.3f}" for name, value in response.scores.items())
    feasible = "" if response.feasible else " (violates a constraint: no candidate met them all)"
    usage = response.usage
    stopped = f"; stopped by {usage.stopped_by}" if usage.stopped_by else ""
    return (
        f"aligner: scores: {scores}; combined={response.combined_score:.3f}{feasible}\n"
        f"aligner: usage: {usage.generated_tokens} tokens generated, {usage.engine_requests} engine requests, "
        f"{usage.reward_calls} reward calls, {usage.wall_time_s:.2f}s{stopped}"
    )


def run_objectives(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from aligner.model_cache import resolve_model
    from aligner.rewards import build_catalog

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model, progress=status))
    rows = build_catalog(rewards_config_from_args(args), tokenizer=tokenizer).describe()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max(len(r["name"]) for r in rows)
        for r in sorted(rows, key=lambda r: r["name"]):
            print(f"{r['name']:<{width}}  [{r['low']:g}, {r['high']:g}]  {r['description']}")
    return 0


def int_list(text: str, field: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InvalidRequest(field, f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise InvalidRequest(field, f"expected positive integers, got {text!r}")
    return values


def run_prepare_model(args: argparse.Namespace) -> int:
    from aligner.model_cache import resolve_model

    print(resolve_model(args.model, progress=status))
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from aligner.bench import scoring

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for model in models:
        if model not in ("tiny", "small"):
            raise InvalidRequest("--models", f"unknown model {model!r}; allowed: tiny, small")
    report = scoring.run(
        models=models,
        candidates=int_list(args.candidates, "--candidates"),
        lengths=int_list(args.lengths, "--lengths"),
        repeats=args.repeats,
        device=args.device,
        progress=status,
    )
    out = Path(args.out or f"bench-results/scoring-{report['device'].replace(':', '')}.json")
    status(f"wrote {scoring.write(report, out)}")
    for name, target in report["targets"].items():
        values = ", ".join(f"{m['model']}@{m['max_len']}={m['value']}" for m in target["measured"])
        status(f"{name} at {target['at_candidates']} candidates (target >= {target['target_min']}): {values}")
    return 0


def run_search_bench(args: argparse.Namespace) -> int:
    from aligner.bench import search
    from aligner.bench.scoring import write
    from aligner.contract import STRATEGIES

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for strategy in strategies:
        if strategy not in STRATEGIES:
            raise InvalidRequest("--strategies", f"unknown strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    report = search.run(strategies=strategies, max_tokens=args.max_tokens, progress=status)
    out = write(report, Path(args.out or "bench-results/search-cpu.json"))
    status(f"wrote {out}")
    for name, value in report["ratios"].items():
        status(f"{name}: {value}")
    return 0


def run_safety_bench(args: argparse.Namespace) -> int:
    from aligner.bench import safety
    from aligner.bench.scoring import write

    report = safety.run(Path(args.probes) if args.probes else safety.DEFAULT_PROBES, max_tokens=args.max_tokens,
                        progress=status)
    out = write(report, Path(args.out or "bench-results/safety-cpu.json"))
    status(f"wrote {out}")
    print(json.dumps({k: report[k] for k in ("modes", "ratios", "targets")}, indent=2))
    return 0


async def run_generate(args: argparse.Namespace) -> int:
    request = request_from_args(args)
    config = engine_config_from_args(args)
    safety = safety_config_arg(args.safety_config)

    # Heavy imports only once the arguments are known to be valid.
    from transformers import AutoTokenizer

    from aligner.core import Aligner
    from aligner.engine.vllm import Engine
    from aligner.model_cache import resolve_model
    from aligner.prompting import prepare_prompt
    from aligner.rewards import build_catalog
    model_dir = resolve_model(config.model, progress=status)
    # Reject what cannot work before paying for engine start-up.
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    catalog = build_catalog(rewards_config_from_args(args), tokenizer=tokenizer)
    if safety is not None:  # the config file's errors name its own fields (thresholds.NAME)
        safety.check_objectives({o["name"]: (o["low"], o["high"]) for o in catalog.describe()})
    Aligner.check_objectives_of(request, catalog, safety)
    prepare_prompt(
        request,
        tokenizer=tokenizer,
        profile=config.profile,
        max_model_len=config.max_model_len,
        safety_config=None if safety is None else safety.text,
    )
    engine = Engine.start(config.model_copy(update={"model": str(model_dir)}), progress=status)
    catalog.attach_engine(engine)
    try:
        aligner = Aligner(engine, catalog)
        if request.stream:
            async for event in aligner.stream(request, safety=safety):
                if args.json:
                    print(json.dumps(event.to_dict()), flush=True)
                elif event.kind in ("delta", "chunk"):
                    print(event.text, end="", flush=True)
            if not args.json:
                print()
        else:
            response = await aligner.generate(request, safety=safety)
            if args.json:
                print(response.model_dump_json(indent=2, exclude_none=True))
            else:
                print(response.text)
                if response.scores is not None:
                    print(format_scores(response), file=sys.stderr)
    finally:
        engine.shutdown()
    return 0


def main(argv: list[str] | None = None, extend: Extension | None = None) -> int:
    args = build_parser(extend).parse_args(argv)
    # stdout carries only results (text or JSON); vLLM logs to stdout by default.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    if not args.verbose:
        # vLLM's start-up warnings (no Triton on CPU, eager mode) are noise for a CLI user.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return args.handler(args)
    except InvalidRequest as exc:
        print(f"aligner: error: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except AlignerError as exc:
        print(f"aligner: error: {exc.message}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("aligner: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
