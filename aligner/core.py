"""The one request path shared by the CLI and every transport, in two phases.

1. `Aligner.start(request, ...)` checks the request's objectives against the catalog and the tenant's
   config, merges the config's thresholds and composes the prompt; it raises `AlignerError` on any of
   that, before the engine is asked for anything.
2. The `Search` it returns runs the strategy: `events()` streams `Delta` / `Chunk` events and ends
   with `Done`, `result()` returns the response.

Transports call `Aligner` and map `AlignerError` codes to their own statuses; they add no alignment logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Literal, get_args

from aligner.contract import (
    DEFAULT_LIMITS,
    AlignRequest,
    AlignResponse,
    CandidateInfo,
    SafetyInfo,
    SearchLimits,
    Usage,
)
from aligner.engine.base import ENGINE_USAGE, EngineUsage
from aligner.engine.vllm import Engine
from aligner.errors import InvalidRequest, PromptTooLong
from aligner.events import Delta, Done, Event, TextEvent
from aligner.objectives import check_objectives
from aligner.prompting import ModelProfile, PreparedPrompt, prepare_prompt, safety_placeholder
from aligner.prompting_guard import operator_marker, server_secret
from aligner.rewards import ObjectiveCatalog
from aligner.rewards.base import CURRENT_PREFERENCES, CURRENT_SAFETY
from aligner.rewards.checks import CURRENT_CHECKS, CheckRun
from aligner.safety.config import SafetyConfig
from aligner.safety.enforce import enforce, passes, with_thresholds
from aligner.safety.fit import DEFAULT_MIN_FREE_SHARE, overflow_error
from aligner.search.admission import admit
from aligner.search.base import Emit, Meter, Scored, SearchContext, SearchResult
from aligner.search.spent import search_usage, spent_usage
from aligner.search.strategies import strategy_for

# The values of `AlignResponse.finish_reason` (a test checks they are the same).
FinishReason = Literal["stop", "length", "abort", "content_filter"]
FINISH_REASONS: tuple[FinishReason, ...] = get_args(FinishReason)


class Search:
    """An accepted request's search (phase 2), returned by `Aligner.start`.

    Nothing runs until `events()` or `result()` is called, so a `Search` that is dropped costs
    nothing; it is consumed once, by one of the two.
    """

    def __init__(
        self,
        run: Callable[[Emit | None], Awaitable[AlignResponse]],
        *,
        holds_back: bool,
        spent: Callable[[], Usage] | None = None,
    ):
        self._run = run
        # Under a config with thresholds nothing is released before the verdict.
        self._holds_back = holds_back
        self._spent = spent
        self._consumed = False

    def spent(self) -> Usage | None:
        """What the search has cost so far, whether it finished, failed or was cancelled: what a request
        that gets no response is metered for (None: nothing to tell)."""
        return None if self._spent is None else self._spent()

    def _consume(self) -> None:
        if self._consumed:
            raise RuntimeError("a Search runs once: call events() or result(), once")
        self._consumed = True

    async def result(self) -> AlignResponse:
        """Run the search and return its response; cancelling the caller cancels the search."""
        self._consume()
        return await self._run(None)

    async def events(self) -> AsyncGenerator[Event, None]:
        """`Delta` / `Chunk` events as the search produces them, then one `Done` with the response.

        Closing or abandoning the iterator cancels the search and its engine requests. Under a
        config with thresholds the answer comes whole at the end (it may be the refusal message).
        """
        self._consume()
        queue: asyncio.Queue[TextEvent] = asyncio.Queue()
        task = asyncio.ensure_future(self._run(None if self._holds_back else queue.put_nowait))
        streamed = ""
        try:
            while not (task.done() and queue.empty()):
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                event = getter.result()
                streamed += event.text
                yield event
            response = task.result()
            # Strategies that only know their answer at the end send it here, whole.
            if response.text.startswith(streamed) and len(response.text) > len(streamed):
                yield Delta(response.text[len(streamed) :], scores=response.scores)
            yield Done(response)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


class Aligner:
    """Serves AlignRequests on one engine and one objective catalog, within the server's `limits`
    (the cost caps that need the catalog and the composed prompt, and `max_request_s`)."""

    def __init__(
        self,
        engine: Engine,
        catalog: ObjectiveCatalog | None = None,
        profile: ModelProfile | None = None,
        *,
        limits: SearchLimits = DEFAULT_LIMITS,
        operator_secret: bytes | None = None,
        safety_min_free_context: float = DEFAULT_MIN_FREE_SHARE,
    ):
        self.engine = engine
        # The secret of the operator sections' markers (None: $ALIGNER_OPERATOR_SECRET, see prompting_guard.py).
        self.operator_secret = server_secret() if operator_secret is None else operator_secret
        self.catalog = catalog or ObjectiveCatalog([])
        self.profile = profile or engine.config.profile
        self.limits = limits
        self.safety_min_free_context = safety_min_free_context  # of max_model_len (aligner/safety/fit.py)

    def prepare(
        self,
        request: AlignRequest,
        *,
        safety: SafetyConfig | None = None,
        direction: dict[str, float] | None = None,
        reveal_safety: bool = True,
        safety_version: int | None = None,
        tenant: str | None = None,
    ) -> PreparedPrompt:
        """The composed prompt; with `reveal_safety=False` its `shown_messages` hold the placeholder
        `[tenant safety config, version N]` where the config's text is (the engine reads the text). The
        operator's section is marked for `tenant`'s config `safety_version`."""
        if direction is not None:
            request = request.model_copy(update={"preference_vector": direction})
        return prepare_prompt(
            request,
            tokenizer=self.engine.tokenizer,
            profile=self.profile,
            max_model_len=self.engine.max_model_len,
            safety_config=None if safety is None else safety.operator_text(),
            safety_shown_as=None if reveal_safety else safety_placeholder(safety_version),
            marker=operator_marker(self.operator_secret, tenant, safety_version),
        )

    async def start(
        self,
        request: AlignRequest,
        *,
        safety: SafetyConfig | None = None,
        safety_version: int | None = None,
        reveal_safety: bool = True,
        limits: SearchLimits | None = None,
        tenant: str | None = None,
    ) -> Search:
        """Phase 1: check, merge and compose, raising `AlignerError` on anything wrong; the search is
        returned unstarted (it runs when its `events()` or `result()` is called).

        `safety`: the tenant's config, placed first in the prompt and, with thresholds, enforced on the
        answer. `safety_version`: its number in the tenant store, named in the response's
        `safety.version`. `reveal_safety=False` (a caller who may not read the config) shows it as a
        placeholder in the response's `prompt`. `limits`: the server's, lowered to the tenant's caps
        (None: the server's own), for what is priced here: the judges' prefills and the resamples.
        `tenant`: whose config it is (its operator marker is the tenant's and the version's).
        """
        started = time.monotonic()
        limits = self.limits if limits is None else limits
        check_objectives(request, self.catalog, safety)
        enforcing = safety is not None and bool(safety.thresholds)
        if enforcing:
            request = with_thresholds(request, safety)

        def render() -> PreparedPrompt:
            prepared = self.prepare(
                request, safety=safety, reveal_safety=reveal_safety, safety_version=safety_version, tenant=tenant
            )
            # Every reward model's template renders the conversation too: one that refuses it is this
            # request's 400 now, not a failure inside a batch merged with other tenants' requests.
            try:
                self.catalog.check_conversation(request.conversation(), request.scored_objectives())
            except InvalidRequest as exc:
                if request.messages is not None or not exc.field.startswith("messages"):
                    raise
                # A prompt is the conversation's one message: name the field the client sent.
                raise InvalidRequest("prompt", exc.reason) from None
            return prepared

        # Rendering and tokenising a long conversation is CPU work: keep it off the event loop.
        try:
            prepared = await asyncio.to_thread(render)
        except PromptTooLong as exc:  # invalid_config when the tenant's config alone leaves too little room
            raise await asyncio.to_thread(overflow_error, self, exc, safety, safety_version) from None
        # The judges' prefills and the resamples priced beside the search: refused here, before any engine work.
        admission = admit(request, self.catalog, safety, prompt_tokens=len(prepared.token_ids), limits=limits)
        budget = request.budget
        meter = Meter(
            started=started,
            max_candidate_tokens=budget.max_candidate_tokens,
            max_reward_calls=budget.max_reward_calls,
            deadline_ms=budget.deadline_ms,
            max_request_s=limits.max_request_s,
            max_resamples=admission.resamples,
        )
        # Every engine request this search causes (the judge's included) is counted here.
        engine_usage = EngineUsage()

        def direction_prompt(direction: dict[str, float]) -> list[int]:
            # marked as the request's own prompt is: the tenant's config version's marker, not no one's
            return self.prepare(
                request, safety=safety, direction=direction, safety_version=safety_version, tenant=tenant
            ).token_ids

        async def run(emit: Emit | None) -> AlignResponse:
            response = await self._search(
                request, safety, prepared, meter, engine_usage, emit, started, direction_prompt
            )
            if safety is not None and safety_version is not None:
                response.safety = (response.safety or SafetyInfo()).model_copy(update={"version": safety_version})
            return response

        return Search(run, holds_back=enforcing, spent=lambda: spent_usage(prepared, meter, engine_usage, started))

    async def generate(
        self,
        request: AlignRequest,
        *,
        safety: SafetyConfig | None = None,
        safety_version: int | None = None,
        reveal_safety: bool = True,
    ) -> AlignResponse:
        """`start(...)` (the same keywords) and its result."""
        search = await self.start(request, safety=safety, safety_version=safety_version, reveal_safety=reveal_safety)
        return await search.result()

    async def stream(
        self,
        request: AlignRequest,
        *,
        safety: SafetyConfig | None = None,
        safety_version: int | None = None,
        reveal_safety: bool = True,
    ) -> AsyncIterator[Event]:
        """`start(...)` (the same keywords) and its events; closing the iterator cancels the search.
        `start` raises at the first step of the iteration.
        """
        search = await self.start(request, safety=safety, safety_version=safety_version, reveal_safety=reveal_safety)
        async with contextlib.aclosing(search.events()) as events:
            async for event in events:
                yield event

    async def _search(
        self,
        request: AlignRequest,
        safety: SafetyConfig | None,
        prepared: PreparedPrompt,
        meter: Meter,
        engine_usage: EngineUsage,
        emit: Emit | None,
        started: float,
        direction_prompt: Callable[[dict[str, float]], list[int]],
    ) -> AlignResponse:
        token = ENGINE_USAGE.set(engine_usage)
        # What `policy_compliance` and `topic_safety` judge against during this search.
        policy = CURRENT_SAFETY.set(safety)
        checks = CURRENT_CHECKS.set(CheckRun(request.checks or ()))  # what the `checks` objective verifies
        preferences = CURRENT_PREFERENCES.set(request.stated_preferences())  # what `preference_following` reads
        try:
            return await self._run_search(
                request, safety, prepared, meter, emit, started, engine_usage, direction_prompt
            )
        finally:
            CURRENT_PREFERENCES.reset(preferences)
            CURRENT_CHECKS.reset(checks)
            CURRENT_SAFETY.reset(policy)
            ENGINE_USAGE.reset(token)

    async def _run_search(
        self,
        request: AlignRequest,
        safety: SafetyConfig | None,
        prepared: PreparedPrompt,
        meter: Meter,
        emit: Emit | None,
        started: float,
        engine_usage: EngineUsage,
        direction_prompt: Callable[[dict[str, float]], list[int]],
    ) -> AlignResponse:
        ctx = SearchContext(
            engine=self.engine,
            catalog=self.catalog,
            request=request,
            prompt_ids=prepared.token_ids,
            meter=meter,
            emit=emit,
            prompt_for_direction=direction_prompt if self.profile.reads_directions else None,
            thresholds=safety.thresholds if safety is not None else {},
        )
        result = await strategy_for(request.search.strategy).run(ctx)
        verdict, shown = None, result.candidates
        if safety is not None and safety.thresholds:
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
        run = CURRENT_CHECKS.get() or CheckRun(request.checks or ())  # the verdicts found while scoring
        return AlignResponse(
            id=uuid.uuid4().hex,
            model=self.engine.model_name,
            text=chosen.text,
            # A strategy's finish reason outside the contract's (vLLM's own) reads as `length`.
            finish_reason=next((r for r in FINISH_REASONS if r == chosen.finish_reason), "length"),
            usage=search_usage(
                prepared,
                meter,
                engine_usage,
                started,
                prompt_tokens=len(prepared.token_ids),
                completion_tokens=len(chosen.token_ids),
                candidates=len(result.candidates),
            ),
            scores=chosen.scores,
            combined_score=chosen.combined,
            feasible=chosen.feasible,
            checks=run.passed(chosen.text) if request.checks else None,
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
                        checks=run.passed(c.text) if request.checks else None,
                    )
                    for c in shown
                ]
                if request.return_candidates
                else None
            ),
            prompt=prepared.shown_messages if request.return_prompt else None,
        )
