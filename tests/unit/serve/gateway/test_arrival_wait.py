"""aligner_arrival_wait_seconds, the latency objective's measure (serve/gateway/gateway.py `dispatch` and
`Call.arrived`): a tenant's arrival is observed once, with its wait for a slot and its wait in Ray Serve's
queue (the ingress's time to the answer less the replica's own time in its method: one clock); given up
while it waits, it is observed all the same; a request behind its own tenant's is not observed. A real
FairQueue and Metrics; the gateway's other parts are a namespace with what `dispatch` and `generate`
read, the model handle a fake (FakeModel) whose replica answers after a set time."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from aligner.contract import AlignRequest
from aligner.errors import ErrorInfo, PromptTooLong, Reported
from serve.gateway.call import Call
from serve.gateway.fair_queue import FairQueue
from serve.gateway.gateway import Gateway
from serve.gateway.messages import ReplicaResult
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


class FakeModel:
    """A fake of the model deployment's handle: `generate.remote` answers after `queued` + `serving` seconds,
    the replica saying it spent `reported` of them in its method (an error result: what it says is enough)."""

    def __init__(self, queued: float, serving: float, reported: float):
        self.queued, self.serving, self.reported = queued, serving, reported
        self.generate = SimpleNamespace(remote=self._generate)

    async def _generate(self, request, context) -> ReplicaResult:
        await asyncio.sleep(self.queued + self.serving)
        error = ErrorInfo.of(PromptTooLong(prompt_tokens=1000, max_tokens=64, max_model_len=1024))
        return ReplicaResult("replica-1", error=error, service_s=self.reported)


def gateway_part(slots: int, model: FakeModel | None = None) -> SimpleNamespace:
    async def no_quota(call, request):
        return None

    part = SimpleNamespace(queue=FairQueue(slots), metrics=Metrics(), readiness=ReadinessRecord(), meter=None)
    part.reserve, part.model = no_quota, model
    part.dispatch = lambda call, request: Gateway.dispatch(part, call, request)
    return part


async def served(gateway: SimpleNamespace, tenant: str, send):
    """`send(call)` inside the gateway's `call()`, as a transport runs a request: its end is the call's."""
    async with Gateway.call(gateway) as call:
        call.tenant = tenant
        return await send(call)


def call_of(gateway: SimpleNamespace, tenant: str) -> Call:
    call = Call(gateway.metrics, ReadinessRecord())
    call.tenant = tenant
    return call


def test_an_arrival_is_observed_once_with_the_replicas_queue_and_its_tenants_next_request_is_not():
    async def scenario():
        gateway = gateway_part(slots=2)
        first = call_of(gateway, "acme")
        await Gateway.dispatch(gateway, first, REQUEST)
        assert first.slot.arrival
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


@pytest.mark.parametrize(
    ("queued", "serving", "reported", "within_1s"),
    [
        (0.0, 1.2, 1.2, 1),  # a long search: the replica's own time is not a wait
        (1.2, 0.0, 0.0, 0),  # Ray Serve's queue held it over a second: counted against the objective
        (0.0, 0.0, 3600.0, 1),  # a replica reporting more than the ingress waited: no negative, no more
    ],
)
def test_the_wait_in_ray_serves_queue_is_the_ingress_time_less_the_replicas_own(queued, serving, reported, within_1s):
    async def scenario():
        gateway = gateway_part(slots=1, model=FakeModel(queued, serving, reported))
        with pytest.raises(Reported, match="prompt has 1000 tokens"):
            await served(gateway, "acme", lambda call: Gateway.generate(gateway, call, REQUEST))
        return observed(gateway.metrics)

    assert asyncio.run(scenario()) == (1, within_1s)


def test_an_arrival_given_up_at_the_replica_is_observed_once_with_its_slot_wait_only():
    """Found by review: a unary request cancelled after it was sent was never observed; counting what it
    waited after that would let a tenant inflate the objective by cancelling long searches."""

    async def scenario():
        gateway = gateway_part(slots=1, model=FakeModel(queued=0.0, serving=1.5, reported=1.5))
        sent = asyncio.ensure_future(served(gateway, "acme", lambda call: Gateway.generate(gateway, call, REQUEST)))
        await asyncio.sleep(1.2)
        sent.cancel()
        await asyncio.gather(sent, return_exceptions=True)
        return observed(gateway.metrics)

    assert asyncio.run(scenario()) == (1, 1)


class FakeStream:
    """A fake of a replica's response stream: its first item after `delay` seconds."""

    def __init__(self, first, delay: float):
        self.first, self.delay = first, delay

    async def __anext__(self):
        await asyncio.sleep(self.delay)
        return self.first

    def cancel(self) -> None:
        pass


def test_a_stream_refused_in_phase_1_is_observed_without_the_replicas_checking_time():
    """Found by review: a stream whose replica refused it after 1.5 s of rendering and tokenizing was
    observed as a 1.5 s wait, so 1 MiB prompts ending in prompt_too_long could burn the latency budget."""
    refused = ErrorInfo.of(PromptTooLong(prompt_tokens=1000, max_tokens=64, max_model_len=1024))

    async def scenario():
        gateway = gateway_part(slots=1)
        stream = FakeStream(refused, delay=1.5)
        gateway.model = SimpleNamespace(
            options=lambda **_: SimpleNamespace(stream=SimpleNamespace(remote=lambda *a: stream))
        )
        with pytest.raises(Reported):
            await served(gateway, "acme", lambda call: Gateway.open_stream(gateway, call, REQUEST))
        return observed(gateway.metrics)

    assert asyncio.run(scenario()) == (1, 1)
