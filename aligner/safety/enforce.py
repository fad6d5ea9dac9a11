"""Enforcing a tenant's safety config on a search's candidates: thresholds as constraints, then keep,
resample, flag or refuse."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from aligner.contract import AlignRequest, Constraint, SafetyInfo
from aligner.safety.config import SafetyConfig
from aligner.search.base import Scored, SearchContext, SearchResult, best_first, score_and_rank


def with_thresholds(request: AlignRequest, config: SafetyConfig | None) -> AlignRequest:
    """The request with the config's thresholds among its constraints; where both name an objective
    the stricter minimum holds, so a request can tighten a threshold but never loosen it."""
    if config is None or not config.thresholds:
        return request
    merged = {name: c.min for name, c in (request.constraints or {}).items()}
    for name, minimum in config.thresholds.items():
        merged[name] = max(minimum, merged.get(name, minimum))
    return request.model_copy(update={"constraints": {n: Constraint(min=m) for n, m in merged.items()}})


def passes(config: SafetyConfig, scores: Mapping[str, float] | None) -> bool:
    """Whether scores meet every threshold; missing scores fail: enforcement fails closed. A score is
    missing when the deadline cut scoring short, or when a judge was undecided (its objective is left
    out of the candidate's scores: `SearchContext.rank`)."""
    return scores is not None and all(
        name in scores and scores[name] >= minimum for name, minimum in config.thresholds.items()
    )


def threshold_scores(config: SafetyConfig, scores: Mapping[str, float] | None) -> dict[str, float] | None:
    if scores is None:
        return None
    return {name: scores[name] for name in config.thresholds if name in scores}


async def enforce(ctx: SearchContext, config: SafetyConfig, result: SearchResult) -> tuple[SearchResult, SafetyInfo]:
    """Apply the config's thresholds to the search's choice: keep it, pick a passing candidate, resample,
    flag or refuse.

    The thresholds outrank the request: every strategy ranked the candidates that pass them first
    (`SearchContext.thresholds`), whatever the request's own constraints say. Enforcement still picks
    the best passing candidate among all of them, original and resampled (a strategy's choice need not
    be its best-ranked candidate), and refuses or flags only when none passes.
    """
    chosen = result.chosen
    if passes(config, chosen.scores):
        return result, SafetyInfo(verdict="passed", scores=threshold_scores(config, chosen.scores))
    candidates = list(result.candidates)
    best = best_passing(config, candidates)
    if best is not None:
        return replace_chosen(result, best, candidates), SafetyInfo(
            verdict="passed", scores=threshold_scores(config, best.scores)
        )
    if config.action == "flag":
        return result, SafetyInfo(verdict="flagged", scores=threshold_scores(config, chosen.scores))
    if config.action == "resample":
        # The server's limits hold for the search and its resamples together: admission left this many.
        allowed = ctx.meter.max_resamples
        extra = await resample(ctx, config.max_resamples if allowed is None else min(config.max_resamples, allowed))
        candidates = [*candidates, *extra]
        best = best_passing(config, candidates)
        if best is not None:
            return replace_chosen(result, best, candidates), SafetyInfo(
                verdict="resampled", scores=threshold_scores(config, best.scores)
            )
    refusal = Scored((), config.refusal_message, "content_filter", True)
    return (
        SearchResult(chosen=refusal, candidates=candidates, threshold_met=result.threshold_met),
        SafetyInfo(verdict="refused"),
    )


def best_passing(config: SafetyConfig, candidates: Sequence[Scored]) -> Scored | None:
    """The best-ranked candidate that meets every threshold (the request's constraints and the combined
    score decide among those); None when none does."""
    return next((c for c in best_first(candidates) if passes(config, c.scores)), None)


def replace_chosen(result: SearchResult, chosen: Scored, candidates: list[Scored]) -> SearchResult:
    return SearchResult(chosen=chosen, candidates=candidates, threshold_met=result.threshold_met)


async def resample(ctx: SearchContext, count: int) -> list[Scored]:
    """Up to `count` fresh candidates in one engine request (as the budget allows), scored and ranked best first."""
    if count <= 0:
        return []
    count, tokens = ctx.meter.affordable(count, ctx.request.max_tokens, scored=True)
    if not count:
        return []
    ctx.meter.rounds += 1
    spec = replace(ctx.spec, max_tokens=tokens, seed=ctx.seed_for(0, stream="resample"))
    generated = await ctx.generate(spec, count)
    return await score_and_rank(ctx, await ctx.scored(generated))
