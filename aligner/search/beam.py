"""`beam`: chunk-level reward-guided search (controlled decoding, blockwise).

Each step asks the engine for `expansions` continuations of `chunk_tokens`
tokens from every running beam's token-id prefix (prefix caching makes the
shared prefix cheap), scores the partial responses, and keeps the best
`beam_width`. With `prune` > 0 the kept width shrinks by that fraction each
step, carried as a fraction (`Params.width_at`; Speculative Rejection: start
wide, drop the worst early). Finished beams
stay in the pool and compete with running ones on the same scores; the search
ends when every kept beam has finished or the budget runs out.

Streaming: the longest token prefix shared by every kept beam can no longer
change, so it is emitted as a committed chunk as soon as it grows; the rest of
the chosen beam follows at the end, so the chunks always concatenate to the
final text. Committed text ends where the first stop string in it begins, or
earlier, where a stop string could still begin that a later chunk completes
(`settled_length`): a stop may begin before another one that is already whole
("abcd" before "c"), so every kept beam's scored text starts with what was
committed, and the returned text is the chosen beam's scored text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
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


def settled_length(text: str, stops: Sequence[str]) -> int:
    """How much of `text` no continuation can cut: up to the first stop string in it, and up to the earliest
    place where a stop string could still begin (the text ends with its first characters) and be completed
    by what follows. `cut_at_stop(text + more, stops)` starts with `text[:settled_length(text, stops)]`
    whatever `more` is."""
    found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    settled = min(found, default=len(text))
    for stop in stops:
        # The longest start of `stop` that `text` ends with begins earliest (a whole stop is counted above).
        for length in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:length]):
                settled = min(settled, len(text) - length)
                break
    return settled


class Committer:
    """Emits committed text once, in order, holding back an incomplete UTF-8 character and
    anything a stop string completed later could cut (`settled_length`)."""

    def __init__(self, ctx: SearchContext):
        self.ctx = ctx
        self.text = ""

    def commit(self, token_ids: tuple[int, ...], scores: dict | None = None) -> None:
        """Commit what is settled of `token_ids`, the prefix every kept beam shares."""
        text = self.ctx.decode(token_ids).rstrip("\ufffd")
        text = text[: settled_length(text, self.ctx.request.stop)]
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
            children = unique(await decoded_children(ctx, running, results))
            if not children:
                break
            step += 1
            ctx.meter.rounds += 1
            finished_kept = [b for b in pool if b.finished]
            ranked = await score_and_rank(ctx, children)
            if not ranked:
                break  # the deadline passed while scoring: the last scored pool stands
            # Finished beams keep their scores and compete with the new children for the kept slots.
            pool = best_first(finished_kept + ranked)[: search.width_at(step - 1)]
            committer.commit(common_prefix([b.token_ids for b in pool]), pool[0].scores)
        if not pool or not pool[0].token_ids and not pool[0].finished:
            raise DeadlineExceeded("the search stopped before any chunk was generated")
        chosen = committer.finish(pool[0])
        return SearchResult(chosen=chosen, candidates=[chosen, *pool[1:]])


async def decoded_children(ctx: SearchContext, beams: list[Scored], results: list) -> list[Scored]:
    """Every child as prefix + continuation, decoded off the event loop."""
    return await asyncio.to_thread(
        lambda: [to_scored(c, ctx, b.token_ids) for b, cs in zip(beams, results) for c in cs]
    )


def unique(items: list[Scored]) -> list[Scored]:
    """`items` without repeats of a token sequence, first kept."""
    seen: set[tuple[int, ...]] = set()
    out = []
    for item in items:
        if item.token_ids not in seen:
            seen.add(item.token_ids)
            out.append(item)
    return out
