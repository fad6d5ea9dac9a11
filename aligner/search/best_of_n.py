"""`best_of_n`: one engine request with `n` (the prompt's KV blocks are shared), score all, keep the best.

With `adaptive`, candidates come in rounds of `batch` (each its own seed, derived from the request's) up
to `n`. After each round, once the best candidate is feasible, the combined scores seen so far are read as
draws from a normal distribution (their mean and standard deviation): the chance that one more draw beats
the best by more than `margin` is q = 1 − Φ((best + margin − mean) / sd), and the chance that the next
round's best does is 1 − (1 − q)^batch. Below `stop_probability` the search stops (`converged`). With
checks, a best candidate that passes them all stops it as well (`checks_passed`): nothing outranks it but a
higher score, which the rule above already priced.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

from aligner.search.base import (
    DeadlineExceeded,
    Scored,
    SearchContext,
    SearchResult,
    Strategy,
    best_first,
    sample_round,
    score_and_rank,
)
from aligner.search.params.best_of_n import Params

MIN_SPREAD = 1e-6  # the standard deviation of scores that are all equal: no draw will beat them


class BestOfN(Strategy):
    params = Params

    async def run(self, ctx: SearchContext) -> SearchResult:
        search = ctx.params(Params)
        if search.adaptive:
            return await self._adaptive(ctx, search)
        count, tokens = ctx.meter.affordable(search.n, ctx.request.max_tokens, scored=True)
        candidates = await ctx.generate(replace(ctx.spec, max_tokens=tokens), count) if count else []
        if not candidates:
            raise DeadlineExceeded("the deadline passed before any candidate was complete")
        ctx.meter.rounds += 1
        ranked = await score_and_rank(ctx, await ctx.scored(candidates))
        if not ranked:
            raise DeadlineExceeded("the deadline passed before the candidates were scored")
        return SearchResult(chosen=ranked[0], candidates=ranked)

    async def _adaptive(self, ctx: SearchContext, search: Params) -> SearchResult:
        seen: list[Scored] = []
        for round_index in range(search.rounds()):
            ranked = await sample_round(ctx, min(search.round_size(), search.n - len(seen)), round_index)
            if not ranked:
                break
            seen = best_first([*seen, *ranked])
            stop = stop_reason(seen, search, checks=bool(ctx.request.checks))
            if stop is not None and len(seen) < search.n:
                ctx.meter.stop(stop)
                break
        if not seen:
            raise DeadlineExceeded("the deadline passed before any candidate was complete and scored")
        return SearchResult(chosen=seen[0], candidates=seen)


def stop_reason(ranked: list[Scored], search: Params, *, checks: bool) -> str | None:
    """Why the adaptive search stops after this round ("checks_passed", "converged"), or None to go on."""
    best = ranked[0]
    if not best.feasible or best.passes_thresholds is False:
        return None  # the next draw may be the first acceptable one
    if checks:
        return "checks_passed"  # feasible: every check passed
    return "converged" if gain_probability(ranked, search) < search.stop_probability else None


def gain_probability(ranked: list[Scored], search: Params) -> float:
    """The chance that the next round's best beats the best seen by more than `margin` (module docstring)."""
    scores = [s.combined for s in ranked if s.combined is not None and math.isfinite(s.combined)]
    if len(scores) < 2:
        return 1.0  # one draw says nothing of the spread
    spread = max(statistics.stdev(scores), MIN_SPREAD)
    # the bar is the best by the ranking's tiers: an infeasible high scorer is not a result to beat
    best = ranked[0].combined
    bar = best if best is not None and math.isfinite(best) else max(scores)
    z = (bar + search.margin - statistics.fmean(scores)) / spread
    beats_one = 0.5 * math.erfc(z / math.sqrt(2))
    return 1.0 - (1.0 - beats_one) ** search.round_size()
