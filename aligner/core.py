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

from aligner.engine import Engine, SamplingSpec
from aligner.prompting import PreparedPrompt, prepare_prompt
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

    def __init__(self, engine: Engine):
        self.engine = engine

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

    async def generate(self, request: AlignRequest, *, safety_config: str | None = None) -> AlignResponse:
        started = time.monotonic()
        prepared = self.prepare(request, safety_config=safety_config)
        (candidate,) = await self.engine.generate(prepared.token_ids, self.sampling(request), n=1)
        return self._response(
            request, prepared, candidate.text, candidate.finish_reason, len(candidate.token_ids), started
        )

    async def stream(self, request: AlignRequest, *, safety_config: str | None = None) -> AsyncIterator[StreamEvent]:
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
