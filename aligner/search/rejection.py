"""`rejection`: sample rounds of `batch` until a feasible candidate reaches `threshold` or the budget is spent."""

from __future__ import annotations

from dataclasses import replace

from aligner.search.base import (
    DeadlineExceeded,
    Scored,
    SearchContext,
    SearchResult,
    Strategy,
    best_first,
    score_and_rank,
)


class Rejection(Strategy):
    name = "rejection"

    async def run(self, ctx: SearchContext) -> SearchResult:
        search = ctx.request.search
        seen: list[Scored] = []
        met = False
        for round_index in range(search.max_rounds):
            count, tokens = ctx.meter.affordable(search.batch, ctx.request.max_tokens, scored=True)
            if not count:
                break
            spec = replace(ctx.spec, max_tokens=tokens, seed=ctx.seed_for(round_index))
            candidates = await ctx.generate(spec, count)
            if not candidates:
                break
            ctx.meter.rounds += 1
            ranked = await score_and_rank(ctx, await ctx.scored(candidates))
            if not ranked:
                break  # the deadline passed while scoring: the earlier rounds' candidates stand
            seen.extend(ranked)
            if ranked[0].feasible and ranked[0].combined >= search.threshold:
                met = True
                break
        if not seen:
            raise DeadlineExceeded("the deadline passed before any candidate was complete and scored")
        ranked = best_first(seen)
        return SearchResult(chosen=ranked[0], candidates=ranked, threshold_met=met)
