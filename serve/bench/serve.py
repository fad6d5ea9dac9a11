"""`aligner bench serve`: the server against in-process Aligner and vLLM's own OpenAI server, in one run.

Phases; one engine decodes at a time (a small CPU machine has no cores to spare):

1. vLLM's OpenAI server (`python -m vllm.entrypoints.openai.api_server`) on the same
   model and engine settings: `sample` throughput at each client count, `--throughput-rounds` times;
2. the Ray Serve app with the cross-request scoring batcher on (default config):
   greedy `sample` latency through `/v1/generate` and gRPC `Generate` in turn with the same
   request on an in-process `Aligner` (its own engine, started before Ray), `sample` throughput
   over HTTP and gRPC at the largest client count, `sample` throughput through
   `/v1/chat/completions` (`--throughput-rounds` times), and `best_of_n` throughput + mean
   reward-batch size;
3. the app redeployed with the batcher off (`batch_window_ms: null`): `best_of_n` again;
4. vLLM's server again, as in 1: the app's throughput is compared with the median of vLLM's
   runs before and after it, so a machine whose speed drifts during the run (a shared host)
   does not decide the ratio.

With `--replicas 1,2` it runs `serve/bench/replicas.py` instead. The transport-overhead phases are in
`serve/bench/overhead.py`, the load generators in `serve/bench/load.py`.

The JSON holds the raw figures, the ratios and the targets with `met`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import ray
from ray import serve

from aligner.bench.common import DIRECTION, LOAD_PROMPTS, ratio, target, write
from aligner.engine.vllm import EngineConfig
from aligner.model_cache import resolve_model
from serve.app import proxy_options
from serve.bench.load import (
    admin_headers,
    chat_body,
    deploy,
    histogram_totals,
    mean_between,
    run_load,
    sample_request,
    sample_throughput,
    scratch_store,
)
from serve.bench.local_cluster import free_port
from serve.bench.overhead import InProcessAligner, interleaved_overhead, transport_throughput
from serve.bench.replicas import replicas_phase
from serve.bench.servers import vllm_throughput
from serve.config import ServerConfig

TARGETS = {
    "http_over_in_process_latency": {"max": 1.10},
    # gRPC overhead <= HTTP overhead, each against the same in-process request: measured with
    # 1-token requests, where the transport is not lost in the decoding time's noise.
    "grpc_over_http_overhead_1_token": {"max": 1.0},
    "aligner_over_vllm_tokens_per_s_at_max_clients": {"min": 0.9},
    "batcher_on_over_off_mean_batch_size": {"min": 1.3},
}
OFF_REWARDS = {"batch_window_ms": None}
OFF_NOTE = "batch_window_ms=null: every scoring call runs alone in its own worker thread, as a batch of one request."


def throughput_rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per client count from `run_load` summaries: the median tokens/s of its runs, with
    every run kept under `runs`."""
    by_clients: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        by_clients.setdefault(run["clients"], []).append(run)
    return [
        {"clients": clients, "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in rows), 2), "runs": rows}
        for clients, rows in sorted(by_clients.items())
    ]


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Ratios and targets from the raw phases of a report (missing phases give None / met false)."""
    ratios: dict[str, Any] = {}
    overhead = report.get("overhead", {})
    ratios["http_over_in_process_latency"] = ratio(
        overhead.get("http", {}).get("median_s"), overhead.get("in_process", {}).get("median_s")
    )
    aligner_tp = {r["clients"]: r["tokens_per_s"] for r in report.get("throughput", {}).get("aligner", [])}
    vllm_tp = {r["clients"]: r["tokens_per_s"] for r in report.get("throughput", {}).get("vllm", [])}
    ratios["aligner_over_vllm_tokens_per_s"] = {
        str(c): ratio(aligner_tp.get(c), vllm_tp.get(c)) for c in sorted(set(aligner_tp) | set(vllm_tp))
    }
    top = max(set(aligner_tp) | set(vllm_tp), default=None)
    ratios["aligner_over_vllm_tokens_per_s_at_max_clients"] = (
        ratio(aligner_tp.get(top), vllm_tp.get(top)) if top is not None else None
    )
    ratios["grpc_over_in_process_latency"] = ratio(
        overhead.get("grpc", {}).get("median_s"), overhead.get("in_process", {}).get("median_s")
    )
    ratios["grpc_over_http_latency"] = ratio(
        overhead.get("grpc", {}).get("median_s"), overhead.get("http", {}).get("median_s")
    )
    short = report.get("overhead_1_token", {}).get("overhead_ms", {})
    ratios["grpc_over_http_overhead_1_token"] = ratio(short.get("grpc"), short.get("http"))
    transports = report.get("transports", {})
    ratios["grpc_over_http_tokens_per_s_at_max_clients"] = ratio(
        transports.get("grpc", {}).get("tokens_per_s"), transports.get("http", {}).get("tokens_per_s")
    )
    by_replicas = {r["replicas"]: r["tokens_per_s"] for r in report.get("replicas", [])}
    if len(by_replicas) >= 2:
        most, fewest = max(by_replicas), min(by_replicas)
        ratios[f"replicas_{most}_over_{fewest}_tokens_per_s"] = ratio(by_replicas[most], by_replicas[fewest])
    best = report.get("best_of_n", {})
    on, off = best.get("batcher_on", {}), best.get("batcher_off", {})
    ratios["batcher_on_over_off_mean_batch_size"] = ratio(
        on.get("mean_reward_batch_size"), off.get("mean_reward_batch_size")
    )
    ratios["batcher_on_over_off_tokens_per_s"] = ratio(on.get("tokens_per_s"), off.get("tokens_per_s"))
    targets = {name: target(ratios.get(name), spec) for name, spec in TARGETS.items()}
    return {"ratios": ratios, "targets": targets}


async def best_of_n_phase(
    base: str, model: str, headers: dict[str, str], args, progress, label: str, *, metrics_headers: dict[str, str]
) -> dict[str, Any]:
    def body(c: int, i: int) -> dict[str, Any]:
        return chat_body(
            model,
            LOAD_PROMPTS[(c + i) % len(LOAD_PROMPTS)],
            args.max_tokens,
            {
                "temperature": 1.0,
                "seed": c * 100 + i,
                "preference_vector": DIRECTION,
                "search": {"strategy": "best_of_n", "n": args.n},
            },
        )

    url = f"{base}/v1/chat/completions"
    await run_load(url, body, 1, 1, headers)  # warm-up (loads the reward models)

    async def read_metrics() -> tuple[float, float]:
        await asyncio.sleep(args.metrics_settle_s)  # replicas push metrics every metrics_interval_s
        async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
            r = await client.get(f"{base}/metrics", headers=metrics_headers)
            r.raise_for_status()
            return histogram_totals(r.text)

    before = await read_metrics()
    row = await run_load(url, body, args.best_of_n_clients, args.requests_per_client, headers)
    after = await read_metrics()
    mean = mean_between(before, after)
    row.update(
        n=args.n,
        reward_batches=after[1] - before[1],
        reward_batch_sequences=after[0] - before[0],
        mean_reward_batch_size=round(mean, 3) if mean is not None else None,
    )
    progress(
        f"best_of_n ({label}), {row['clients']} clients: {row['tokens_per_s']} tokens/s, "
        f"mean reward batch {row['mean_reward_batch_size']}"
    )
    return row


def server_phases(engine_config, model_dir: Path, args, report: dict[str, Any], progress) -> None:
    """Phases 2 and 3: the app with the batcher on (overhead, transports, chat throughput, best_of_n), then off."""
    store, store_url, headers = scratch_store("bench-serve-")
    port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    grpc_target = f"127.0.0.1:{grpc_port}"
    grpc_metadata = (("authorization", headers["Authorization"]),)
    metrics_headers = admin_headers(store)  # /metrics needs an admin key

    def config(rewards: dict[str, Any]) -> ServerConfig:
        return ServerConfig.load(
            {
                "engine": engine_config.model_dump(mode="json"),
                "rewards": rewards,
                "tenant_store": store_url,
                "http_host": "127.0.0.1",
                "http_port": port,
                "grpc_port": grpc_port,
                "replica_num_cpus": 0,
                "max_ongoing_requests": max(32, max(args.clients), args.best_of_n_clients),
            }
        )

    def deploy_timed(cfg: ServerConfig, what: str) -> None:
        progress(f"deploying the app ({what}); the engine starts in the replica")
        t0 = time.monotonic()
        deploy(cfg, base)
        progress(f"app ready in {time.monotonic() - t0:.0f}s")

    progress("starting the in-process reference engine (before Ray, so the two do not start at once)")
    local = InProcessAligner(engine_config, progress)
    local_running = True
    try:  # from here on, whatever fails, the in-process engine and Ray are shut down
        progress("starting Ray")
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            logging_level="WARNING",
            log_to_driver=bool(os.environ.get("ALIGNER_RAY_LOGS")),
        )
        on_config = config({})
        serve.start(**proxy_options(on_config))
        report["server_config"] = {"rewards_on": on_config.rewards.model_dump(), "rewards_off": OFF_REWARDS}
        deploy_timed(on_config, "scoring batcher on")
        model = model_dir.name
        report["overhead"] = interleaved_overhead(
            local,
            f"{base}/v1/generate",
            grpc_target,
            sample_request(args.max_tokens),
            args.repeats,
            headers,
            grpc_metadata,
        )
        report["overhead_1_token"] = interleaved_overhead(
            local,
            f"{base}/v1/generate",
            grpc_target,
            sample_request(1),
            10 * args.repeats,
            headers,
            grpc_metadata,
        )
        for name in ("overhead", "overhead_1_token"):
            overhead = report[name]
            progress(
                f"{name}: median latency HTTP {overhead['http']['median_s']}s, gRPC "
                f"{overhead['grpc']['median_s']}s, in-process {overhead['in_process']['median_s']}s; "
                f"overhead vs in-process (ms): {overhead['overhead_ms']}"
            )
        local.close()
        local_running = False
        report["transports"] = asyncio.run(
            transport_throughput(base, grpc_target, headers, grpc_metadata, args, progress)
        )
        report["throughput"]["aligner"] = throughput_rows(
            asyncio.run(sample_throughput(f"{base}/v1/chat/completions", model, headers, args, progress, "aligner"))
        )
        report["best_of_n"]["batcher_on"] = asyncio.run(
            best_of_n_phase(base, model, headers, args, progress, "batcher on", metrics_headers=metrics_headers)
        )
        progress("removing the app before redeploying with the batcher off")
        serve.delete(on_config.app_name)
        deploy_timed(config(OFF_REWARDS), "scoring batcher off: batch_window_ms=null")
        report["best_of_n"]["batcher_off"] = asyncio.run(
            best_of_n_phase(base, model, headers, args, progress, "batcher off", metrics_headers=metrics_headers)
        )
    finally:
        try:
            if local_running:
                local.close()
            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()
            store.close()


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> int:
    """Every phase in turn (or the replicas phase); the report is written after each. Exit status 1 if one failed."""

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt  # run the phases' cleanup (vLLM server, Serve, Ray) on SIGTERM too

    signal.signal(signal.SIGTERM, on_sigterm)
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = resolve_model(args.model, progress=progress)
    engine_config = EngineConfig(
        model=str(model_dir),
        dtype="float32",
        max_model_len=args.max_model_len,
        kv_cache_gib=args.kv_cache_gib,
        max_num_seqs=args.max_num_seqs,
        block_size=32,
    )
    report: dict[str, Any] = {
        "benchmark": "serve",
        "model": model_dir.name,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "engine": engine_config.model_dump(mode="json", exclude={"model", "profile"}),
        "settings": {
            "max_tokens": args.max_tokens,
            "clients": args.clients,
            "requests_per_client": args.requests_per_client,
            "repeats": args.repeats,
            "replicas": args.replicas,
            "transport_rounds": args.transport_rounds,
            "throughput_rounds": args.throughput_rounds,
            "best_of_n_clients": args.best_of_n_clients,
            "n": args.n,
            "direction": DIRECTION,
        },
        "notes": {
            "overhead": "greedy `sample` (temperature 0, fixed seed), the same body in turn on Aligner.generate "
            "(its own engine in the bench process), /v1/generate and gRPC Generate, while the app runs; medians "
            "after one warm-up of each; overhead_ms: median per-round difference to the in-process time. "
            "overhead_1_token: the same with max_tokens 1. Lengths: usage.completion_tokens "
            "(no ignore-eos in the aligner).",
            "transports": "sample throughput at the largest client count: native /v1/generate bodies over HTTP and "
            "the same requests as gRPC Generate calls on one channel, transports alternating round by round.",
            "throughput": "completion tokens (usage.completion_tokens) / wall time; each client sends its requests "
            "one after another; same chat bodies (temperature 0) to both servers; tokens_per_s: the median of "
            "`runs` (vLLM: its runs before and after the app together).",
            "batcher_off": OFF_NOTE,
            "replicas": "native greedy `sample` bodies to /v1/generate at the largest client count, through the "
            "head's proxy; one model replica per Ray node, all nodes on this machine (so they share its cores). "
            "capacity: per-strategy means over `repeats` sequential requests with 1 replica; "
            "decode_bound_requests_per_s = replica tokens/s / generated tokens per request.",
        },
        "overhead": {},
        "overhead_1_token": {},
        "throughput": {},
        "transports": {},
        "best_of_n": {},
        "replicas": [],
        "errors": {},
    }
    started = time.monotonic()
    phases = []
    if args.replicas:
        phases.append(("replicas", lambda: replicas_phase(engine_config, model_dir, args, report, progress)))
    else:
        vllm_runs: list[dict[str, Any]] = []

        def vllm_bracket(label: str) -> None:
            vllm_runs.extend(vllm_throughput(engine_config, model_dir, args, progress, label))
            report["throughput"]["vllm"] = throughput_rows(vllm_runs)

        if not args.skip_vllm:
            phases.append(("vllm_before", lambda: vllm_bracket("vllm before the app")))
        phases.append(("server", lambda: server_phases(engine_config, model_dir, args, report, progress)))
        if not args.skip_vllm:
            phases.append(("vllm_after", lambda: vllm_bracket("vllm after the app")))
    out_path = Path(
        args.out or ("bench-results/serve-replicas-cpu.json" if args.replicas else "bench-results/serve-cpu.json")
    )
    for name, phase in phases:
        progress(f"phase {name}")
        try:
            phase()
        except Exception as exc:  # keep the other phases' figures
            report["errors"][name] = f"{type(exc).__name__}: {exc}"
            progress(f"phase {name} failed: {report['errors'][name]}")
        report["total_s"] = round(time.monotonic() - started, 1)
        report.update(summarize(report))
        if args.replicas:
            report["targets"] = {}  # the targets belong to the phases not run in this mode
        write(report, out_path)  # after every phase, so an interrupted run keeps what it measured
    print(json.dumps({"ratios": report["ratios"], "targets": report["targets"]}, indent=2))
    progress(f"wrote {out_path}")
    return 1 if report["errors"] else 0
