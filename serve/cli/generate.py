"""`aligner generate`: one aligned response, in-process on its own engine or, with `--server`, by a running server.

The flags build one JSON request body either way. In-process, the request is checked against the
catalog and its prompt composed before the engine starts; with `--server HOST:PORT` the body goes to
`POST /v1/generate` (SSE when streaming) or, with `--grpc`, to `aligner.v1.Aligner/Generate`
(`GenerateStream`). Both paths print through one `AnswerPrinter`, so the output is the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aligner.contract import AlignRequest, AlignResponse, Budget, SearchSpec, parse_model
from aligner.engine.vllm import Engine, EngineConfig
from aligner.errors import InvalidRequest, ServerError
from aligner.model_cache import resolve_model
from aligner.objectives import check_objectives
from aligner.prompting import prepare_prompt
from aligner.safety.config import SafetyConfig
from aligner.search import registry as search_registry
from serve.cli.options import add_model_flags, add_reward_flags, given, parse_vector, rewards_config, status
from serve.cli.safety import read_config
from serve.client import http as http_client

# The search flags: one --flag per parameter of a registered strategy (help and default from SearchSpec).
SEARCH_FLAGS = tuple(field for field in SearchSpec.model_fields if field != "strategy")
_OTHERS = [name for name in search_registry.names() if name != "sample"]
STRATEGY_HELP = f"Search strategy: sample (default), {', '.join(_OTHERS[:-1])} or {_OTHERS[-1]}."
BUDGET_FLAGS = ("max_candidate_tokens", "max_reward_calls", "deadline_ms")
REQUEST_FLAGS = ("combination", "seed", "temperature", "top_p", "max_tokens")
ENGINE_FLAGS = ("model", "dtype", "max_model_len", "kv_cache_gib", "block_size")
# Flags that configure an in-process engine or catalog: meaningless against a server.
LOCAL_ONLY = ("safety_config", "model", "dtype", "max_model_len", "kv_cache_gib", "block_size")


def add_arguments(gen: argparse.ArgumentParser) -> None:
    gen.add_argument("question", help="The user's message.")
    gen.add_argument("--system", help="A system message from the user (comes after the safety config).")
    gen.add_argument("--prefer", dest="preferences", help='Free-text preferences, e.g. "concise, formal".')
    gen.add_argument("--vector", help="Preference direction, e.g. helpfulness=0.8,verbosity=-0.6 (normalised).")
    gen.add_argument(
        "--safety-config",
        help="Tenant safety config: text, @FILE of text, or @FILE.yaml/.json "
        "with a whole config (text, thresholds, action, ...) enforced on the answer.",
    )
    gen.add_argument("--strategy", default="sample", help=STRATEGY_HELP)
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
    engine = gen.add_argument_group("engine")
    add_model_flags(engine, EngineConfig, ENGINE_FLAGS)
    add_reward_flags(engine)
    server = gen.add_argument_group("server (instead of an in-process engine)")
    server.add_argument("--server", metavar="HOST:PORT", help="Send the request to a running server (HTTP by default).")
    server.add_argument("--grpc", action="store_true", help="With --server: use the gRPC API (port 9000 by default).")
    server.add_argument("--key", help=f"With --server: the API key (default: ${http_client.KEY_ENV}).")


def run(args: argparse.Namespace) -> int:
    if args.server:
        return run_on_server(args)
    if args.grpc or args.key:
        raise InvalidRequest("--server", "--grpc and --key apply only with --server HOST:PORT")
    return asyncio.run(run_in_process(args))


# -- the request ------------------------------------------------------------------------------


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


def request_from_args(args: argparse.Namespace) -> AlignRequest:
    return AlignRequest.parse(request_data_from_args(args))


def safety_config_arg(value: str | None) -> SafetyConfig | None:
    """`--safety-config`: literal text, @FILE of text, or @FILE.yaml/.yml/.json holding a whole SafetyConfig
    (thresholds and action included, as `aligner safety set` takes it)."""
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


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    # One-shot commands run eagerly: compiling the model would take longer than they do.
    return parse_model(EngineConfig, {"enforce_eager": True, **given(args, ENGINE_FLAGS)})


# -- printing ---------------------------------------------------------------------------------


class AnswerPrinter:
    """Prints one answer as `aligner generate` does, from events in their wire form (`{"type": ...}`,
    as the native streaming route sends them), whoever produced them: stdout gets the text (or the
    JSON), stderr the scores."""

    def __init__(self, *, stream: bool, as_json: bool):
        self.stream = stream
        self.as_json = as_json
        self.response: dict[str, Any] | None = None

    def print_all(self, events: Iterable[dict[str, Any]]) -> int:
        for event in events:
            self.event(event)
        return self.finish()

    def event(self, event: dict[str, Any]) -> None:
        if event["type"] in ("delta", "chunk") and self.stream:
            if self.as_json:
                print(json.dumps(event), flush=True)
            else:
                print(event["text"], end="", flush=True)
        elif event["type"] == "done":
            self.response = event["response"]
            if self.stream and self.as_json:
                print(json.dumps(event), flush=True)

    def finish(self) -> int:
        if self.response is None:
            raise ServerError("internal", "the server ended the answer without a response")
        if self.stream:
            if not self.as_json:
                print()
            return 0
        if self.as_json:
            # pydantic's rendering, as in-process `--json` always printed it (non-ASCII text kept as is)
            print(AlignResponse.model_validate(self.response).model_dump_json(indent=2, exclude_none=True))
        else:
            print(self.response["text"])
            if self.response.get("scores") is not None:
                print(format_scores(AlignResponse.model_validate(self.response)), file=sys.stderr)
        return 0


def format_scores(response: AlignResponse) -> str:
    scores = ", ".join(f"{name}={value:.3f}" for name, value in (response.scores or {}).items())
    feasible = "" if response.feasible else " (violates a constraint: no candidate met them all)"
    usage = response.usage
    stopped = f"; stopped by {usage.stopped_by}" if usage.stopped_by else ""
    return (
        f"aligner: scores: {scores}; combined={response.combined_score:.3f}{feasible}\n"
        f"aligner: usage: {usage.generated_tokens} tokens generated, {usage.engine_requests} engine requests, "
        f"{usage.reward_calls} reward calls, {usage.wall_time_s:.2f}s{stopped}"
    )


# -- the two paths ----------------------------------------------------------------------------


def run_on_server(args: argparse.Namespace) -> int:
    for name in LOCAL_ONLY:
        if getattr(args, name, None) is not None:
            raise InvalidRequest(
                f"--{name.replace('_', '-')}", "configures an in-process engine; the server has its own"
            )
    if args.reward_model or args.no_judge:
        raise InvalidRequest("--reward-model", "configures an in-process catalog; the server has its own")
    key = http_client.api_key(args.key)
    data = request_data_from_args(args)
    if args.grpc:
        # Here, not at the top: grpc and protobuf come with the [serve] extra, which `aligner generate`
        # (in-process or over HTTP) does not need.
        from serve.client import grpc as grpc_client

        events = grpc_client.generate_events(args.server, key, data)
    else:
        events = http_client.generate_events(args.server, key, data)
    return AnswerPrinter(stream=args.stream, as_json=args.json).print_all(events)


async def run_in_process(args: argparse.Namespace) -> int:
    request = request_from_args(args)
    config = engine_config_from_args(args)
    safety = safety_config_arg(args.safety_config)

    # Here, once the arguments are known to be valid: torch and transformers take seconds to import.
    from transformers import AutoTokenizer

    from aligner.core import Aligner
    from aligner.rewards import build_catalog

    model_dir = resolve_model(config.model, progress=status)
    # Reject what cannot work before paying for engine start-up.
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    catalog = build_catalog(rewards_config(args), tokenizer=tokenizer)
    if safety is not None:  # the config file's errors name its own fields (thresholds.NAME)
        safety.check_objectives({o["name"]: (o["low"], o["high"]) for o in catalog.describe()})
    check_objectives(request, catalog, safety)
    prepare_prompt(
        request,
        tokenizer=tokenizer,
        profile=config.profile,
        max_model_len=config.max_model_len,
        safety_config=None if safety is None else safety.operator_text(),
    )
    engine = Engine.start(config.model_copy(update={"model": str(model_dir)}), progress=status)
    catalog.attach_engine(engine)
    printer = AnswerPrinter(stream=request.stream, as_json=args.json)
    try:
        aligner = Aligner(engine, catalog)
        if request.stream:
            async for event in aligner.stream(request, safety=safety):
                printer.event(event.to_dict())
        else:
            response = await aligner.generate(request, safety=safety)
            printer.event({"type": "done", "response": response.model_dump(mode="json", exclude_none=True)})
        return printer.finish()
    finally:
        engine.shutdown()
