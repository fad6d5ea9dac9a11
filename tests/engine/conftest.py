"""One real vLLM CPU engine (embedded SmolLM2, float32) shared by every engine test.

The engine lives on an event loop in a background thread, so plain synchronous
tests drive it with `run(coroutine)`.
"""

import asyncio
import threading

import pytest

from aligner.core import Aligner
from aligner.engine.vllm import Engine, EngineConfig
from aligner.rewards import RewardsConfig, build_catalog

TEST_ENGINE = EngineConfig(
    dtype="float32", max_model_len=2048, kv_cache_gib=0.5, max_num_seqs=16, block_size=32, enforce_eager=True
)  # eager: starts a minute sooner; tests check behaviour, not speed


class LoopThread:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="engine-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout=600):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def submit(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


@pytest.fixture(scope="package")
def loop_thread():
    runner = LoopThread()
    yield runner
    runner.close()


@pytest.fixture(scope="package")
def engine(loop_thread, model_dir):
    async def start():
        return Engine.start(TEST_ENGINE.model_copy(update={"model": str(model_dir)}))

    engine = loop_thread.run(start())
    yield engine
    engine.shutdown()


@pytest.fixture(scope="package")
def catalog(engine):
    return build_catalog(RewardsConfig(), tokenizer=engine.tokenizer, engine=engine)


@pytest.fixture(scope="package")
def aligner(engine, catalog):
    return Aligner(engine, catalog)


@pytest.fixture
def run(loop_thread):
    return loop_thread.run
