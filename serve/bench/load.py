"""Load generators of the server benches: timed concurrent clients over HTTP and gRPC, and what they read.

A load is `clients` concurrent clients, each sending `per_client` requests one after another; its
summary holds the completion tokens, wall time, tokens/s, requests/s and latencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import httpx
from google.protobuf.json_format import ParseDict
from prometheus_client.parser import text_string_to_metric_families
from ray import serve

from aligner.bench.common import LOAD_PROMPTS
from aligner.tenants import TenantStore
from proto.aligner.v1 import aligner_pb2, aligner_pb2_grpc
from serve.app import build_app
from serve.config import ServerConfig

BATCH_METRIC = "aligner_reward_batch_size"


def scratch_store(prefix: str) -> tuple[TenantStore, str, dict[str, str]]:
    """A fresh SQLite tenant store in a temporary directory: (store, its URL, auth headers of a new key)."""
    store_url = f"sqlite:///{tempfile.mkdtemp(prefix=prefix)}/tenants.db"
    store = TenantStore.open(store_url)
    _, key = store.create_key("bench")
    return store, store_url, {"Authorization": f"Bearer {key}"}


def admin_headers(store: TenantStore) -> dict[str, str]:
    """Auth headers of a new admin key of `store`: GET /metrics needs one (ServerConfig.metrics_auth)."""
    _, key = store.create_key("bench-admin", admin=True)
    return {"Authorization": f"Bearer {key}"}


def sample_request(max_tokens: int) -> dict[str, Any]:
    """A greedy `sample` body for /v1/generate (the same answer every time)."""
    return {
        "prompt": LOAD_PROMPTS[0],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "seed": 1234,
        "search": {"strategy": "sample"},
    }


def chat_body(model: str, prompt: str, max_tokens: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "seed": 0,
        **(extra or {}),
    }


def load_summary(latencies: Sequence[float], tokens: Sequence[int], wall_s: float, clients: int) -> dict[str, Any]:
    return {
        "clients": clients,
        "requests": len(latencies),
        "completion_tokens": int(sum(tokens)),
        "wall_s": round(wall_s, 3),
        "tokens_per_s": round(sum(tokens) / wall_s, 2) if wall_s > 0 else None,
        "requests_per_s": round(len(latencies) / wall_s, 3) if wall_s > 0 else None,
        "mean_latency_s": round(statistics.mean(latencies), 4) if latencies else None,
        "p50_latency_s": round(statistics.median(latencies), 4) if latencies else None,
    }


def latency_summary(times: Sequence[float], tokens: Sequence[int]) -> dict[str, Any]:
    return {
        "repeats": len(times),
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "seconds": [round(t, 4) for t in times],
        "completion_tokens": list(tokens),
    }


async def timed_load(
    send: Callable[[dict[str, Any]], Any], bodies: Callable[[int, int], dict[str, Any]], clients: int, per_client: int
) -> dict[str, Any]:
    """`clients` concurrent clients, each sending `per_client` requests one after another through
    `send` (a coroutine function: body -> completion tokens)."""
    latencies: list[float] = []
    tokens: list[int] = []

    async def one_client(c: int) -> None:
        for i in range(per_client):
            t0 = time.perf_counter()
            tokens.append(await send(bodies(c, i)))
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(one_client(c) for c in range(clients)))
    return load_summary(latencies, tokens, time.perf_counter() - started, clients)


async def run_load(
    url: str, bodies: Callable[[int, int], dict[str, Any]], clients: int, per_client: int, headers: dict[str, str]
) -> dict[str, Any]:
    """`timed_load` over HTTP: JSON bodies POSTed to `url`."""
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(900.0), trust_env=False, limits=httpx.Limits(max_connections=clients + 4)
    ) as client:

        async def send(body: dict[str, Any]) -> int:
            r = await client.post(url, json=body, headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:300]}")
            return int(r.json()["usage"]["completion_tokens"])

        return await timed_load(send, bodies, clients, per_client)


async def run_grpc_load(
    target: str, bodies: Callable[[int, int], dict[str, Any]], clients: int, per_client: int, metadata: tuple
) -> dict[str, Any]:
    """`timed_load` over gRPC: each body (an AlignRequest's JSON) sent as `aligner.v1.Aligner/Generate`
    on one channel, as a gRPC client would."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = aligner_pb2_grpc.AlignerStub(channel)

        async def send(body: dict[str, Any]) -> int:
            reply = await stub.Generate(ParseDict(body, aligner_pb2.GenerateRequest()), metadata=metadata, timeout=900)
            return reply.usage.completion_tokens

        return await timed_load(send, bodies, clients, per_client)


def deploy(config: ServerConfig, base: str, timeout_s: float = 600) -> None:
    """`config`'s app on the running Serve instance, quietly (no access log), once `base` answers /readyz."""
    serve.run(
        build_app(config),
        name=config.app_name,
        route_prefix="/",
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    )
    wait_http(f"{base}/readyz", timeout_s)


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Until `url` answers 200; RuntimeError when `proc` (the server) exits first, TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=5, trust_env=False).status_code == 200:
                return
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s:.0f}s")


def histogram_totals(metrics_text: str, name: str = BATCH_METRIC) -> tuple[float, float]:
    """(sum, count) of a Prometheus histogram, summed over all its label sets."""
    total, count = 0.0, 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_sum":
                total += sample.value
            elif sample.name == f"{name}_count":
                count += sample.value
    return total, count


def mean_between(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """Mean observation of a histogram between two (sum, count) readings; None if nothing was observed."""
    count = after[1] - before[1]
    return (after[0] - before[0]) / count if count > 0 else None


async def sample_throughput(
    url: str, model: str, headers: dict[str, str], args, progress, label: str
) -> list[dict[str, Any]]:
    """`run_load` summaries (each tagged with `label`): every client count, `throughput_rounds` times."""

    def body(c: int, i: int) -> dict[str, Any]:
        return chat_body(model, LOAD_PROMPTS[(c + i) % len(LOAD_PROMPTS)], args.max_tokens)

    await run_load(url, body, 1, 1, headers)  # warm-up
    runs = []
    for round_ in range(args.throughput_rounds):
        for clients in args.clients:
            run = {**await run_load(url, body, clients, args.requests_per_client, headers), "label": label}
            progress(f"{label} sample, round {round_ + 1}, {clients} client(s): {run['tokens_per_s']} tokens/s")
            runs.append(run)
    return runs
