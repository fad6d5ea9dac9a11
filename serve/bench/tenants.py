"""`aligner bench tenants`: what tenants cost each other on shared model replicas, side by side in one run.

One Ray session, one model replica, the app deployed three times: with `fair_scheduling` off (one
first-come, first-served queue, as before fair scheduling), on, and off again (alone and throughput
only), so that a drift of the machine over the run does not pass for a cost of fairness; each
deployment starts only once the previous one's engine processes are gone. Each measures:

- a light tenant's latency (greedy `sample`, one request after another), alone and beside a heavy
  neighbour whose clients flood best_of_n (more clients than the replica has slots, so it always has
  requests queued); target with fairness on (and `fair_busy_sequences`, --busy-sequences): p50 within
  1.5x of alone; with the heavy tenant's candidate tokens per second meanwhile, what the room kept in the
  engine's batch costs it;
- `sample` throughput at 16 clients: fairness off and no tenant policy ("all off"), against fairness
  on, the tenant under a policy with rate limits and a concurrency cap set far above the load
  (quotas checked on every request without refusing one) and usage metered (always on); target
  >= 0.98;
- with fairness on only: the shares of generated candidate tokens of two backlogged tenants with
  weights 1:1 and 3:1 (each tenant's tokens of the requests that ended inside the window, both
  tenants' clients sending the same best_of_n bodies throughout); target within 10% of the weights.

Then, on a deployment of its own with 2 ingress replicas (serve/bench/rate_limit.py): the requests a
tenant under `requests_per_minute` gets admitted by both together, over what its bucket allows;
target at most 1.05.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import ray
from ray import serve

from aligner.bench.common import DIRECTION, LOAD_PROMPTS, ratio, target, write
from aligner.model_cache import resolve_model
from aligner.tenants import TenantPolicy, TenantStore
from serve.app import proxy_options
from serve.bench.load import deploy, run_load, sample_request, scratch_store
from serve.bench.local_cluster import free_port
from serve.bench.rate_limit import rate_limit_accuracy
from serve.config import ServerConfig

TARGETS = {
    "light_p50_on_vs_alone": {"max": 1.5},
    "share_error_1_1": {"max": 0.1},
    "share_error_3_1": {"max": 0.1},
    "throughput_on_vs_off": {"min": 0.98},
    "rate_limit_accuracy": {"max": 1.05},
}
POLICY_CACHE_S = 1.5  # a policy written to the store is in force at every ingress within a second


def heavy_body(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {
        "prompt": LOAD_PROMPTS[seed % len(LOAD_PROMPTS)],
        "max_tokens": args.heavy_max_tokens,
        "temperature": 0.8,
        "seed": seed,
        "preference_vector": DIRECTION,
        "search": {"strategy": "best_of_n", "n": args.n},
    }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 4)


class Tenant:
    """One tenant's clients against the app: what they sent and what it cost."""

    def __init__(self, client: httpx.AsyncClient, url: str, key: str):
        self.client, self.url = client, url
        self.headers = {"Authorization": f"Bearer {key}"}
        self.latencies: list[float] = []
        self.tokens: list[tuple[float, int]] = []  # (when it ended, its generated candidate tokens)
        self.refused = 0

    async def send(self, body: dict[str, Any]) -> None:
        started = time.monotonic()
        reply = await self.client.post(self.url, json=body, headers=self.headers)
        if reply.status_code == 429:  # the tenant's queue is full: wait as told, as a client would
            self.refused += 1
            await asyncio.sleep(float(reply.headers.get("Retry-After", "1")))
            return
        if reply.status_code != 200:
            raise RuntimeError(f"{self.url} answered {reply.status_code}: {reply.text[:300]}")
        usage = reply.json()["usage"]
        self.latencies.append(time.monotonic() - started)
        self.tokens.append((time.monotonic(), int(usage["candidate_tokens"] or usage["generated_tokens"])))

    async def flood(self, clients: int, body: Callable[[int], dict[str, Any]], stop: asyncio.Event) -> None:
        async def loop(c: int) -> None:
            i = 0
            while not stop.is_set():
                await self.send(body(1000 * c + i))
                i += 1

        await asyncio.gather(*(loop(c) for c in range(clients)))

    def tokens_between(self, start: float, end: float) -> int:
        return sum(tokens for when, tokens in self.tokens if start <= when <= end)


async def light_latency(base: str, keys: dict[str, str], args: argparse.Namespace, heavy: bool) -> dict[str, Any]:
    """The light tenant's requests one after another, alone or beside the heavy tenant's flood."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0), trust_env=False) as client:
        light = Tenant(client, f"{base}/v1/generate", keys["light"])
        neighbour = Tenant(client, f"{base}/v1/generate", keys["heavy"])
        stop = asyncio.Event()
        flood = asyncio.ensure_future(
            neighbour.flood(args.heavy_clients if heavy else 0, lambda s: heavy_body(args, s), stop)
        )
        await asyncio.sleep(args.warm_s if heavy else 0)  # the heavy tenant fills the slots and its queue
        start = time.monotonic()
        try:
            for _ in range(args.light_requests):
                await light.send(sample_request(args.light_max_tokens))
        finally:
            end = time.monotonic()
            stop.set()
            await flood
    return {
        "requests": len(light.latencies),
        "p50_s": percentile(light.latencies, 0.5),
        "p95_s": percentile(light.latencies, 0.95),
        "heavy_requests": len(neighbour.latencies),
        "heavy_refused": neighbour.refused,
        # What the room kept for the light tenant costs the heavy one: its candidate tokens served meanwhile.
        "heavy_tokens_per_s": round(neighbour.tokens_between(start, end) / (end - start), 1) if heavy else None,
    }


async def token_shares(base: str, keys: tuple[str, str], weights: tuple[float, float], args) -> dict[str, Any]:
    """Two tenants backlogged with the same best_of_n bodies for `share_s`: each one's share of the tokens."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0), trust_env=False) as client:
        tenants = [Tenant(client, f"{base}/v1/generate", key) for key in keys]
        stop = asyncio.Event()
        floods = [
            asyncio.ensure_future(t.flood(args.share_clients, lambda s: heavy_body(args, s), stop)) for t in tenants
        ]
        await asyncio.sleep(args.warm_s)
        start = time.monotonic()
        await asyncio.sleep(args.share_s)
        end = time.monotonic()
        stop.set()
        await asyncio.gather(*floods)
    tokens = [t.tokens_between(start, end) for t in tenants]
    share = ratio(tokens[0], sum(tokens))
    wanted = weights[0] / sum(weights)
    return {
        "weights": list(weights),
        "tokens": tokens,
        "requests": [sum(1 for when, _ in t.tokens if start <= when <= end) for t in tenants],
        "share_of_first": share,
        "wanted_share_of_first": round(wanted, 3),
        "relative_error": None if share is None else round(abs(share - wanted) / wanted, 3),
        "window_s": round(end - start, 1),
    }


async def throughput(base: str, key: str, args: argparse.Namespace) -> dict[str, Any]:
    """`sample` at `clients` clients, `throughput_rounds` times after one request per client that is not
    counted: the steady state (the tenant's first quota lease and the replica's first batch are paid once
    per deployment). The deployment's figure is the median round: one round of 128 requests on 2 cores
    varied by up to 10% from the next, more than the effect measured."""

    async def load(per_client: int) -> dict[str, Any]:
        return await run_load(
            f"{base}/v1/generate",
            lambda c, i: {**sample_request(args.light_max_tokens), "prompt": LOAD_PROMPTS[(c + i) % len(LOAD_PROMPTS)]},
            args.clients,
            per_client,
            {"Authorization": f"Bearer {key}"},
        )

    await load(1)
    rounds = [await load(args.requests_per_client) for _ in range(args.throughput_rounds)]
    rates = [r["tokens_per_s"] for r in rounds]
    median = statistics.median(rates)
    return {
        "tokens_per_s": median,
        "rounds_tokens_per_s": rates,
        "spread": ratio(max(rates) - min(rates), median),
        "requests": sum(r["requests"] for r in rounds),
        "p50_latency_s": statistics.median(r["p50_latency_s"] for r in rounds),
    }


def set_policy(store: TenantStore, tenant: str, policy: TenantPolicy) -> None:
    current = store.get_tenant_policy(tenant)
    store.set_tenant_policy(tenant, policy, expected_version=None if current is None else current.version)


def measure(base: str, store: TenantStore, mode: str, args, report: dict[str, Any], progress) -> None:
    """Every measurement of one deployment (`mode`: off, on, off_after) into `report` (written by the
    caller after each phase)."""
    fair = mode == "on"
    keys = {name: store.create_key(f"{name}-{mode}")[1] for name in ("light", "heavy", "load", "a", "b", "c", "d")}
    if fair:
        # Quotas on the throughput tenant, far above the load: checked on every request, refusing none.
        set_policy(
            store,
            f"load-{mode}",
            TenantPolicy(
                requests_per_minute=100_000, candidate_tokens_per_minute=10_000_000, max_concurrent_requests=1000
            ),
        )
        set_policy(store, f"c-{mode}", TenantPolicy(weight=3.0))
        time.sleep(POLICY_CACHE_S)
    for name, heavy in (("alone", False), ("beside_heavy", True)):
        if mode == "off_after" and heavy:
            continue  # the second off deployment re-measures what the time of day may move: alone, throughput
        progress(f"fairness {mode}: light tenant {name.replace('_', ' ')}")
        report["light"][f"{name}_{mode}"] = asyncio.run(light_latency(base, keys, args, heavy))
    progress(f"fairness {mode}: sample throughput at {args.clients} clients")
    report["throughput"][mode] = asyncio.run(throughput(base, keys["load"], args))
    if fair:
        for label, pair, weights in (("1:1", ("a", "b"), (1.0, 1.0)), ("3:1", ("c", "d"), (3.0, 1.0))):
            progress(f"fairness on: token shares of two backlogged tenants, weights {label}")
            report["shares"][label] = asyncio.run(token_shares(base, (keys[pair[0]], keys[pair[1]]), weights, args))


def mean_off_throughput(throughput: dict[str, Any]) -> float | None:
    """Fairness off is measured before and after on, so a drift of the machine over the run falls on
    both sides of the ratio alike."""
    runs = [(throughput.get(mode) or {}).get("tokens_per_s") for mode in ("off", "off_after")]
    values = [v for v in runs if v is not None]
    return sum(values) / len(values) if values else None


def engines_gone(timeout_s: float = 120.0) -> int:
    """Wait until no vLLM engine process of a deleted deployment is left (one that outlived its replica
    would take cores from the next deployment and skew every figure after it); the number left."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("VLLM::")]
        if not left or time.monotonic() > deadline:
            return len(left)
        time.sleep(1.0)


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    light = report["light"]

    def p50(name: str) -> float | None:
        return (light.get(name) or {}).get("p50_s")

    ratios = {
        "light_p50_off_vs_alone": ratio(p50("beside_heavy_off"), p50("alone_off")),
        "light_p50_on_vs_alone": ratio(p50("beside_heavy_on"), p50("alone_on")),
        "share_error_1_1": (report["shares"].get("1:1") or {}).get("relative_error"),
        "share_error_3_1": (report["shares"].get("3:1") or {}).get("relative_error"),
        "throughput_on_vs_off": ratio(
            (report["throughput"].get("on") or {}).get("tokens_per_s"), mean_off_throughput(report["throughput"])
        ),
        "rate_limit_accuracy": (report.get("rate_limit") or {}).get("ratio"),
    }
    return {"ratios": ratios, "targets": {name: target(ratios[name], spec) for name, spec in TARGETS.items()}}


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> int:
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = resolve_model(args.model, progress=progress)
    store, store_url, _ = scratch_store("bench-tenants-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    engine = {
        "model": str(model_dir),
        "dtype": "float32",
        "max_model_len": 1024,
        "kv_cache_gib": args.kv_cache_gib,
        "max_num_seqs": args.max_num_seqs,
        "block_size": 32,
        "enforce_eager": True,  # each deployment's engine starts a minute sooner; both sides alike
    }
    report: dict[str, Any] = {
        "benchmark": "tenants",
        "model": model_dir.name,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "settings": {k: v for k, v in vars(args).items() if not callable(v) and k not in ("bench", "command", "out")},
        "notes": {
            "light": "greedy `sample` of light_max_tokens, one request after another; beside_heavy: while "
            "heavy_clients closed-loop clients of another tenant send best_of_n (n, heavy_max_tokens, the bench "
            "direction), started warm_s before; p50/p95 over light_requests.",
            "shares": "two tenants, share_clients closed-loop clients each, the same best_of_n bodies; tokens: "
            "usage.candidate_tokens of the requests that ended inside the window (after warm_s).",
            "throughput": "sample, clients x requests_per_client, throughput_rounds times (tokens_per_s: the median "
            "round); off: fairness off, tenant without a policy; on: "
            "fairness on, the tenant under a policy with rate limits and a concurrency cap far above the load. "
            "Usage metering is on in both (it has no switch). Off is measured before and after on (off_after, "
            "its own deployment); the ratio is against the mean of the two.",
        },
        "light": {},
        "shares": {},
        "throughput": {},
        "errors": {},
    }
    out = Path(args.out or "bench-results/tenants-cpu.json")
    started = time.monotonic()
    grpc_port = free_port()

    def config(fair: bool) -> ServerConfig:
        return ServerConfig.load(
            {
                "engine": engine,
                "tenant_store": store_url,
                "http_port": port,
                "grpc_port": grpc_port,
                "replica_num_cpus": 0,
                "max_ongoing_requests": args.slots,
                "fair_scheduling": fair,
                "fair_busy_sequences": args.busy_sequences if fair else None,
            }
        )

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        serve.start(**proxy_options(config(False)))
        # Off, on, off: the state before fair scheduling, the change, and the state before again.
        for mode in ("off", "on", "off_after"):
            cfg = config(mode == "on")
            progress(f"deploying the app with fair_scheduling {mode.replace('_after', '')} ({mode})")
            deploy(cfg, base)
            try:
                measure(base, store, mode, args, report, progress)
            except Exception as exc:  # keep the other deployments' figures
                report["errors"][mode] = f"{type(exc).__name__}: {exc}"
                progress(f"failed: {report['errors']}")
            serve.delete(cfg.app_name)
            left = engines_gone()
            if left:
                report["errors"][f"{mode}_engine_left"] = f"{left} vLLM processes outlived the deleted deployment"
            report["total_s"] = round(time.monotonic() - started, 1)
            report.update(summarize(report))
            write(report, out)
        try:  # its own deployment, 2 ingress replicas (serve/bench/rate_limit.py)
            rate_limit_accuracy(config(True), base, store, report, progress)
        except Exception as exc:
            report["errors"]["rate_limit"] = f"{type(exc).__name__}: {exc}"
        report["total_s"] = round(time.monotonic() - started, 1)
        report.update(summarize(report), engines_left_after_rate_limit=engines_gone())
        write(report, out)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            store.close()
    progress(f"wrote {out}")
    for name, value in report["targets"].items():
        progress(f"{name}: {value}")
    return 1 if report["errors"] else 0
