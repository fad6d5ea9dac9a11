"""The rate-limit accuracy phase of `aligner bench tenants`: the app on its own deployment with 2 ingress
replicas, one tenant with `requests_per_minute` = `RATE_RPM` whose `RATE_CLIENTS` clients send 1-token
`sample` requests for `RATE_WINDOW_S`, each waiting its `Retry-After` when refused, as a client would.

The figure is admitted / allowed, where allowed is what the keeper's bucket gives over the window: its
burst (the bucket starts full: the whole per-minute limit) plus its refill (`RATE_RPM` / 60 a second).
The requests counted are those sent inside the window and answered 200. Ray Serve's router spreads them
over both ingress replicas, each leasing from the one quota keeper (docs/tenancy.md, Quotas). The limit is
low so that the replicas can serve far more than it allows and the limiter, not the engine, binds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from ray import serve

from aligner.bench.common import LOAD_PROMPTS, ratio
from aligner.tenants import TenantPolicy, TenantStore
from serve.bench.load import deploy, sample_request
from serve.config import ServerConfig

RATE_RPM = 60
RATE_WINDOW_S = 40.0
RATE_CLIENTS = 16
RATE_INGRESS_REPLICAS = 2
POLICY_CACHE_S = 1.5  # a policy written to the store is in force at every ingress within a second


def allowed_requests(requests_per_minute: int, window_s: float) -> float:
    """What the bucket allows over `window_s`: its burst (full at the start) plus its refill."""
    return requests_per_minute + requests_per_minute * window_s / 60.0


def accuracy(admitted: int, requests_per_minute: int, window_s: float) -> float | None:
    """admitted / allowed (target: at most 1.05)."""
    return ratio(admitted, allowed_requests(requests_per_minute, window_s))


async def flood(url: str, key: str, clients: int, window_s: float) -> dict[str, Any]:
    """`clients` closed-loop clients for `window_s`: answers counted by status."""
    headers = {"Authorization": f"Bearer {key}"}
    counts: dict[int, int] = {}
    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0), trust_env=False) as client:
        end = time.monotonic() + window_s

        async def loop(c: int) -> None:
            i = 0
            while time.monotonic() < end:
                body = {**sample_request(1), "prompt": LOAD_PROMPTS[(c + i) % len(LOAD_PROMPTS)]}
                reply = await client.post(url, json=body, headers=headers)
                counts[reply.status_code] = counts.get(reply.status_code, 0) + 1
                i += 1
                if reply.status_code == 429:  # wait as told, as a client would (not past the window's end)
                    wait = float(reply.headers.get("Retry-After", "1"))
                    await asyncio.sleep(min(wait, max(0.0, end - time.monotonic())))

        started = time.monotonic()
        await asyncio.gather(*(loop(c) for c in range(clients)))
        elapsed = time.monotonic() - started
    return {"counts": counts, "sent_s": round(elapsed, 1)}


def rate_limit_accuracy(
    config: ServerConfig, base: str, store: TenantStore, report: dict[str, Any], progress: Callable[[str], None]
) -> None:
    """Deploy `config` with 2 ingress replicas, flood one limited tenant, delete it: `report["rate_limit"]`."""
    cfg = config.model_copy(update={"ingress_replicas": RATE_INGRESS_REPLICAS})
    progress(f"rate-limit accuracy: deploying with {RATE_INGRESS_REPLICAS} ingress replicas")
    try:
        deploy(cfg, base)
        _, key = store.create_key("rate-limited")
        store.set_tenant_policy("rate-limited", TenantPolicy(requests_per_minute=RATE_RPM), expected_version=None)
        time.sleep(POLICY_CACHE_S)
        progress(f"rate-limit accuracy: {RATE_CLIENTS} clients for {RATE_WINDOW_S:.0f} s at {RATE_RPM} per minute")
        result = asyncio.run(flood(f"{base}/v1/generate", key, RATE_CLIENTS, RATE_WINDOW_S))
        admitted = result["counts"].get(200, 0)
        report["rate_limit"] = {
            **result,
            "requests_per_minute": RATE_RPM,
            "window_s": RATE_WINDOW_S,
            "clients": RATE_CLIENTS,
            "ingress_replicas": RATE_INGRESS_REPLICAS,
            "admitted": admitted,
            "allowed": allowed_requests(RATE_RPM, RATE_WINDOW_S),
            "ratio": accuracy(admitted, RATE_RPM, RATE_WINDOW_S),
        }
    finally:
        serve.delete(cfg.app_name)
