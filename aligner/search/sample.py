"""`sample`: plain generation, the baseline. Streams tokens; scored when the request names objectives."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from aligner.search.base import DeadlineExceeded, Scored, SearchContext, SearchResult, Strategy, score_and_rank, to_scored


class Sample(Strategy):
    name = "sample"

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
            candidate = to_scored(generated[0], ctx)
        if ctx.objective_names and ctx.meter.affordable(1, 0, scored=True)[0]:
            candidate = (await score_and_rank(ctx, [candidate]))[0]
        return SearchResult(chosen=candidate, candidates=[candidate])

    async def _stream(self, ctx: SearchContext, spec) -> Scored:
        ids: list[int] = []
        pieces: list[str] = []
        finish_reason = "abort"
        ctx.meter.engine_requests += 1
        try:
            with ctx.meter.stage("generate"):
                async with asyncio.timeout(ctx.meter.time_left()):
                    async for delta in ctx.engine.stream(ctx.prompt_ids, spec):
                        ids.extend(delta.token_ids)
                        if delta.text:
                            pieces.append(delta.text)
                            ctx.emit({"type": "delta", "text": delta.text})
                        finish_reason = delta.finish_reason or finish_reason
        except TimeoutError:
            ctx.meter.stop("deadline_ms")
            finish_reason = "length"
        finally:
            ctx.meter.generated(len(ids))
        return Scored(tuple(ids), "".join(pieces), finish_reason, True)
