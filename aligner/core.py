"""The one request path shared by the CLI and every transport.

request -> compose prompt -> strategy -> response. Transports call `Aligner`
and map `AlignerError` codes to their own statuses; they add no alignment logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aligner.engine.vllm import ENGINE_USAGE, Engine, EngineUsage
from aligner.prompting import ModelProfile, PreparedPrompt, prepare_prompt
from aligner.rewards import ObjectiveCatalog
from aligner.rewards.base import CURRENT_SAFETY
from aligner.rewards.builtin import TOPIC_OBJECTIVE
from aligner.rewards.judge import POLICY_OBJECTIVE
from aligner.search import STRATEGIES, Meter, Scored, SearchContext, SearchResult
from aligner.errors import ConfigError, InvalidRequest
from aligner.safety.config import SafetyConfig
from aligner.safety.enforce import enforce, passes, with_thresholds
from aligner.contract import AlignRequest, AlignResponse, CandidateInfo, Usage

FINISH_REASONS = ("stop", "length", "abort", "content_filter")
# Objectives that read the tenant's safety config.
NEEDS_SAFETY = (POLICY_OBJECTIVE, TOPIC_OBJECTIVE)


@dataclass(frozen=True)
class StreamEvent:
    """`delta` (sampled text), `chunk` (beam: committed text and its scores), then `done` with the response."""

    kind: str
    text: str = ""
    scores: dict[str, float] | None = None
    response: AlignResponse | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "done":
            return {"type": "done", "response": self.response.model_dump(exclude_none=True)}
        event = {"type": self.kind, "text": self.text}
        if self.scores is not None:
            event["scores"] = self.scores
        return event


class Aligner:
    """Serves AlignRequests on one engine and one objective catalog."""

    def __init__(self, engine: Engine, catalog: ObjectiveCatalog | None = None, profile: ModelProfile | None = None):
        self.engine = engine
        self.catalog = catalog or ObjectiveCatalog([])
        self.profile = profile or engine.config.profile

    @staticmethod
    def check_objectives_of(request: AlignRequest, catalog: ObjectiveCatalog, safety: SafetyConfig | None = None) -> None:
        """Every objective a request (and its tenant's config) names must be served; the error lists the
        valid ones. The objectives that read the tenant's config need one."""
        catalog.check_names(list(request.preference_vector or {}), "preference_vector")
        catalog.check_names(list(request.constraints or {}), "constraints")
        catalog.check_names(list(request.references or {}), "references")
        for name in NEEDS_SAFETY if safety is None else ():
            if name in request.scored_objectives():
                field = "preference_vector" if name in (request.preference_vector or {}) else "constraints"
                raise InvalidRequest(field, f"{name} judges against the tenant's safety config, and this request "
                                     "is served under none")
        if safety is not None:
            try:
                catalog.check_names(list(safety.thresholds), "safety.thresholds")
            except InvalidRequest as exc:  # the operator's config, not the request, is wrong
                raise ConfigError(f"the tenant's safety config: {exc.message}") from None

    def prepare(
        self, request: AlignRequest, *, safety: SafetyConfig | None = None, direction: dict[str, float] | None = None
    ) -> PreparedPrompt:
        if direction is not None:
            request = request.model_copy(update={"preference_vector": direction})
        return prepare_prompt(
            request,
            tokenizer=self.engine.tokenizer,
            profile=self.profile,
            max_model_len=self.engine.max_model_len,
            safety_config=None if safety is None else safety.text,
        )

    async def generate(self, request: AlignRequest, *, safety: SafetyConfig | None = None) -> AlignResponse:
        """`safety`: the tenant's config, placed first in the prompt and, with thresholds, enforced on the answer."""
        return await self._search(request, safety, emit=None)

    async def stream(
        self, request: AlignRequest, *, safety: SafetyConfig | None = None, announce_start: bool = False
    ) -> AsyncIterator[StreamEvent]:
        """Events as the search produces them; closing the iterator cancels the search and its engine requests.

        With `announce_start`, a `start` event comes first, once the request is validated against the
        catalog and its prompt is composed and fits: a server can then answer errors with a status
        before it commits to a stream. Under a config with thresholds nothing is released before the
        verdict: the answer comes whole at the end (it may be the refusal message).
        """
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        task = asyncio.ensure_future(self._search(request, safety, emit=queue.put_nowait))
        streamed = ""
        try:
            while not (task.done() and queue.empty()):
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                event = getter.result()
                if event["type"] == "start":
                    if announce_start:
                        yield StreamEvent("start")
                    continue
                streamed += event["text"]
                yield StreamEvent(event["type"], text=event["text"], scores=event.get("scores"))
            response = task.result()
            # Strategies that only know their answer at the end send it here, whole.
            if response.text.startswith(streamed) and len(response.text) > len(streamed):
                yield StreamEvent("delta", text=response.text[len(streamed) :], scores=response.scores)
            yield StreamEvent("done", response=response)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _search(self, request: AlignRequest, safety: SafetyConfig | None, emit) -> AlignResponse:
        started = time.monotonic()
        # Every engine request this search causes (the judge's included) is counted here.
        engine_usage = EngineUsage()
        token = ENGINE_USAGE.set(engine_usage)
        # What `policy_compliance` and `topic_safety` judge against during this search.
        policy = CURRENT_SAFETY.set(safety)
        try:
            return await self._run_search(request, safety, emit, started, engine_usage)
        finally:
            CURRENT_SAFETY.reset(policy)
            ENGINE_USAGE.reset(token)

    async def _run_search(
        self, request: AlignRequest, safety: SafetyConfig | None, emit, started: float, engine_usage: EngineUsage
    ) -> AlignResponse:
        self.check_objectives_of(request, self.catalog, safety)
        enforcing = safety is not None and bool(safety.thresholds)
        if enforcing:
            request = with_thresholds(request, safety)
        # Rendering and tokenising a long conversation is CPU work: keep it off the event loop.
        prepared = await asyncio.to_thread(self.prepare, request, safety=safety)
        if emit is not None:
            emit({"type": "start", "text": ""})
            if enforcing:
                emit = None  # hold every text back until the verdict
        budget = request.budget
        meter = Meter(
            started=started,
            max_candidate_tokens=budget.max_candidate_tokens,
            max_reward_calls=budget.max_reward_calls,
            deadline_ms=budget.deadline_ms,
        )
        reads_directions = self.profile.reads_directions
        ctx = SearchContext(
            engine=self.engine,
            catalog=self.catalog,
            request=request,
            prompt_ids=prepared.token_ids,
            meter=meter,
            emit=emit,
            prompt_for_direction=(
                (lambda d: self.prepare(request, safety=safety, direction=d).token_ids)
                if reads_directions
                else None
            ),
        )
        result = await STRATEGIES[request.search.strategy].run(ctx)
        verdict, shown = None, result.candidates
        if enforcing:
            result, verdict = await enforce(ctx, safety, result)
            # `return_candidates` must not reveal text the config refuses (`flag` returns it anyway).
            shown = [c for c in result.candidates if safety.action == "flag" or passes(safety, c.scores)]
        response = self._response(request, prepared, result, meter, engine_usage, started, shown)
        response.safety = verdict
        return response

    def _response(
        self,
        request: AlignRequest,
        prepared: PreparedPrompt,
        result: SearchResult,
        meter: Meter,
        engine_usage: EngineUsage,
        started: float,
        shown: list[Scored],
    ) -> AlignResponse:
        chosen = result.chosen
        return AlignResponse(
            id=uuid.uuid4().hex,
            model=self.engine.model_name,
            text=chosen.text,
            finish_reason=chosen.finish_reason if chosen.finish_reason in FINISH_REASONS else "length",
            usage=Usage(
                prompt_tokens=len(prepared.token_ids),
                completion_tokens=len(chosen.token_ids),
                candidate_tokens=meter.candidate_tokens,
                generated_tokens=engine_usage.generated_tokens,
                prefill_tokens=engine_usage.prefill_tokens,
                candidates=len(result.candidates),
                wall_time_s=round(time.monotonic() - started, 6),
                engine_requests=engine_usage.requests,
                reward_calls=meter.reward_calls,
                rounds=meter.rounds,
                stopped_by=meter.stopped_by,
                stage_seconds={k: round(v, 6) for k, v in meter.stage_seconds.items()},
            ),
            scores=chosen.scores,
            combined_score=chosen.combined,
            feasible=chosen.feasible,
            threshold_met=result.threshold_met,
            candidates=(
                [
                    CandidateInfo(
                        text=c.text,
                        tokens=len(c.token_ids),
                        finish_reason=c.finish_reason,
                        scores=c.scores,
                        combined_score=c.combined,
                        feasible=c.feasible,
                    )
                    for c in shown
                ]
                if request.return_candidates
                else None
            ),
            prompt=prepared.messages if request.return_prompt else None,
        )
