"""A heavy tenant flooding best_of_n beside a light tenant sending `sample`, on the shared real engine:
the gateway's FairQueue (serve/gateway/fair_queue.py) in front of the model replica adapter
(serve/deployments/aligner_server.py), as the ingress puts it, with fairness on and off.

What is asserted first does not depend on timing: how many heavy requests were dispatched after a
light request arrived and before it was (none with fairness on; with fairness off, those the heavy
tenant had queued ahead of it).

The stated bound on latency, with fairness on: a light request waits for at most one slot to free,
which takes at most one heavy request's service time, and then shares the engine's batches with the
heavy requests in flight; so its p50 stays within LIGHT_SLOWDOWN x its p50 alone plus the heavy
requests' p50 service time (dispatch to end). With fairness off it waits behind every heavy request
queued before it; the test prints both, and asserts that fairness on is faster. The margins hold on
a loaded 2-core machine: the bound is built from times measured in the same run.

With `fair_busy_sequences` 8 the heavy tenant holds one request of 8 sequences in flight, so each
light request finds a free slot the moment it arrives (asserted from the queue's state, not from
time) and decodes beside at most those 8 sequences.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from aligner.contract import AlignRequest
from serve.deployments.aligner_server import AlignerServer
from serve.gateway.fair_queue import FairQueue, FairShare, request_cost, request_sequences

SLOTS = 2  # the replica's slots this ingress holds
HEAVY_CLIENTS = 4  # twice the slots: the heavy tenant always has requests queued
LIGHT_REQUESTS = 4
LIGHT_SLOWDOWN = 4.0  # the light request's own decoding, beside heavy ones in the engine's batches
HEAVY = AlignRequest.parse(
    {
        "prompt": "Write a long story about a dragon.",
        "max_tokens": 24,
        "temperature": 1.0,
        "preference_vector": {"verbosity": -1.0},
        "search": {"strategy": "best_of_n", "n": 8},
    }
)
LIGHT = AlignRequest.parse({"prompt": "What is the capital of France?", "max_tokens": 8, "temperature": 0})


@pytest.fixture(scope="module")
def replica(aligner, loop_thread):
    server = AlignerServer.sync_init({}, aligner=aligner)
    loop_thread.run(server.start())
    return server


class Scenario:
    """Light requests one after another, beside `heavy_clients` closed-loop heavy clients."""

    def __init__(
        self, replica: AlignerServer, fair: bool, heavy_clients: int, slots: int = SLOTS, pool: int | None = None
    ):
        self.replica, self.heavy_clients = replica, heavy_clients
        self.queue = FairQueue(slots, fair=fair, queue_limit=64, busy_sequences=pool)
        self.light_found_a_free_slot: list[bool] = []
        self.dispatched: dict[int, str] = {}  # dispatch sequence -> tenant
        self.light: list[tuple[int, int]] = []  # per light request: dispatches before its arrival, its own sequence
        self.latencies: list[float] = []
        self.heavy_service: list[float] = []  # seconds from dispatch to end
        self.stopping = False

    async def send(self, tenant: str, request: AlignRequest) -> None:
        arrived = self.queue.dispatches
        if tenant == "light":
            self.light_found_a_free_slot.append(self.queue.in_flight < self.queue.slots)
        slot = await self.queue.acquire(FairShare(tenant), request_cost(request), request_sequences(request, None))
        self.dispatched[slot.sequence] = tenant
        if tenant == "light":
            self.light.append((arrived, slot.sequence))
        tokens, dispatched = None, time.monotonic()
        try:
            response = (await self.replica.generate(request)).unwrap()
            tokens = response.usage.candidate_tokens or response.usage.generated_tokens
        finally:
            slot.release(tokens)
        if tenant == "heavy":
            self.heavy_service.append(time.monotonic() - dispatched)

    async def heavy(self) -> None:
        while not self.stopping:
            await self.send("heavy", HEAVY)

    async def run(self) -> None:
        heavy = [asyncio.ensure_future(self.heavy()) for _ in range(self.heavy_clients)]
        await asyncio.sleep(0.5 if heavy else 0)  # the heavy tenant has filled the slots and its queue
        try:
            for _ in range(LIGHT_REQUESTS):
                started = time.monotonic()
                await self.send("light", LIGHT)
                self.latencies.append(time.monotonic() - started)
        finally:
            self.stopping = True
            await asyncio.gather(*heavy)

    @property
    def overtaken(self) -> list[int]:
        """Per light request: the heavy requests dispatched after it arrived and before it was."""
        return [sum(self.dispatched[s] == "heavy" for s in range(arrived, own)) for arrived, own in self.light]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)


def test_the_light_tenant_is_not_queued_behind_the_heavy_one_with_fairness_on(replica, run):
    run(replica.generate(LIGHT))  # warm
    alone = Scenario(replica, fair=True, heavy_clients=0)
    run(alone.run())
    off = Scenario(replica, fair=False, heavy_clients=HEAVY_CLIENTS)
    run(off.run())
    on = Scenario(replica, fair=True, heavy_clients=HEAVY_CLIENTS)
    run(on.run())
    # Sequences in flight bounded at 8: one heavy request of 8 at a time, a free slot for each light one.
    pooled = Scenario(replica, fair=True, heavy_clients=HEAVY_CLIENTS, slots=SLOTS, pool=8)
    run(pooled.run())
    bound = LIGHT_SLOWDOWN * alone.p50 + statistics.median(on.heavy_service)
    report = {
        "alone_p50_s": round(alone.p50, 3),
        "off_p50_s": round(off.p50, 3),
        "on_p50_s": round(on.p50, 3),
        "on_bound_s": round(bound, 3),
        "pool_p50_s": round(pooled.p50, 3),
        "pool_light_found_a_free_slot": pooled.light_found_a_free_slot,
        "heavy_service_p50_s": round(statistics.median(on.heavy_service), 3),
        "off_overtaken": off.overtaken,
        "on_overtaken": on.overtaken,
    }
    print(report)
    # Fairness off: every light request waits for the heavy requests queued before it (first come, first
    # served; the heavy tenant keeps HEAVY_CLIENTS - SLOTS of them queued).
    assert all(n >= 1 for n in off.overtaken), report
    # Fairness on: the light tenant, far below its share of the tokens, goes first each time it arrives.
    assert on.overtaken == [0] * LIGHT_REQUESTS, report
    assert on.p50 <= bound, report
    assert on.p50 < off.p50, report
    # The bound on sequences: every light request started at once, however many heavy requests were queued.
    assert pooled.light_found_a_free_slot == [True] * LIGHT_REQUESTS and pooled.overtaken == [0] * LIGHT_REQUESTS
    assert pooled.p50 <= bound, report
    for scenario in (on, off, pooled):
        queue = scenario.queue
        assert queue.in_flight == 0 and queue.queued() == 0 and queue.sequences_in_flight == 0
