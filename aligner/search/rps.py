"""`rps`: robust preference selection — sample under neighbouring directions, pick by the original one.

The `neighbors` directions lie at angle `spread` (degrees) from the user's unit
vector v: cos(spread)·v + sin(spread)·u with u a unit vector orthogonal to v,
drawn reproducibly from the request seed. A vector over a single objective has
no neighbours and RPS reduces to best-of-n.

- Models that read directions (DPA profile): each neighbour is rendered in its
  own system prompt and sampled `n` times; every candidate is then scored and
  the best under v is chosen.
- Other models: the prompt cannot carry a direction, so neighbours steer the
  selection instead: `n` candidates per neighbour come from one request, the
  best candidate under each neighbour direction is shortlisted, and the
  shortlisted candidate that is best under v is chosen. This keeps only
  candidates that win under some nearby preference, the robustness RPS is for.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

import numpy as np

from aligner.concurrency import gather_all
from aligner.search.base import DeadlineExceeded, SearchContext, SearchResult, Strategy
from aligner.search.params.rps import Params


def neighbour_directions(
    direction: dict[str, float], count: int, spread_degrees: float, seed: int | None
) -> list[dict[str, float]]:
    names = list(direction)
    v = np.array([direction[n] for n in names], dtype=float)
    if len(names) < 2:
        return []
    rng = np.random.default_rng(seed if seed is not None else 0)
    theta = math.radians(spread_degrees)
    out = []
    for _ in range(count):
        u = rng.normal(size=len(names))
        u -= u.dot(v) * v
        u /= np.linalg.norm(u)
        w = math.cos(theta) * v + math.sin(theta) * u
        out.append(dict(zip(names, (w / np.linalg.norm(w)).tolist())))
    return out


class RobustPreferenceSelection(Strategy):
    params = Params

    async def run(self, ctx: SearchContext) -> SearchResult:
        search = ctx.params(Params)
        direction = dict(ctx.request.direction() or {})  # a ranked strategy: the contract requires one
        neighbours = neighbour_directions(direction, search.neighbors, search.spread, ctx.request.seed) or [direction]
        per_direction = search.n
        count, tokens = ctx.meter.affordable(len(neighbours) * per_direction, ctx.request.max_tokens, scored=True)
        if not count:
            raise DeadlineExceeded("the budget or deadline allows no candidate")
        spec = replace(ctx.spec, max_tokens=tokens)
        render = ctx.prompt_for_direction
        if render is not None:
            kept = neighbours[: max(1, count // per_direction)]
            per = min(per_direction, count)
            # Each direction's prompt is rendered and tokenized: CPU work, off the event loop.
            prompts = await asyncio.to_thread(lambda: [render(d) for d in kept])
            batches = await gather_all(
                *(ctx.generate(replace(spec, seed=ctx.seed_for(i)), per, prompt_ids=p) for i, p in enumerate(prompts))
            )
            candidates = [c for batch in batches for c in batch]
        else:
            candidates = await ctx.generate(spec, count)
        if not candidates:
            raise DeadlineExceeded("the deadline passed before any candidate was complete")
        ctx.meter.rounds += 1
        items = await ctx.scored(candidates)
        raw = await ctx.score([i.text for i in items])
        if raw is None:
            raise DeadlineExceeded("the deadline passed before the candidates were scored")
        if ctx.prompt_for_direction is None:
            shortlist = sorted({ctx.combiner(d).rank(raw).best for d in neighbours})
        else:
            shortlist = list(range(len(items)))
        scored, ranking = ctx.rank([items[i] for i in shortlist], raw[shortlist])
        ranked = [scored[i] for i in ranking.order]
        return SearchResult(chosen=ranked[0], candidates=ranked)
