"""serve/gateway/readiness.py: a readiness probe that times out while the replicas are busy serving is
not "not ready"; a replica that cannot serve is, at once; and every caller of one ingress reads one
cached answer, refreshed by at most one probe per interval (a fake clock and a fake replica)."""

import asyncio

from ray.serve.exceptions import BackPressureError

from aligner.errors import ErrorInfo
from serve.gateway.messages import Readiness
from serve.gateway.readiness import BUSY_GRACE_S, ReadinessCache, ReadinessRecord


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_late_probe_is_not_ready_before_anything_was_served():
    assert ReadinessRecord(clock=Clock()).busy_means_ready() is False


def test_a_late_probe_is_ready_while_requests_are_being_answered():
    clock = Clock()
    record = ReadinessRecord(clock=clock)
    record.began()  # a request waits on a replica
    record.served()
    clock.now += BUSY_GRACE_S - 1
    assert record.busy_means_ready() is True
    clock.now += 2  # nothing answered for longer than the grace: nobody may be answering
    assert record.busy_means_ready() is False


def test_a_late_probe_with_nothing_in_flight_is_not_ready_however_recent_the_last_answer():
    # A replica that died while idle never answers the probe: nothing is busy, so nobody answers.
    clock = Clock()
    record = ReadinessRecord(clock=clock)
    record.began()
    record.served()
    record.ended()
    assert record.busy_means_ready() is False
    record.began()
    assert record.busy_means_ready() is True


def test_a_refused_request_does_not_clear_readiness_but_a_dead_engine_does():
    record = ReadinessRecord(clock=Clock())
    record.began()
    record.served()
    for code in ("invalid_argument", "overloaded", "deadline_exceeded", "cancelled", "ok"):
        record.failed(code)
        assert record.busy_means_ready() is True, code
    record.failed("engine_unavailable")
    assert record.busy_means_ready() is False


def test_a_probe_that_answered_not_ready_clears_readiness_until_the_next_answer():
    record = ReadinessRecord(clock=Clock())
    record.began()
    record.served()
    record.down()
    assert record.busy_means_ready() is False
    record.served()
    assert record.busy_means_ready() is True


# -- ReadinessCache: what /readyz and gRPC Health answer, refreshed in the background --


class Replica:
    """A model replica's `ready` as the probe sees it: each call takes the next of `answers` (a Readiness
    to return, or an exception to raise) and is counted."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = 0
        self.release: asyncio.Event | None = None  # set: the probe waits for it (a probe in flight)

    async def ready(self) -> Readiness:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if self.release is not None:
            await self.release.wait()
        if isinstance(answer, BaseException):
            raise answer
        return answer


READY = Readiness(ready=True, model="m")
NOT_READY = Readiness(ready=False, error=ErrorInfo("engine_unavailable", "engine dead"))
INTERVAL_S = 2.0


def cache_over(replica: Replica, clock: Clock) -> ReadinessCache:
    return ReadinessCache(replica.ready, ReadinessRecord(clock=clock), INTERVAL_S, model=lambda: "m")


def test_many_callers_share_one_probe_per_refresh():
    async def scenario():
        replica, clock = Replica(READY), Clock()
        cache = cache_over(replica, clock)
        replica.release = asyncio.Event()
        refresh = asyncio.ensure_future(cache.refresh())  # the background task's first probe, in flight
        callers = [asyncio.ensure_future(cache.get()) for _ in range(200)]
        await asyncio.sleep(0)
        assert not any(c.done() for c in callers)  # a fresh ingress: every caller waits for that probe
        replica.release.set()
        await refresh
        answers = await asyncio.gather(*callers)
        assert all(a.ready for a in answers) and replica.calls == 1
        for _ in range(1000):  # a flood between refreshes reaches no replica
            assert (await cache.get()).ready
        assert replica.calls == 1 and cache.probes == 1

    asyncio.run(scenario())


def test_idle_it_probes_once_per_refresh_and_follows_the_answer():
    async def scenario():
        replica, clock = Replica(READY, NOT_READY, READY), Clock()
        cache = cache_over(replica, clock)
        for expected in (True, False, True):
            clock.now += INTERVAL_S + 1  # nothing served in between: each refresh needs a probe
            assert (await cache.refresh()).ready is expected
            assert (await cache.get()).ready is expected
        assert replica.calls == 3

    asyncio.run(scenario())


def test_requests_being_answered_stand_in_for_the_probe():
    async def scenario():
        replica, clock = Replica(READY), Clock()
        cache = cache_over(replica, clock)
        await cache.refresh()
        for _ in range(10):  # a request answered within every interval: no probe takes a tenant's slot
            clock.now += INTERVAL_S
            cache.record.served()
            assert (await cache.refresh()).ready
        cache.record.began()  # and busy: a long request in flight, one answered within the grace
        clock.now += BUSY_GRACE_S / 2
        assert (await cache.refresh()).ready
        assert replica.calls == 1
        clock.now += BUSY_GRACE_S  # nothing answered for longer than the grace: a probe is sent again
        await cache.refresh()
        assert replica.calls == 2

    asyncio.run(scenario())


def test_a_late_probe_while_busy_serving_is_ready_and_with_nothing_in_flight_is_not():
    async def scenario():
        clock = Clock()
        late = Replica(READY, TimeoutError(), BackPressureError(num_queued_requests=2, max_queued_requests=2))
        cache = cache_over(late, clock)
        await cache.refresh()
        cache.record.began()
        clock.now += BUSY_GRACE_S - 1  # in flight, answered within the grace, but not within the interval
        cache.record.served()
        clock.now += INTERVAL_S + 1
        # busy_means_ready holds, so no probe is sent at all
        assert (await cache.refresh()).ready and late.calls == 1
        cache.record.ended()  # idle now: the probe goes out and times out: nobody answers
        timed_out = await cache.refresh()
        assert not timed_out.ready and timed_out.error.code == "engine_unavailable"
        refused = await cache.refresh()  # a full queue with nothing of ours in flight
        assert not refused.ready and refused.error.code == "overloaded"
        assert late.calls == 3

    asyncio.run(scenario())


def test_a_replica_seen_down_makes_it_not_ready_at_once_until_a_later_probe_passes():
    async def scenario():
        replica, clock = Replica(READY), Clock()
        cache = cache_over(replica, clock)
        await cache.refresh()
        cache.record.began()
        cache.record.served()
        cache.record.failed("engine_unavailable")  # a request found its engine dead
        answer = await cache.get()
        assert not answer.ready and answer.error.code == "engine_unavailable"  # no refresh needed
        assert not (await cache.get()).ready
        assert (await cache.refresh()).ready and replica.calls == 2  # a probe after the failure passed

    asyncio.run(scenario())


def test_a_probe_sent_before_a_replica_was_seen_down_cannot_make_it_ready():
    async def scenario():
        replica, clock = Replica(READY), Clock()
        cache = cache_over(replica, clock)
        await cache.refresh()
        clock.now += INTERVAL_S + 1
        replica.release = asyncio.Event()
        refresh = asyncio.ensure_future(cache.refresh())
        await asyncio.sleep(0)
        cache.record.failed("engine_unavailable")  # while the probe was in flight
        replica.release.set()
        assert not (await refresh).ready  # its "ready" may come from the engine that then died
        assert not (await cache.get()).ready
        assert cache.record.last_served is None  # nor count as a replica that served
        assert (await cache.refresh()).ready and replica.calls == 3  # a probe sent after it can

    asyncio.run(scenario())


def test_a_probe_that_fails_outright_is_not_ready_and_clears_the_record():
    async def scenario():
        clock = Clock()
        cache = cache_over(Replica(READY, RuntimeError("replica actor died")), clock)
        await cache.refresh()
        cache.record.began()
        clock.now += BUSY_GRACE_S + 1
        answer = await cache.refresh()
        assert not answer.ready and answer.error.code == "engine_unavailable" and "RuntimeError" in answer.error.message
        assert cache.record.last_served is None

    asyncio.run(scenario())


def test_the_background_task_keeps_refreshing_after_a_failing_refresh():
    async def scenario():
        replica, clock = Replica(READY), Clock()
        cache = ReadinessCache(replica.ready, ReadinessRecord(clock=clock), 0.001, model=lambda: "m")
        broken = True
        probe = cache._probe

        async def flaky(downs: int) -> Readiness:
            nonlocal broken
            if broken:
                broken = False
                raise ValueError("a bug in a refresh")
            return await probe(downs)

        cache._probe = flaky
        cache.start()
        answer = await asyncio.wait_for(cache.get(), 60)
        cache.stop()
        assert answer.ready and not broken

    asyncio.run(scenario())
