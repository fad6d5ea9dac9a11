"""What every search strategy shares: context, budget, usage accounting, results.

A *reward call* is the scoring of one candidate (or partial candidate) on all
the objectives the request needs; `max_reward_calls` bounds their number.
`max_candidate_tokens` bounds the tokens generated over all candidates, and
`deadline_ms` the wall time of the whole search: generation, scoring and
judging alike are cut off when it passes. The server's `max_request_s` is a
deadline too, for every request: whichever of the two comes first holds.
Strategies ask the meter what they can afford before each round, so no limit
is ever exceeded; the first limit that cuts a search short is reported as
`stopped_by`.

Stop strings have one meaning everywhere (OpenAI's): the text ends before the
first occurrence of any of them, wherever it falls, chunk boundaries included.
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import ClassVar, TypeVar

import numpy as np

from aligner.contract import AlignRequest, ChatMessage
from aligner.engine.base import Candidate, Generator, SamplingSpec, derive_seed
from aligner.errors import AlignerError
from aligner.events import TextEvent
from aligner.preference import Combiner, Ranking
from aligner.rewards import ObjectiveCatalog
from aligner.search.params.base import SearchParams

STAGES = ("generate", "score", "select")
P = TypeVar("P", bound=SearchParams)


class DeadlineExceeded(AlignerError):
    """The deadline passed before any candidate was complete enough to return."""

    code = "deadline_exceeded"


@dataclass
class Meter:
    """Usage of one search, and what the budget still allows."""

    started: float
    max_candidate_tokens: int | None = None
    max_reward_calls: int | None = None
    deadline_ms: int | None = None
    # The server's time limit (SearchLimits.max_request_s): a deadline of every request.
    max_request_s: float | None = None
    # The most candidates a tenant's `resample` action may add (what the server's limits leave; None: no cap).
    max_resamples: int | None = None
    candidate_tokens: int = 0
    reward_calls: int = 0
    rounds: int = 0
    stopped_by: str | None = None
    # The last `affordable` shortened a candidate to the tokens left: spending them all means the budget cut it.
    shortened: bool = field(default=False, repr=False)
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def stop(self, limit: str) -> None:
        if self.stopped_by is None:
            self.stopped_by = limit

    def deadline(self) -> tuple[float, str] | None:
        """(seconds after `started`, the limit's name) of the nearer of the two deadlines; None without one."""
        deadlines = []
        if self.deadline_ms is not None:
            deadlines.append((self.deadline_ms / 1000, "deadline_ms"))
        if self.max_request_s is not None:
            deadlines.append((self.max_request_s, "max_request_s"))
        return min(deadlines, default=None)

    def time_left(self) -> float | None:
        deadline = self.deadline()
        if deadline is None:
            return None
        return deadline[0] - (time.monotonic() - self.started)

    def timed_out(self) -> None:
        """Record that a deadline cut the search short (the nearer one: it passed first)."""
        deadline = self.deadline()
        self.stop(deadline[1] if deadline is not None else "deadline_ms")

    def out_of_time(self) -> bool:
        left = self.time_left()
        if left is not None and left <= 0:
            self.timed_out()
            return True
        return False

    def affordable(self, count: int, tokens_each: int, *, scored: bool) -> tuple[int, int]:
        """(candidates, tokens each) that fit the token and reward-call budgets; (0, 0) if none.

        Fewer candidates at full length are preferred; a single candidate is
        shortened only when not even one full one fits.
        """
        self.shortened = False
        if self.out_of_time():
            return 0, 0
        if scored and self.max_reward_calls is not None:
            calls_left = self.max_reward_calls - self.reward_calls
            if calls_left < count:
                self.stop("max_reward_calls")
                count = max(0, calls_left)
        if self.max_candidate_tokens is not None and count:
            tokens_left = self.max_candidate_tokens - self.candidate_tokens
            if tokens_left < count * tokens_each:
                if tokens_left >= tokens_each:
                    self.stop("max_candidate_tokens")  # candidates are dropped: the budget binds now
                    count = tokens_left // tokens_each
                elif tokens_left > 0:
                    # One shorter candidate; with others dropped the budget binds now, else only if the one
                    # uses it all (see `generated`).
                    if count > 1:
                        self.stop("max_candidate_tokens")
                    count, tokens_each = 1, tokens_left
                    self.shortened = True
                else:
                    self.stop("max_candidate_tokens")
                    count = 0
        return (count, tokens_each) if count else (0, 0)

    def generated(self, tokens: int) -> None:
        """Count `tokens` generated. Full-length candidates that spend the budget exactly were not cut by it:
        the budget binds when the search asks for more (`affordable`), or here for a shortened candidate."""
        self.candidate_tokens += tokens
        budget = self.max_candidate_tokens
        if self.shortened and budget is not None and self.candidate_tokens >= budget:
            self.stop("max_candidate_tokens")

    @contextmanager
    def stage(self, name: str):
        started = time.monotonic()
        try:
            yield
        finally:
            self.stage_seconds[name] += time.monotonic() - started


@dataclass(frozen=True)
class Scored:
    """A (possibly partial) response with its scores under the request."""

    token_ids: tuple[int, ...]
    text: str
    finish_reason: str
    finished: bool
    scores: dict[str, float] | None = None
    combined: float | None = None
    feasible: bool | None = None
    # Meets the tenant's thresholds (None: none apply); ranks before `feasible` (aligner/preference.py).
    passes_thresholds: bool | None = None
    # Every objective of the direction has a score (a judge decided): a combined score that can meet a
    # search's score threshold (rejection's).
    decided: bool = True


@dataclass
class SearchResult:
    chosen: Scored
    candidates: list[Scored]
    threshold_met: bool | None = None


Emit = Callable[[TextEvent], None]


@dataclass
class SearchContext:
    engine: Generator
    catalog: ObjectiveCatalog
    request: AlignRequest
    prompt_ids: list[int]
    meter: Meter
    emit: Emit | None = None
    # Prompt ids for another direction (DPA models read it from the system prompt).
    prompt_for_direction: Callable[[dict[str, float]], list[int]] | None = None
    # The tenant's safety thresholds: every ranking puts the candidates that meet them first.
    thresholds: Mapping[str, float] = field(default_factory=dict)

    def params(self, kind: type[P]) -> P:
        """The request's search parameters, as the running strategy's own `Params`."""
        search = self.request.search
        if not isinstance(search, kind):
            raise TypeError(f"the request's search is {type(search).__name__}, not {kind.__name__}")
        return search

    @property
    def spec(self) -> SamplingSpec:
        r = self.request
        return SamplingSpec(
            max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p, seed=r.seed, stop=tuple(r.stop)
        )

    @property
    def conversation(self) -> list[ChatMessage]:
        return self.request.conversation()

    @property
    def objective_names(self) -> list[str]:
        return self.request.scored_objectives()

    def combiner(self, direction: dict[str, float] | None = None) -> Combiner:
        r = self.request
        names = self.objective_names
        return Combiner(
            objectives=tuple(self.catalog.objective(n) for n in names),
            direction=direction if direction is not None else (r.direction() or {}),
            method=r.combination,
            references=r.references,
            # A request's checks are a hard constraint: all of them passed.
            minimums={name: c.min for name, c in (r.constraints or {}).items()} | ({"checks": 1.0} if r.checks else {}),
            thresholds=self.thresholds or None,
        )

    def seed_for(self, round_index: int, stream: str = "round") -> int | None:
        """A distinct, reproducible seed per round of one request (unrelated to any other request's); another
        `stream` (a safety resample's) gives seeds apart from every round's, however many rounds there are."""
        seed = self.request.seed
        return None if seed is None else derive_seed(seed, stream, round_index)

    async def generate(
        self, spec: SamplingSpec, n: int, *, prefix_ids: Sequence[int] = (), prompt_ids: Sequence[int] | None = None
    ) -> list[Candidate]:
        """One engine request, bounded by the deadline (cancelled and aborted when it passes)."""
        with self.meter.stage("generate"):
            call = self.engine.generate(prompt_ids or self.prompt_ids, spec, n=n, prefix_ids=prefix_ids)
            left = self.meter.time_left()
            try:
                candidates = await (call if left is None else asyncio.wait_for(call, max(left, 0.001)))
            except TimeoutError:
                self.meter.timed_out()
                return []
        self.meter.generated(sum(len(c.token_ids) for c in candidates))
        return candidates

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.engine.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    async def score(self, texts: Sequence[str]) -> np.ndarray | None:
        """Raw scores of `texts`, or None when the deadline passes first (the scoring is then abandoned)."""
        if self.meter.out_of_time():
            return None
        self.meter.reward_calls += len(texts)
        with self.meter.stage("score"):
            call = self.catalog.score(self.conversation, texts, self.objective_names)
            left = self.meter.time_left()
            try:
                return await (call if left is None else asyncio.wait_for(call, max(left, 0.001)))
            except TimeoutError:
                self.meter.timed_out()
                return None

    async def scored(self, candidates: Sequence[Candidate]) -> list[Scored]:
        """`to_scored` for each fresh candidate, off the event loop (stop strings are searched in long texts)."""
        if not candidates:
            return []
        return await asyncio.to_thread(lambda: [to_scored(c, self) for c in candidates])

    def rank(
        self, items: Sequence[Scored], raw: np.ndarray, combiner: Combiner | None = None
    ) -> tuple[list[Scored], Ranking]:
        """`items` with their scores filled in, and their ranking (best first).

        An undecided score (NaN: a judge answered neither Yes nor No) is left out of the item's `scores`:
        the objective has no score, so it fails every threshold and constraint on it.
        """
        with self.meter.stage("select"):
            ranking = (combiner or self.combiner()).rank(raw)
            names = self.objective_names
            passes = ranking.passes
            scored = [
                Scored(
                    item.token_ids,
                    item.text,
                    item.finish_reason,
                    item.finished,
                    scores={n: float(raw[i, j]) for j, n in enumerate(names) if not math.isnan(raw[i, j])},
                    combined=float(ranking.combined[i]),
                    feasible=bool(ranking.feasible[i]),
                    passes_thresholds=None if passes is None else bool(passes[i]),
                    decided=True if ranking.decided is None else bool(ranking.decided[i]),
                )
                for i, item in enumerate(items)
            ]
        return scored, ranking


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first occurrence of any stop string, and whether one occurred."""
    found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    return (text[: min(found)], True) if found else (text, False)


def to_scored(candidate: Candidate, ctx: SearchContext, prefix: Sequence[int] | None = None) -> Scored:
    """The candidate as a (partial) response: prefix + new tokens, its text cut at the first stop string.

    Without a prefix the text is vLLM's, already cut at a stop string (and what `sample` streams).
    A continuation of a prefix (beam; an empty prefix included, so every beam is decoded the same
    way) is decoded whole, because vLLM never sees a stop string that straddles the prefix and the
    new tokens.
    """
    token_ids = (*(prefix or ()), *candidate.token_ids)
    text = candidate.text if prefix is None else ctx.decode(token_ids)
    text, stopped = cut_at_stop(text, ctx.request.stop)
    finish_reason = "stop" if stopped else candidate.finish_reason
    finished = finish_reason in ("stop", "abort") or len(token_ids) >= ctx.request.max_tokens
    return Scored(token_ids, text, finish_reason, finished)


def best_first(items: Sequence[Scored]) -> list[Scored]:
    """Already-scored items in the order a ranking gives them (aligner/preference.py): those that pass the
    tenant's thresholds first, then feasible before infeasible, higher combined score first, earlier first
    on ties."""
    combined = [-math.inf if item.combined is None else item.combined for item in items]
    order = sorted(
        range(len(items)),
        key=lambda i: (items[i].passes_thresholds is False, not items[i].feasible, -combined[i], i),
    )
    return [items[i] for i in order]


async def score_and_rank(ctx: SearchContext, items: list[Scored]) -> list[Scored]:
    """Score `items` and return them best first (feasible before infeasible); [] if the deadline passed."""
    if not items:
        return []
    raw = await ctx.score([i.text for i in items])
    if raw is None:
        return []
    scored, ranking = ctx.rank(items, raw)
    return [scored[i] for i in ranking.order]


async def sample_round(ctx: SearchContext, wanted: int, round_index: int) -> list[Scored]:
    """One round of a search that samples in rounds (rejection, adaptive best_of_n): up to `wanted` full
    candidates under the round's own seed, scored, best first; [] when the budget allows none, the engine
    gives none or the deadline passed while scoring (the earlier rounds' candidates stand)."""
    count, tokens = ctx.meter.affordable(wanted, ctx.request.max_tokens, scored=True)
    if not count:
        return []
    candidates = await ctx.generate(replace(ctx.spec, max_tokens=tokens, seed=ctx.seed_for(round_index)), count)
    if not candidates:
        return []
    ctx.meter.rounds += 1
    return await score_and_rank(ctx, await ctx.scored(candidates))


class Strategy(ABC):
    """A strategy's run code; `params` is its half the contract reads (aligner/search/params/)."""

    params: ClassVar[type[SearchParams]]

    @property
    def name(self) -> str:
        return self.params.strategy_name()

    @abstractmethod
    async def run(self, ctx: SearchContext) -> SearchResult: ...
