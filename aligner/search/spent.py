"""A search's `Usage`: from its meter and the engine requests it caused, at its end (with the chosen
response) or whenever it stopped early (what it had cost, for metering a failed or cancelled request)."""

from __future__ import annotations

import time

from aligner.engine.base import EngineUsage
from aligner.prompting import PreparedPrompt
from aligner.search.base import Meter
from aligner.usage import Usage


def spent_usage(prepared: PreparedPrompt, meter: Meter, engine_usage: EngineUsage, started: float) -> Usage:
    """What a search has cost so far, without a response: no completion, no candidates compared; the prompt
    counts once the engine was asked for anything."""
    prompt_tokens = len(prepared.token_ids) if engine_usage.requests else 0
    return search_usage(prepared, meter, engine_usage, started, prompt_tokens=prompt_tokens)


def search_usage(
    prepared: PreparedPrompt,
    meter: Meter,
    engine_usage: EngineUsage,
    started: float,
    *,
    prompt_tokens: int,
    completion_tokens: int = 0,
    candidates: int = 0,
) -> Usage:
    """A search's usage from its meter and its engine requests, with what only its end knows (the
    prompt's share, the chosen response's tokens, the candidates compared)."""
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        candidate_tokens=meter.candidate_tokens,
        generated_tokens=engine_usage.generated_tokens,
        prefill_tokens=engine_usage.prefill_tokens,
        candidates=candidates,
        wall_time_s=round(time.monotonic() - started, 6),
        engine_requests=engine_usage.requests,
        reward_calls=meter.reward_calls,
        rounds=meter.rounds,
        stopped_by=meter.stopped_by,
        stage_seconds={k: round(v, 6) for k, v in meter.stage_seconds.items()},
    )
