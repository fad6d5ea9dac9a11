"""`aligner bench search`: latency, throughput and reward per compute of every strategy, in one run.

All strategies answer the same prompts with the same seeds, direction and
`max_tokens` on one engine, so every ratio is measured side by side. Each runs with the
`example` its parameters declare (aligner/search/params/), every registered strategy by default.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from aligner.bench.common import DIRECTION, SEARCH_PROMPTS
from aligner.bench.runner import on_one_engine
from aligner.contract import AlignRequest
from aligner.search import registry


async def measure(aligner, strategy: str, prompts: Sequence[str], max_tokens: int) -> dict[str, Any]:
    scheduler = aligner.engine.scheduler
    queries, hits = scheduler.prefix_cache_queries, scheduler.prefix_cache_hits
    rows = []
    started = time.perf_counter()
    for seed, prompt in enumerate(prompts):
        request = AlignRequest.parse(
            {
                "prompt": prompt,
                "seed": seed,
                "temperature": 1.0,
                "max_tokens": max_tokens,
                "preference_vector": DIRECTION,
                "search": {"strategy": strategy, **registry.params_of(strategy).example},
            }
        )
        t0 = time.perf_counter()
        response = await aligner.generate(request)
        rows.append((time.perf_counter() - t0, response))
    total = time.perf_counter() - started
    generated = sum(r.usage.generated_tokens for _, r in rows)
    new_queries = scheduler.prefix_cache_queries - queries
    return {
        "strategy": strategy,
        "params": registry.params_of(strategy).example,
        "mean_latency_s": round(statistics.mean(t for t, _ in rows), 4),
        "generated_tokens": generated,
        "tokens_per_s": round(generated / total, 2),
        "mean_combined_score": round(statistics.mean(r.combined_score for _, r in rows), 5),
        "mean_reward_calls": statistics.mean(r.usage.reward_calls for _, r in rows),
        "mean_engine_requests": statistics.mean(r.usage.engine_requests for _, r in rows),
        "prefix_cache_hit_rate": round((scheduler.prefix_cache_hits - hits) / new_queries, 4) if new_queries else None,
    }


async def run_async(
    aligner, strategies: Sequence[str], prompts: Sequence[str], max_tokens: int, progress
) -> dict[str, Any]:
    results = {}
    await measure(aligner, "sample", prompts[:1], 8)  # warm-up: first-request costs stay out of the figures
    for strategy in strategies:
        results[strategy] = await measure(aligner, strategy, prompts, max_tokens)
        progress(f"{strategy}: {results[strategy]}")
    sample = results["sample"]
    ratios: dict[str, Any] = {}
    if "best_of_n" in results:
        ratios["latency_best_of_n8_over_sample"] = round(
            results["best_of_n"]["mean_latency_s"] / sample["mean_latency_s"], 3
        )
    if "beam" in results:
        ratios["tokens_per_s_beam_over_sample"] = round(results["beam"]["tokens_per_s"] / sample["tokens_per_s"], 3)
        ratios["prefix_cache_hit_rate_beam"] = results["beam"]["prefix_cache_hit_rate"]
    sample_tokens = sample["generated_tokens"] / len(prompts)
    ratios["reward_gain_over_sample_per_1k_tokens"] = {
        name: round(
            (r["mean_combined_score"] - sample["mean_combined_score"])
            / (max(r["generated_tokens"] / len(prompts) - sample_tokens, 1.0) / 1000),
            4,
        )
        for name, r in results.items()
        if name != "sample"
    }
    return {"results": results, "ratios": ratios}


def run(
    strategies: Sequence[str] | None = None,
    prompts: Sequence[str] = SEARCH_PROMPTS,
    max_tokens: int = 64,
    engine_config=None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    strategies = list(dict.fromkeys(["sample", *(registry.names() if strategies is None else strategies)]))
    model, report = on_one_engine(
        engine_config,
        lambda aligner: run_async(aligner, strategies, prompts, max_tokens, progress),
        progress,
        judge=False,
    )
    return {
        "benchmark": "search",
        "model": model,
        "machine": platform.processor() or platform.machine(),
        "direction": DIRECTION,
        "prompts": list(prompts),
        "max_tokens": max_tokens,
        "notes": "reward gain per 1k tokens = (mean combined score - sample's) "
        "/ (extra generated tokens per prompt / 1000)",
        **report,
    }
