"""`rejection`: sample rounds of `batch` until a feasible candidate reaches `threshold` (no threshold: until
one passes every check) or the budget is spent."""

from __future__ import annotations

from aligner.search.base import (
    DeadlineExceeded,
    Scored,
    SearchContext,
    SearchResult,
    Strategy,
    best_first,
    sample_round,
)
from aligner.search.params.rejection import Params


class Rejection(Strategy):
    params = Params

    async def run(self, ctx: SearchContext) -> SearchResult:
        search = ctx.params(Params)
        threshold = search.threshold
        if threshold is None and not ctx.request.checks:  # the contract refuses it (Params.check)
            raise ValueError("rejection needs a threshold or checks")
        seen: list[Scored] = []
        passing: Scored | None = None
        for round_index in range(search.max_rounds):
            ranked = await sample_round(ctx, search.batch, round_index)
            if not ranked:
                break
            seen.extend(ranked)
            # An undecided judge's middle score never meets the threshold (no evidence is not a pass),
            # and it may rank above a decided candidate that does: look past it, not only at the top.
            passing = next((s for s in ranked if s.feasible and s.decided and reaches(s, threshold)), None)
            if passing is not None:
                break
        if not seen:
            raise DeadlineExceeded("the deadline passed before any candidate was complete and scored")
        ranked = best_first(seen)
        if passing is None:
            return SearchResult(chosen=ranked[0], candidates=ranked, threshold_met=False)
        rest = [s for s in ranked if s is not passing]
        return SearchResult(chosen=passing, candidates=[passing, *rest], threshold_met=True)


def reaches(candidate: Scored, threshold: float | None) -> bool:
    return threshold is None or (candidate.combined is not None and candidate.combined >= threshold)
