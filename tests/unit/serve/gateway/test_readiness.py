"""serve/gateway/readiness.py: a readiness probe that times out while the replicas are busy serving is
not "not ready"; a replica that cannot serve is, at once."""

from serve.gateway.readiness import BUSY_GRACE_S, ReadinessRecord


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
