"""`particle_filter`: particle-based Monte Carlo inference-time scaling ("A Probabilistic Inference Approach
to Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods", 2025; its_hub's
ParticleFiltering).

A population of `particles` partial responses starts empty. Each step extends every running particle by
one chunk of `chunk_tokens` (particles that share a token prefix, as resampled copies do, ask one engine
request with n = their number, so the copies continue differently and the prefix is cached once), scores
the new partial responses, and draws the next population: `particles` draws with replacement, each
particle's chance its weight softmax(combined / `weight_temperature`). Particles that fail the tenant's
thresholds are drawn only when none passes, and among the rest infeasible ones (the request's constraints
and checks) only when none is feasible. Finished particles stay in the population with their
scores and are drawn like the others. The draws use a generator seeded from the request's seed and the
step, so one seed gives one answer. The search ends when every particle has finished or the budget runs
out; the best particle of the last population is returned.

Streaming is beam's: the token prefix every particle shares can no longer change, so it is committed as
it grows, and the rest of the chosen particle follows at the end.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter
from dataclasses import replace

import numpy as np

from aligner.concurrency import gather_all
from aligner.engine.base import derive_seed
from aligner.search.base import (
    DeadlineExceeded,
    Scored,
    SearchContext,
    SearchResult,
    Strategy,
    best_first,
    score_and_rank,
)
from aligner.search.beam import Committer, common_prefix, decoded_children, unique
from aligner.search.params.particle_filter import Params


class ParticleFilter(Strategy):
    params = Params

    async def run(self, ctx: SearchContext) -> SearchResult:
        search = ctx.params(Params)
        max_tokens = ctx.request.max_tokens
        population: list[Scored] = [Scored((), "", "length", False)] * search.particles
        committer = Committer(ctx)
        seed = ctx.request.seed if ctx.request.seed is not None else secrets.randbits(63)
        step = 0
        while any(not p.finished for p in population):
            finished = [p for p in population if p.finished]
            # Running particles by their prefix: one engine request per distinct prefix.
            prefixes = Counter(p.token_ids for p in population if not p.finished)
            chunk = min(search.chunk_tokens, max_tokens - min(len(prefix) for prefix in prefixes))
            count, tokens = ctx.meter.affordable(sum(prefixes.values()), chunk, scored=True)
            if not count:
                break
            asked = _within(prefixes, count)
            spec = replace(ctx.spec, seed=ctx.seed_for(step))
            parents = [Scored(prefix, "", "length", False) for prefix in asked]
            results = await gather_all(
                *(
                    ctx.generate(replace(spec, max_tokens=min(tokens, max_tokens - len(prefix))), n, prefix_ids=prefix)
                    for prefix, n in asked.items()
                )
            )
            children = await decoded_children(ctx, parents, results)
            if not children:
                break
            step += 1
            ctx.meter.rounds += 1
            scored = await score_and_rank(ctx, children)
            if not scored:
                break  # the deadline passed while scoring: the last population stands
            pool = [*finished, *scored]
            draws = np.random.default_rng(derive_seed(seed, "particles", step)).choice(
                len(pool), size=search.particles, p=weights(pool, search.weight_temperature)
            )
            population = [pool[i] for i in sorted(draws)]
            committer.commit(common_prefix([p.token_ids for p in population]), best_first(population)[0].scores)
        if not population[0].token_ids and not population[0].finished:
            raise DeadlineExceeded("the search stopped before any chunk was generated")
        ranked = best_first(unique(population))
        chosen = committer.finish(ranked[0])
        return SearchResult(chosen=chosen, candidates=[chosen, *ranked[1:]])


def weights(pool: list[Scored], temperature: float) -> np.ndarray:
    """Resampling probabilities: softmax(combined / temperature) over the best tier of particles, as the
    ranking orders them: those that pass the tenant's thresholds, and among them the feasible ones (the
    request's constraints and checks), each tier used only when it is not empty."""
    allowed = np.ones(len(pool), dtype=bool)
    for tier in ([p.passes_thresholds is not False for p in pool], [bool(p.feasible) for p in pool]):
        narrower = allowed & np.array(tier)
        if narrower.any():
            allowed = narrower
    combined = np.array([p.combined if p.combined is not None and math.isfinite(p.combined) else 0.0 for p in pool])
    best = combined[allowed].max()
    logits = np.where(allowed, (combined - best) / temperature, -np.inf)  # the best is 0: nothing overflows
    exp = np.exp(logits)
    return exp / exp.sum()


def _within(prefixes: Counter, count: int) -> dict[tuple[int, ...], int]:
    """The prefixes' requests cut to `count` continuations in all (what the budget affords), in order."""
    asked: dict[tuple[int, ...], int] = {}
    for prefix, n in prefixes.items():
        take = min(n, count - sum(asked.values()))
        if take <= 0:
            break
        asked[prefix] = take
    return asked
