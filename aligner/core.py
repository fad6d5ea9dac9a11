"""The one request path shared by the CLI and every transport.

request -> compose prompt -> strategy -> response. Transports call `Aligner`
and map `AlignerError` codes to their own statuses; they add no alignment logic.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aligner.engine import Candidate, Engine, SamplingSpec
from aligner.preference import Combiner, Ranking
from aligner.prompting import PreparedPrompt, prepare_prompt
from aligner.rewards import ObjectiveCatalog
from aligner.types import AlignRequest, AlignResponse, Usage

@dataclass(frozen=True)
class StreamEvent:
    """`delta` events carry text as it is generated; the last event is `done` with the response."""

    kind: str
    text: str = ""
    response: AlignResponse | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "done":
            return {"type": "done", "response": self.response.model_dump()}
        return {"type": self.kind, "text": self.text}


class Aligner:
    """Serves AlignRequests on one engine."""

    def __init__(self, engine: Engine, catalog: ObjectiveCatalog | None = None):
        self.engine = engine
        self.catalog = catalog or ObjectiveCatalog([])

    @staticmethod
    def check_objectives_of(request: AlignRequest, catalog: ObjectiveCatalog) -> None:
        """Every objective a request names must be served; the error lists the valid ones."""
        catalog.check_names(list(request.preference_vector or {}), "preference_vector")
        catalog.check_names(list(request.constraints or {}), "constraints")
        catalog.check_names(list(request.references or {}), "references")

    def check_objectives(self, request: AlignRequest) -> None:
        self.check_objectives_of(request, self.catalog)

    def prepare(self, request: AlignRequest, *, safety_config: str | None = None) -> PreparedPrompt:
        return prepare_prompt(
            request,
            tokenizer=self.engine.tokenizer,
            profile=self.engine.config.profile,
            max_model_len=self.engine.max_model_len,
            safety_config=safety_config,
        )

    @staticmethod
    def sampling(request: AlignRequest) -> SamplingSpec:
        return SamplingSpec(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=tuple(request.stop),
        )

    async def rank(self, request: AlignRequest, candidates: list[Candidate]) -> tuple[list[str], object, Ranking]:
        """Score candidates on the request's objectives and rank them by its direction and constraints."""
        names = request.scored_objectives()
        raw = await self.catalog.score(request.conversation(), [c.text for c in candidates], names)
        combiner = Combiner(
            objectives=tuple(self.catalog.objective(n) for n in names),
            direction=request.preference_vector or {},
            method=request.combination,
            references=request.references,
            minimums={name: c.min for name, c in (request.constraints or {}).items()},
        )
        return names, raw, combiner.rank(raw)

    async def generate(self, request: AlignRequest, *, safety_config: str | None = None) -> AlignResponse:
        started = time.monotonic()
        self.check_objectives(request)
        prepared = self.prepare(request, safety_config=safety_config)
        n = request.search.n if request.search.strategy == "best_of_n" else 1
        candidates = await self.engine.generate(prepared.token_ids, self.sampling(request), n=n)
        generated = sum(len(c.token_ids) for c in candidates)
        if not request.scored_objectives():
            (chosen,) = candidates
            return self._response(request, prepared, chosen.text, chosen.finish_reason, generated, started)
        names, raw, ranking = await self.rank(request, candidates)
        best = ranking.best
        chosen = candidates[best]
        response = self._response(request, prepared, chosen.text, chosen.finish_reason, generated, started)
        return response.model_copy(
            update={
                "scores": {name: float(raw[best, j]) for j, name in enumerate(names)},
                "combined_score": float(ranking.combined[best]),
                "feasible": bool(ranking.feasible[best]),
            }
        )

    async def stream(self, request: AlignRequest, *, safety_config: str | None = None) -> AsyncIterator[StreamEvent]:
        if request.scored_objectives():
            # Ranked strategies know their answer only at the end.
            response = await self.generate(request, safety_config=safety_config)
            yield StreamEvent("delta", text=response.text)
            yield StreamEvent("done", response=response)
            return
        started = time.monotonic()
        prepared = self.prepare(request, safety_config=safety_config)
        pieces: list[str] = []
        generated = 0
        finish_reason = "abort"
        async for delta in self.engine.stream(prepared.token_ids, self.sampling(request)):
            generated += len(delta.token_ids)
            if delta.text:
                pieces.append(delta.text)
                yield StreamEvent("delta", text=delta.text)
            if delta.finish_reason:
                finish_reason = delta.finish_reason
        yield StreamEvent(
            "done", response=self._response(request, prepared, "".join(pieces), finish_reason, generated, started)
        )

    def _response(
        self,
        request: AlignRequest,
        prepared: PreparedPrompt,
        text: str,
        finish_reason: str,
        generated_tokens: int,
        started: float,
    ) -> AlignResponse:
        return AlignResponse(
            id=uuid.uuid4().hex,
            model=self.engine.model_name,
            text=text,
            finish_reason=finish_reason,
            usage=Usage(
                prompt_tokens=len(prepared.token_ids),
                generated_tokens=generated_tokens,
                wall_time_s=round(time.monotonic() - started, 6),
            ),
            prompt=prepared.messages if request.return_prompt else None,
        )
