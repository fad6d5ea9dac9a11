"""aligner_arrival_wait_seconds, the latency objective's measure (serve/gateway/gateway.py `dispatch` and
`Call.arrived`): a tenant's arrival is observed once, with its wait for a slot and the replica's report of
Ray Serve's queue; given up while it waits, it is observed all the same; a request behind its own
tenant's is not observed. A real FairQueue and Metrics; the gateway's other parts (Ray handles) are a
namespace with what `dispatch` reads."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aligner.contract import AlignRequest
from serve.gateway.call import Call
from serve.gateway.fair_queue import FairQueue
from serve.gateway.gateway import Gateway
from serve.gateway.readiness import ReadinessRecord
from serve.metrics import Metrics

REQUEST = AlignRequest.model_validate({"prompt": "hi", "max_tokens": 4})


def observed(metrics: Metrics) -> tuple[int, int]:
    """(arrivals observed, those within 1 s)."""
    (family,) = [f for f in metrics.registry.collect() if f.name == "aligner_arrival_wait_seconds"]
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    return int(samples["aligner_arrival_wait_seconds_count", None]), int(
        samples["aligner_arrival_wait_seconds_bucket", "1.0"]
    )


def gateway_part(slots: int) -> SimpleNamespace:
    async def no_quota(call, request):
        return None

    return SimpleNamespace(queue=FairQueue(slots), metrics=Metrics(), reserve=no_quota)


def call_of(gateway: SimpleNamespace, tenant: str) -> Call:
    call = Call(gateway.metrics, ReadinessRecord())
    call.tenant = tenant
    return call


def test_an_arrival_is_observed_once_with_the_replicas_queue_and_its_tenants_next_request_is_not():
    async def scenario():
        gateway = gateway_part(slots=2)
        first = call_of(gateway, "acme")
        await Gateway.dispatch(gateway, first, REQUEST)
        assert first.slot.arrival and first.context.sent_at is not None
        assert observed(gateway.metrics) == (0, 0)  # not yet: the replica has not said how long it queued
        first.arrived(2.5)  # Ray Serve's queue held it 2.5 s
        first.arrived(0.0)  # only the first report counts
        behind = call_of(gateway, "acme")
        await Gateway.dispatch(gateway, behind, REQUEST)
        behind.arrived(9.0)  # the tenant's own load: not the objective's
        return observed(gateway.metrics)

    assert asyncio.run(scenario()) == (1, 0)


def test_an_arrival_given_up_while_it_waits_for_a_slot_is_observed():
    """Failed before this fix: only arrivals that got a slot were observed, so the longest waits (clients
    giving up) left the objective and saturation looked healthy."""

    async def scenario():
        gateway = gateway_part(slots=1)
        holder = call_of(gateway, "heavy")
        await Gateway.dispatch(gateway, holder, REQUEST)
        holder.arrived(0.0)
        waiting = asyncio.ensure_future(Gateway.dispatch(gateway, call_of(gateway, "light"), REQUEST))
        await asyncio.sleep(1.2)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        return observed(gateway.metrics)

    assert asyncio.run(scenario()) == (2, 1)  # the holder's at once, the light tenant's over 1 s
