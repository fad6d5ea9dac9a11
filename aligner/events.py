"""What a search streams: typed events, one class per kind.

A strategy emits `Delta` (sampled text as it is generated) or `Chunk` (beam: text that can no longer
change, with the scores of the beam that committed it) through `SearchContext.emit`; the stream of a
request ends with one `Done` carrying the response. The texts of a stream's `Delta`s and `Chunk`s
concatenate to the response's text.

`kind` and `to_dict()` are the event's wire form (`{"type": kind, ...}`), as the native streaming
routes and `aligner generate --json` print it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from aligner.contract import AlignResponse


@dataclass(frozen=True)
class Delta:
    """Sampled text, streamed as the engine generates it."""

    kind: ClassVar[str] = "delta"
    text: str
    scores: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _text_event(self.kind, self.text, self.scores)


@dataclass(frozen=True)
class Chunk:
    """Beam search: committed text (shared by every kept beam, so final) and the leading beam's scores."""

    kind: ClassVar[str] = "chunk"
    text: str
    scores: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _text_event(self.kind, self.text, self.scores)


@dataclass(frozen=True)
class Done:
    """The end of a stream: the whole response (its text equals the streamed texts joined)."""

    kind: ClassVar[str] = "done"
    response: AlignResponse

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "response": self.response.model_dump(exclude_none=True)}


Event = Delta | Chunk | Done
# What a strategy may emit while it searches; `Done` is the core's, once the response is built.
TextEvent = Delta | Chunk


def _text_event(kind: str, text: str, scores: dict[str, float] | None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": kind, "text": text}
    if scores is not None:
        event["scores"] = scores
    return event
