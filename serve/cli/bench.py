"""`aligner bench scoring|search|safety|serve|peers|soak|tenants`: benchmarks that write JSON with side-by-side
ratios.

Thin: `scoring`, `search` and `safety` run in-process (`aligner/bench/`), `serve`, `peers`, `soak` and
`tenants` against servers (`serve/bench/`); this module holds their flags and hands over.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aligner.bench.common import write
from aligner.errors import InvalidRequest
from aligner.search import registry as search_registry
from serve.cli.options import int_list, status

SERVER_BENCHES = ("serve", "peers", "soak", "tenants")


def counts(text: str) -> list[int]:
    """`1,4,16` -> [1, 4, 16] (client or replica counts)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"counts must be positive integers, got {text!r}")
    return values


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def phase_order(text: str) -> list[str]:
    order = [p.strip() for p in text.split(",") if p.strip()]
    if sorted(order) != ["aligner", "vllm"]:
        raise argparse.ArgumentTypeError(f"expected the two phases 'vllm,aligner' in some order, got {text!r}")
    return order


def add_arguments(bench: argparse.ArgumentParser) -> None:
    benches = bench.add_subparsers(dest="bench", required=True)

    scoring = benches.add_parser("scoring", help="Reward scoring: one-at-a-time vs bucketed (vs CUDA graphs on GPU).")
    scoring.add_argument(
        "--models", default="tiny,small", help="tiny (2-layer random) and/or small (SmolLM2-135M backbone)."
    )
    scoring.add_argument("--candidates", default="1,4,16,64", help="Candidate counts (1,4,16,64).")
    scoring.add_argument("--lengths", default="64,128,256,512", help="Nominal token lengths (64,128,256,512).")
    scoring.add_argument("--repeats", type=int, default=3, help="Timed repeats per point; the median is kept (3).")
    scoring.add_argument("--device", help="cpu or cuda (default: cuda when available).")
    scoring.add_argument("--out", help="Output JSON (default: bench-results/scoring-DEVICE.json).")

    search = benches.add_parser("search", help="Latency, throughput and reward per compute of every strategy.")
    search.add_argument("--strategies", default="sample,best_of_n,rejection,beam,rps", help="Strategies to compare.")
    search.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request (64).")
    search.add_argument("--out", help="Output JSON (default: bench-results/search-cpu.json).")

    safety = benches.add_parser("safety", help="Refusal / false-refusal rates of tenant safety configs on a probe set.")
    safety.add_argument(
        "--probes",
        action="append",
        help="A probe set YAML, reported apart under its file name; repeat for more (default: the tuned and "
        "held-out sets, tests/data/safety_probes.yaml and safety_probes_heldout.yaml of this checkout).",
    )
    safety.add_argument("--max-tokens", type=int, default=48, help="max_tokens of every probe (48).")
    safety.add_argument("--out", help="Output JSON (default: bench-results/safety-cpu.json).")

    steering = benches.add_parser(
        "steering",
        help="Check satisfaction (sample vs best_of_n vs adaptive), preference following (words in the prompt vs "
        "scored), and best_of_n vs beam vs particle_filter at one token budget, side by side in one run.",
    )
    steering.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request (64).")
    steering.add_argument("--out", help="Output JSON (default: bench-results/steering-cpu.json).")

    add_serve_arguments(
        benches.add_parser(
            "serve",
            help="The server vs in-process Aligner (latency) and vs vLLM's OpenAI server (throughput); batcher on/off.",
        )
    )
    add_peers_arguments(
        benches.add_parser(
            "peers",
            help="Aligner vs its_hub on vLLM's own server (best-of-N) and vs vLLM's server (sample), both on "
            "their defaults, side by side in one run.",
        )
    )
    add_soak_arguments(
        benches.add_parser("soak", help="Valid, invalid and cancelled requests from many clients for a bounded time.")
    )
    add_tenants_arguments(
        benches.add_parser(
            "tenants",
            help="A light tenant's latency beside a heavy one, token shares by weight and throughput, with fair "
            "scheduling off and on, side by side in one run.",
        )
    )


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="embedded", help="A local HF model directory (default: the embedded model).")
    p.add_argument("--max-tokens", type=int, default=64, help="Tokens per response (default 64).")
    p.add_argument("--clients", type=counts, default=[1, 4, 16], help="Concurrent client counts (default 1,4,16).")
    p.add_argument(
        "--requests-per-client", type=int, default=2, help="Requests each client sends per load (default 2)."
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=6,
        help="Timed repeats of the latency request on each side (default 6; x10 for the 1-token one).",
    )
    p.add_argument(
        "--replicas",
        type=counts,
        default=None,
        help="Instead of the other phases: throughput at the largest client count with each number of "
        "model replicas (e.g. 1,2), on a local cluster of that many Ray nodes, and per-strategy request "
        "costs for the capacity model (writes bench-results/serve-replicas-cpu.json).",
    )
    p.add_argument(
        "--throughput-rounds",
        type=int,
        default=3,
        help="Chat-completions throughput runs per client count on each side (default 3; vLLM gets "
        "that many before the app and again after it).",
    )
    p.add_argument(
        "--transport-rounds",
        type=int,
        default=2,
        help="Alternating HTTP/gRPC throughput rounds at the largest client count (default 2).",
    )
    p.add_argument(
        "--best-of-n-clients", type=int, default=16, help="Concurrent clients of the best_of_n phase (default 16)."
    )
    p.add_argument("--n", type=int, default=4, help="best_of_n candidates (default 4).")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--max-num-seqs", type=int, default=16)
    p.add_argument("--kv-cache-gib", type=float, default=0.5)
    p.add_argument(
        "--metrics-settle-s",
        type=float,
        default=4.0,
        help="Wait before each /metrics read (default 4: twice the replicas' metrics_interval_s).",
    )
    p.add_argument("--skip-vllm", action="store_true", help="Skip the vLLM OpenAI server comparison.")
    p.add_argument("--out", help="Output JSON (default: bench-results/serve-cpu.json).")


def add_peers_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="embedded", help="A local HF model directory (default: the embedded model).")
    p.add_argument(
        "--n", type=positive, default=4, help="Candidates per best-of-N request (its_hub's budget; default 4)."
    )
    p.add_argument("--max-tokens", type=positive, default=48, help="Tokens per candidate (default 48).")
    p.add_argument("--temperature", type=float, default=0.8, help="Sampling temperature of best-of-N (default 0.8).")
    p.add_argument("--clients-best-of-n", type=positive, default=8, help="Concurrent best-of-N clients (default 8).")
    p.add_argument(
        "--clients", type=counts, default=[1, 16], help="Concurrent client counts of the sample loads (default 1,16)."
    )
    p.add_argument(
        "--requests-per-client", type=positive, default=2, help="Requests each client sends per load (default 2)."
    )
    p.add_argument("--particles", type=positive, default=4, help="Particles of the particle filters (default 4).")
    p.add_argument("--chunk-tokens", type=positive, default=16, help="Tokens per particle-filter step (default 16).")
    p.add_argument(
        "--rounds",
        type=positive,
        default=3,
        help="Best-of-N loads per side; requests/s is their median (default 3: one short load is at the "
        "mercy of a shared host's drift).",
    )
    p.add_argument(
        "--order",
        type=phase_order,
        default=["vllm", "aligner"],
        help="Which server is measured first (default vllm,aligner).",
    )
    p.add_argument("--out", help="Output JSON (default: bench-results/peers-cpu.json).")


def add_soak_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="embedded", help="A local HF model directory (default: the embedded model).")
    p.add_argument("--duration-s", type=float, default=180.0, help="How long clients send requests (default 180).")
    p.add_argument("--clients", type=int, default=16, help="Concurrent clients (default 16).")
    p.add_argument("--max-tokens", type=int, default=16, help="Tokens per valid response (default 16).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the request mix (default 0).")
    p.add_argument("--kv-cache-gib", type=float, default=0.5)
    p.add_argument("--memory-interval-s", type=float, default=5.0, help="Memory sampling period (default 5).")
    p.add_argument("--out", help="Output JSON (default: bench-results/soak-cpu.json).")


def add_tenants_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="embedded", help="A local HF model directory (default: the embedded model).")
    p.add_argument("--slots", type=positive, default=4, help="max_ongoing_requests of the model replica (default 4).")
    p.add_argument("--light-requests", type=positive, default=12, help="Light requests per measurement (default 12).")
    p.add_argument("--light-max-tokens", type=positive, default=16, help="max_tokens of a light request (default 16).")
    p.add_argument("--heavy-clients", type=positive, default=8, help="The heavy tenant's clients (default 8).")
    p.add_argument("--heavy-max-tokens", type=positive, default=32, help="max_tokens of a heavy request (default 32).")
    p.add_argument("--n", type=positive, default=8, help="best_of_n candidates of a heavy request (default 8).")
    p.add_argument("--share-clients", type=positive, default=6, help="Each tenant's clients in a share run (6).")
    p.add_argument("--share-s", type=float, default=60.0, help="Window of a share run in seconds (default 60).")
    p.add_argument("--warm-s", type=float, default=3.0, help="Flooding before each measurement, seconds (default 3).")
    p.add_argument("--clients", type=positive, default=16, help="Clients of the throughput load (default 16).")
    p.add_argument("--requests-per-client", type=positive, default=8, help="Requests per throughput client (8).")
    p.add_argument(
        "--throughput-rounds",
        type=positive,
        default=3,
        help="Throughput loads per deployment; its figure is the median (default 3).",
    )
    p.add_argument("--max-num-seqs", type=positive, default=32, help="The engine's max_num_seqs (default 32).")
    p.add_argument(
        "--busy-sequences",
        type=positive,
        default=8,
        help="fair_busy_sequences of the deployment with fairness on (default 8: a quarter of --max-num-seqs).",
    )
    p.add_argument("--kv-cache-gib", type=float, default=0.5, help="The engine's KV cache in GiB (default 0.5).")
    p.add_argument("--out", help="Output JSON (default: bench-results/tenants-cpu.json).")


def run(args: argparse.Namespace) -> int:
    if args.bench in SERVER_BENCHES:
        # Here, not at the top: the server benches import Ray, which only they and `aligner serve` need.
        from serve.bench import peers, serve, soak, tenants

        benches = {"serve": serve, "peers": peers, "soak": soak, "tenants": tenants}
        return benches[args.bench].run(args, progress=status)
    # Here, not at the top: the in-process benches import torch, which `aligner --help` never needs.
    from aligner.bench import safety, scoring, search, steering

    if args.bench == "scoring":
        return run_scoring(args, scoring)
    if args.bench == "search":
        return run_search(args, search)
    if args.bench == "steering":
        return run_steering(args, steering)
    return run_safety(args, safety)


def run_scoring(args: argparse.Namespace, scoring_bench) -> int:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for model in models:
        if model not in ("tiny", "small"):
            raise InvalidRequest("--models", f"unknown model {model!r}; allowed: tiny, small")
    report = scoring_bench.run(
        models=models,
        candidates=int_list(args.candidates, "--candidates"),
        lengths=int_list(args.lengths, "--lengths"),
        repeats=args.repeats,
        device=args.device,
        progress=status,
    )
    out = Path(args.out or f"bench-results/scoring-{report['device'].replace(':', '')}.json")
    status(f"wrote {write(report, out)}")
    for name, target in report["targets"].items():
        values = ", ".join(f"{m['model']}@{m['max_len']}={m['value']}" for m in target["measured"])
        status(f"{name} at {target['at_candidates']} candidates (target >= {target['target_min']}): {values}")
    return 0


def run_search(args: argparse.Namespace, search_bench) -> int:
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for strategy in strategies:
        if strategy not in search_registry.names():
            allowed = ", ".join(search_registry.names())
            raise InvalidRequest("--strategies", f"unknown strategy {strategy!r}; allowed: {allowed}")
    report = search_bench.run(strategies=strategies, max_tokens=args.max_tokens, progress=status)
    out = write(report, Path(args.out or "bench-results/search-cpu.json"))
    status(f"wrote {out}")
    for name, value in report["ratios"].items():
        status(f"{name}: {value}")
    return 0


def run_steering(args: argparse.Namespace, steering_bench) -> int:
    report = steering_bench.run(max_tokens=args.max_tokens, progress=status)
    out = write(report, Path(args.out or "bench-results/steering-cpu.json"))
    status(f"wrote {out}")
    print(json.dumps(report["targets"], indent=2))
    return 0


def run_safety(args: argparse.Namespace, safety_bench) -> int:
    sets = {Path(p).stem: Path(p) for p in args.probes} if args.probes else safety_bench.PROBE_SETS
    report = safety_bench.run(sets, max_tokens=args.max_tokens, progress=status)
    out = write(report, Path(args.out or "bench-results/safety-cpu.json"))
    status(f"wrote {out}")
    shown = {name: {k: s[k] for k in ("modes", "ratios")} for name, s in report["sets"].items()}
    print(json.dumps({"sets": shown, "targets": report["targets"]}, indent=2))
    return 0
