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
from aligner.search.params.rejection import Params


class Rejection(Strategy):
    params = Params

    async def run(self, ctx: SearchContext) -> SearchResult:
        search = ctx.params(Params)
        threshold = search.threshold
        if threshold is None:  # the contract refuses it (Params.check); a search built in code may not
            raise ValueError("rejection needs a threshold")
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
            best = ranked[0]
            # An undecided judge's middle score never meets the threshold (no evidence is not a pass).
            if best.feasible and best.decided and best.combined is not None and best.combined >= threshold:
                met = True
                break
        if not seen:
            raise DeadlineExceeded("the deadline passed before any candidate was complete and scored")
        ranked = best_first(seen)
        return SearchResult(chosen=ranked[0], candidates=ranked, threshold_met=met)
