"""`best_of_n`: one engine request with `n` (the prompt's KV blocks are shared), score all, keep the best."""

from __future__ import annotations

from dataclasses import replace

from aligner.search.base import DeadlineExceeded, SearchContext, SearchResult, Strategy, score_and_rank
from aligner.search.params.best_of_n import Params


class BestOfN(Strategy):
    params = Params

    async def run(self, ctx: SearchContext) -> SearchResult:
        count, tokens = ctx.meter.affordable(ctx.params(Params).n, ctx.request.max_tokens, scored=True)
        candidates = await ctx.generate(replace(ctx.spec, max_tokens=tokens), count) if count else []
        if not candidates:
            raise DeadlineExceeded("the deadline passed before any candidate was complete")
        ctx.meter.rounds += 1
        ranked = await score_and_rank(ctx, await ctx.scored(candidates))
        if not ranked:
            raise DeadlineExceeded("the deadline passed before the candidates were scored")
        return SearchResult(chosen=ranked[0], candidates=ranked)
