"""The in-process benches' engine: one fresh engine and objective catalog per run, shut down after."""

from __future__ import annotations

import asyncio

from aligner.core import Aligner
from aligner.engine.vllm import Engine, EngineConfig
from aligner.rewards import RewardsConfig, build_catalog


def on_one_engine(engine_config: EngineConfig | None, work, progress, *, judge: bool = True):
    """(model name, `await work(aligner)`) on a fresh engine with the built-in objectives (and, with
    `judge`, the helpfulness judge), shut down after."""
    config = engine_config or EngineConfig(
        dtype="float32", kv_cache_gib=0.5, max_model_len=2048, block_size=32, enforce_eager=True
    )  # quality figures: compiling buys nothing

    async def main():
        engine = Engine.start(config, progress=progress)
        try:
            catalog = build_catalog(RewardsConfig(judge=judge), tokenizer=engine.tokenizer, engine=engine)
            return engine.model_name, await work(Aligner(engine, catalog))
        finally:
            engine.shutdown()

    return asyncio.run(main())
