"""`aligner bench ...`: speed and quality measured side by side in one run, written as JSON."""


def on_one_engine(engine_config, rewards, work, progress):
    """(model name, `await work(aligner)`) on a fresh engine with the `rewards` catalog, shut down after."""
    import asyncio

    from aligner.core import Aligner
    from aligner.engine.vllm import Engine, EngineConfig
    from aligner.rewards import build_catalog

    config = engine_config or EngineConfig(dtype="float32", kv_cache_gib=0.5, max_model_len=2048, block_size=32,
                                            enforce_eager=True)  # quality figures: compiling buys nothing

    async def main():
        engine = Engine.start(config, progress=progress)
        try:
            return engine.model_name, await work(Aligner(engine, build_catalog(rewards, tokenizer=engine.tokenizer,
                                                                               engine=engine)))
        finally:
            engine.shutdown()

    return asyncio.run(main())

