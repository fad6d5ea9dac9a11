"""`beam`: chunk-level reward-guided search (controlled decoding, blockwise).

Each step asks the engine for `expansions` continuations of `chunk_tokens`
tokens from every running beam's token-id prefix (prefix caching makes the
shared prefix cheap), scores the partial responses, and keeps the best
`beam_width`. With `prune` > 0 the kept width shrinks by that fraction each
step (Speculative Rejection: start wide, drop the worst early). Finished beams
stay in the pool and compete with running ones on the same scores; the search
ends when every kept beam has finished or the budget runs out.

Streaming: the longest token prefix shared by every kept beam can no longer
change, so it is emitted as a committed chunk as soon as it grows; the rest of
the chosen beam follows at the end, so the chunks always concatenate to the
final text. Committed text holds back its last characters while they could
still begin a stop string that the next chunk completes.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

from aligner.concurrency import gather_all
from aligner.events import Chunk
from aligner.search.base import (
    DeadlineExceeded,
    Scored,
    SearchContext,
    SearchResult,
    Strategy,
    best_first,
    cut_at_stop,
    score_and_rank,
    to_scored,
)
from aligner.search.params.beam import Params


def common_prefix(sequences: list[tuple[int, ...]]) -> tuple[int, ...]:
    if not sequences:
        return ()
    shortest = min(sequences, key=len)
    for i, token in enumerate(shortest):
        if any(s[i] != token for s in sequences):
            return shortest[:i]
    return shortest


class Committer:
    """Emits committed text once, in order, holding back an incomplete UTF-8 character and
    anything that could be the start of a stop string."""

    def __init__(self, ctx: SearchContext):
        self.ctx = ctx
        self.text = ""
        self.hold_back = max((len(s) for s in ctx.request.stop), default=1) - 1

    def commit(self, token_ids: tuple[int, ...], scores: dict | None = None) -> None:
        text, stopped = cut_at_stop(self.ctx.decode(token_ids).rstrip("\ufffd"), self.ctx.request.stop)
        if not stopped and self.hold_back:
            text = text[: max(len(text) - self.hold_back, 0)]
        if len(text) > len(self.text) and text.startswith(self.text):
            self._emit(text[len(self.text) :], scores)
            self.text = text

    def finish(self, chosen: Scored) -> Scored:
        """Emit the rest of `chosen`; its text is returned as exactly what was streamed."""
        rest = chosen.text[len(self.text) :]
        if rest:
            self._emit(rest, chosen.scores)
        return replace(chosen, text=self.text + rest)

    def _emit(self, text: str, scores: dict | None) -> None:
        if self.ctx.emit is not None:
            self.ctx.emit(Chunk(text, scores))


class Beam(Strategy):
    params = Params

    async def run(self, ctx: SearchContext) -> SearchResult:
        search = ctx.params(Params)
        max_tokens = ctx.request.max_tokens
        pool: list[Scored] = [Scored((), "", "length", False)]
        width = search.beam_width
        committer = Committer(ctx)
        step = 0
        while any(not b.finished for b in pool):
            running = [b for b in pool if not b.finished]
            chunk = min(search.chunk_tokens, max_tokens - min(len(b.token_ids) for b in running))
            # Affordability is per expansion request: every running beam asks for `expansions` children.
            count, tokens = ctx.meter.affordable(len(running) * search.expansions, chunk, scored=True)
            if not count:
                break
            per_beam = max(1, count // len(running))
            running = running[: max(1, count // per_beam)]
            spec = replace(ctx.spec, seed=ctx.seed_for(step))
            results = await gather_all(
                *(
                    ctx.generate(
                        replace(spec, max_tokens=min(tokens, max_tokens - len(b.token_ids))),
                        per_beam,
                        prefix_ids=b.token_ids,
                    )
                    for b in running
                )
            )
            children = _unique(await _decoded(ctx, running, results))
            if not children:
                break
            step += 1
            ctx.meter.rounds += 1
            finished_kept = [b for b in pool if b.finished]
            ranked = await score_and_rank(ctx, children)
            if not ranked:
                break  # the deadline passed while scoring: the last scored pool stands
            # Finished beams keep their scores and compete with the new children for the kept slots.
            pool = best_first(finished_kept + ranked)[:width]
            if search.prune:
                width = max(1, math.ceil(width * (1 - search.prune)))
            committer.commit(common_prefix([b.token_ids for b in pool]), pool[0].scores)
        if not pool or not pool[0].token_ids and not pool[0].finished:
            raise DeadlineExceeded("the search stopped before any chunk was generated")
        chosen = committer.finish(pool[0])
        return SearchResult(chosen=chosen, candidates=[chosen, *pool[1:]])


async def _decoded(ctx: SearchContext, beams: list[Scored], results: list) -> list[Scored]:
    """Every child as prefix + continuation, decoded off the event loop."""
    return await asyncio.to_thread(
        lambda: [to_scored(c, ctx, b.token_ids) for b, cs in zip(beams, results) for c in cs]
    )


def _unique(items: list[Scored]) -> list[Scored]:
    seen: set[tuple[int, ...]] = set()
    out = []
    for item in items:
        if item.token_ids not in seen:
            seen.add(item.token_ids)
            out.append(item)
    return out
