"""`sample`: plain generation, the baseline. Streams tokens; scored when the request names objectives."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from aligner.events import Delta
from aligner.search.base import DeadlineExceeded, Scored, SearchContext, SearchResult, Strategy, score_and_rank
from aligner.search.params.sample import Params


class Sample(Strategy):
    params = Params

    async def run(self, ctx: SearchContext) -> SearchResult:
        _, tokens = ctx.meter.affordable(1, ctx.request.max_tokens, scored=False)
        if not tokens:
            raise DeadlineExceeded("the deadline passed before generation started")
        spec = replace(ctx.spec, max_tokens=tokens)
        if ctx.emit is not None:
            candidate = await self._stream(ctx, spec)
        else:
            generated = await ctx.generate(spec, 1)
            if not generated:
                raise DeadlineExceeded("the deadline passed before the response was complete")
            (candidate,) = await ctx.scored(generated)
        if ctx.objective_names and ctx.meter.affordable(1, 0, scored=True)[0]:
            # Past the deadline the response is returned unscored, with stopped_by saying why.
            candidate = (await score_and_rank(ctx, [candidate]) or [candidate])[0]
        return SearchResult(chosen=candidate, candidates=[candidate])

    async def _stream(self, ctx: SearchContext, spec) -> Scored:
        """vLLM's deltas, which already end before a stop string, so the text equals the non-streamed one."""
        emit = ctx.emit
        assert emit is not None  # only called when the request streams
        ids: list[int] = []
        pieces: list[str] = []
        finish_reason = "abort"
        try:
            with ctx.meter.stage("generate"):
                async with asyncio.timeout(ctx.meter.time_left()):
                    async for delta in ctx.engine.stream(ctx.prompt_ids, spec):
                        ids.extend(delta.token_ids)
                        if delta.text:
                            pieces.append(delta.text)
                            emit(Delta(delta.text))
                        finish_reason = delta.finish_reason or finish_reason
        except TimeoutError:
            ctx.meter.timed_out()
            if not pieces:
                raise DeadlineExceeded("the deadline passed before any text was generated") from None
            finish_reason = "length"  # what was streamed stands; stopped_by says why it is short
        finally:
            ctx.meter.generated(len(ids))
        return Scored(tuple(ids), "".join(pieces), finish_reason, True)
