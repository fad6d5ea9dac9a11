"""Gateway.config_fits: an admin's safety-config write waits for a model replica that tenants keep busy,
instead of failing with their 429 (found in a clean-clone run: of four concurrent PUTs one got the
tenants' back-pressure error instead of its 409). The model handle is a fake named as one."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from ray.serve.exceptions import BackPressureError

from aligner.errors import EngineUnavailable, ErrorInfo, InvalidRequest, Overloaded
from aligner.safety.config import SafetyConfig
from serve.config import ServerConfig
from serve.gateway import gateway as gateway_module
from serve.gateway.gateway import Gateway


class FakeModelHandle:
    """`check_safety_config.remote` refuses with back-pressure `busy` times, then answers `answer`."""

    def __init__(self, busy: int, answer: ErrorInfo | None = None):
        self.busy, self.answer, self.calls = busy, answer, 0
        self.check_safety_config = SimpleNamespace(remote=self._remote)

    async def _remote(self, config):
        self.calls += 1
        if self.calls <= self.busy:
            raise BackPressureError(num_queued_requests=2, max_queued_requests=2)
        return self.answer


def gateway_with(model: FakeModelHandle) -> Gateway:
    fake = Gateway.__new__(Gateway)  # only what config_fits reads
    fake.model, fake.config = model, ServerConfig()
    return fake


CONFIG = SafetyConfig(text="Be kind.")


def test_a_busy_replica_is_waited_for_and_its_answer_returned():
    model = FakeModelHandle(busy=3, answer=ErrorInfo.of(InvalidRequest("text", "too long")))
    answer = asyncio.run(gateway_with(model).config_fits(CONFIG))
    assert model.calls == 4 and answer is not None and answer.field == "text"


def test_replicas_busy_past_the_wait_give_the_overload_error(monkeypatch):
    monkeypatch.setattr(gateway_module, "ADMIN_MODEL_WAIT_S", 0.3)
    model = FakeModelHandle(busy=10_000)
    with pytest.raises(Overloaded):
        asyncio.run(gateway_with(model).config_fits(CONFIG))
    assert model.calls >= 2


def test_a_replica_that_hangs_gives_unavailable_within_the_wait(monkeypatch):
    """Found by review: the remote call had no timeout, so a hung replica hung the admin's PUT."""
    monkeypatch.setattr(gateway_module, "ADMIN_MODEL_WAIT_S", 0.3)

    class HungModelHandle(FakeModelHandle):
        async def _remote(self, config):
            await asyncio.sleep(3600)

    with pytest.raises(EngineUnavailable):
        asyncio.run(gateway_with(HungModelHandle(busy=0)).config_fits(CONFIG))
