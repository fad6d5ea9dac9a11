"""aligner/engine: the tenant's priority tier reaches vLLM's per-request `priority` under the engine's
`priority` scheduling policy, for every engine request made inside `engine_priority` (tasks started
there included), and never under `fcfs` (vLLM's default policy)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from aligner.engine.base import SamplingSpec, engine_priority
from aligner.engine.vllm import Engine, EngineConfig, SchedulerSnapshot


class RecordingLLM:
    """The part of vLLM's AsyncLLM that Engine._run calls: it records each request's priority."""

    def __init__(self):
        self.priorities: list[int] = []

    async def generate(self, prompt, params, request_id, *, priority: int = 0):
        self.priorities.append(priority)
        yield SimpleNamespace(outputs=[SimpleNamespace(index=0, token_ids=[7], text="x", finish_reason="stop")])

    async def abort(self, request_id):
        pass


@pytest.fixture
def engines(model_dir):
    def make(policy: str) -> tuple[Engine, RecordingLLM]:
        llm = RecordingLLM()
        return Engine(llm, EngineConfig(scheduling_policy=policy), model_dir, SchedulerSnapshot()), llm

    return make


def priorities(engine: Engine) -> None:
    spec = SamplingSpec(max_tokens=1)

    async def scenario() -> None:
        await engine.generate([1, 2], spec)  # no tier: 0
        with engine_priority(3):
            await engine.generate([1, 2], spec)
            # A task started inside the block (beam's siblings, a judge's prompts) keeps the tier.
            await asyncio.ensure_future(engine.generate([1, 2], spec))
        await engine.generate([1, 2], spec)  # the block ended: 0 again

    asyncio.run(scenario())


def test_a_tier_is_vllms_priority_lower_first_under_the_priority_policy(engines):
    engine, llm = engines("priority")
    priorities(engine)
    assert llm.priorities == [0, -3, -3, 0]  # vLLM runs the lowest value first: tier 3 before tier 0


def test_fcfs_sends_no_priority(engines):
    engine, llm = engines("fcfs")
    priorities(engine)
    assert llm.priorities == [0, 0, 0, 0]
