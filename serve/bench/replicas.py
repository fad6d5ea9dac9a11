"""`aligner bench serve --replicas 1,2`: throughput per replica count on a local cluster, and the inputs
of the capacity model in docs/deploy.md.

One Ray node per replica (`ray start` each, one model replica per node), all on this machine: `sample`
throughput at the largest client count for each replica count, then each strategy's per-request cost
with the fewest replicas.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from ray import serve

from aligner.bench.common import DIRECTION, LOAD_PROMPTS
from serve.app import proxy_options
from serve.bench.load import deploy, run_load, sample_request, scratch_store
from serve.bench.local_cluster import MODEL_RESOURCE, LocalCluster
from serve.config import ServerConfig

# The request of each strategy whose cost the capacity model takes (on top of a `sample` body).
STRATEGY_REQUESTS = {
    "sample": {},
    "best_of_n": {"search": {"strategy": "best_of_n", "n": 4}, "preference_vector": DIRECTION},
    "rejection": {
        "search": {"strategy": "rejection", "batch": 2, "max_rounds": 2, "threshold": 0.9},
        "preference_vector": DIRECTION,
    },
    "beam": {
        "search": {"strategy": "beam", "beam_width": 2, "expansions": 2, "chunk_tokens": 16},
        "preference_vector": DIRECTION,
    },
}


def capacity_inputs(usages: Sequence[dict[str, Any]], tokens_per_s: float | None) -> dict[str, Any]:
    """Per-request cost of one strategy (means over `usages`) and the requests/s one replica can
    serve at `tokens_per_s` of decoding when decoding is the bottleneck."""

    def mean(values):
        values = list(values)
        return round(statistics.mean(values), 4) if values else None

    generated = mean(u["generated_tokens"] for u in usages)
    out = {
        "requests": len(usages),
        "generated_tokens": generated,
        "completion_tokens": mean(u["completion_tokens"] for u in usages),
        "reward_calls": mean(u["reward_calls"] for u in usages),
        "engine_requests": mean(u["engine_requests"] for u in usages),
        "generate_s": mean(u.get("stage_seconds", {}).get("generate", 0.0) for u in usages),
        "score_s": mean(u.get("stage_seconds", {}).get("score", 0.0) for u in usages),
        "wall_s": mean(u["wall_time_s"] for u in usages),
    }
    out["decode_bound_requests_per_s"] = round(tokens_per_s / generated, 3) if tokens_per_s and generated else None
    return out


def strategy_costs(base: str, headers: dict[str, str], args, tokens_per_s: float | None, progress) -> dict[str, Any]:
    """`capacity_inputs` of every strategy of `STRATEGY_REQUESTS`, over `args.repeats` sequential requests."""
    costs = {}
    with httpx.Client(timeout=900, trust_env=False) as client:
        for strategy, extra in STRATEGY_REQUESTS.items():
            usages = []
            for i in range(args.repeats):
                r = client.post(
                    f"{base}/v1/generate",
                    headers=headers,
                    json={
                        **sample_request(args.max_tokens),
                        "temperature": 1.0,
                        "seed": i,
                        "prompt": LOAD_PROMPTS[i % len(LOAD_PROMPTS)],
                        **extra,
                    },
                )
                r.raise_for_status()
                usages.append(r.json()["usage"])
            costs[strategy] = capacity_inputs(usages, tokens_per_s)
            progress(f"{strategy}: {costs[strategy]}")
    return costs


def replicas_phase(engine_config, model_dir: Path, args, report: dict[str, Any], progress) -> None:
    """Sample throughput at the largest client count with each replica count, on a local cluster of
    max(replicas) Ray nodes (`ray start` each, one model replica per node), and per-strategy
    request costs for the capacity model."""
    store, store_url, headers = scratch_store("bench-replicas-")
    cluster = LocalCluster(nodes=max(args.replicas), cpus_per_node=1)
    clients = max(args.clients)
    rows = []
    try:
        cluster.start(progress=progress)
        base = f"http://127.0.0.1:{cluster.http_port}"

        def config(replicas: int) -> ServerConfig:
            return ServerConfig.load(
                {
                    "engine": engine_config.model_dump(mode="json"),
                    "tenant_store": store_url,
                    "http_port": cluster.http_port,
                    "grpc_port": cluster.grpc_port,
                    "num_replicas": replicas,
                    "max_replicas_per_node": 1,
                    "replica_resources": {MODEL_RESOURCE: 1},
                    "replica_num_cpus": 0,
                    "max_ongoing_requests": max(32, clients),
                    "max_queued_requests": 4 * clients,
                }
            )

        serve.start(proxy_location="EveryNode", **proxy_options(config(1)))

        def body(c: int, i: int) -> dict[str, Any]:
            return {**sample_request(args.max_tokens), "prompt": LOAD_PROMPTS[(c + i) % len(LOAD_PROMPTS)]}

        for replicas in args.replicas:
            progress(f"deploying {replicas} model replica(s), one per node")
            deploy(config(replicas), base)
            asyncio.run(run_load(f"{base}/v1/generate", body, replicas, 1, headers))  # warm-up
            row = asyncio.run(run_load(f"{base}/v1/generate", body, clients, args.requests_per_client, headers))
            row["replicas"] = replicas
            progress(f"{replicas} replica(s), {clients} clients: {row['tokens_per_s']} tokens/s")
            rows.append(row)
            if replicas == min(args.replicas):
                report["capacity"] = {
                    "replica_tokens_per_s": row["tokens_per_s"],
                    "clients": clients,
                    "strategies": strategy_costs(base, headers, args, row["tokens_per_s"], progress),
                }
            serve.delete("aligner")
    finally:
        try:
            serve.shutdown()
        finally:
            cluster.stop()
            store.close()
    report["replicas"] = rows
