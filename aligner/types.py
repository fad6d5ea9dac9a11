"""Request and response types: the public JSON contract of the CLI, server and clients."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from aligner.errors import InvalidRequest

STRATEGIES = ("sample", "best_of_n", "rejection", "beam", "rps")
RANKED_STRATEGIES = ("best_of_n", "rejection", "beam", "rps")

OBJECTIVE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
MAX_STOP_SEQUENCES = 8
MAX_SEED = 2**63 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"] = Field(description="Who wrote the message.")
    content: str = Field(description="The message text.")


class SearchLimits(BaseModel):
    """Server-side maximums for search parameters (a request above one is rejected, naming it)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(64, ge=1, description="Most candidates per direction (best_of_n, rps).")
    batch: int = Field(64, ge=1, description="Most candidates per rejection round.")
    max_rounds: int = Field(64, ge=1, description="Most rejection rounds.")
    beam_width: int = Field(16, ge=1, description="Widest beam.")
    expansions: int = Field(16, ge=1, description="Most continuations per beam and step.")
    chunk_tokens: int = Field(512, ge=1, description="Longest beam chunk in tokens.")
    neighbors: int = Field(16, ge=1, description="Most neighbouring directions for rps.")


DEFAULT_LIMITS = SearchLimits()


class SearchSpec(_Strict):
    strategy: str = Field("sample", description=f"Search strategy; one of: {', '.join(STRATEGIES)}.")
    n: int = Field(4, ge=1, description="best_of_n: candidates in one engine request; rps: candidates per direction.")
    batch: int = Field(4, ge=1, description="rejection: candidates sampled per round.")
    threshold: float | None = Field(None, description="rejection: stop once a feasible candidate's combined score reaches it.")
    max_rounds: int = Field(8, ge=1, description="rejection: most rounds when no budget ends the search first.")
    beam_width: int = Field(2, ge=1, description="beam: partial responses kept per step.")
    expansions: int = Field(4, ge=1, description="beam: continuations asked per kept beam and step.")
    chunk_tokens: int = Field(32, ge=1, description="beam: tokens per continuation chunk.")
    prune: float = Field(0.0, ge=0.0, lt=1.0, description="beam: fraction of the width dropped after each step.")
    neighbors: int = Field(4, ge=1, description="rps: neighbouring directions sampled.")
    spread: float = Field(15.0, gt=0.0, le=90.0, description="rps: angle in degrees between the direction and its neighbours.")

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; allowed: {', '.join(STRATEGIES)}")
        return value

    @model_validator(mode="after")
    def _within_limits(self, info: ValidationInfo) -> SearchSpec:
        limits = (info.context or {}).get("limits", DEFAULT_LIMITS)
        for name, maximum in limits.model_dump().items():
            value = getattr(self, name)
            if value > maximum:
                raise InvalidRequest(f"search.{name}", f"is {value} but the configured maximum is {maximum}")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise InvalidRequest("search.threshold", "must be a finite number")
        return self


class Budget(_Strict):
    max_candidate_tokens: int | None = Field(None, ge=1, description="Most tokens generated over all candidates.")
    max_reward_calls: int | None = Field(None, ge=1, description="Most candidates (or partial candidates) scored.")
    deadline_ms: int | None = Field(None, ge=1, description="Wall-time limit of the search in milliseconds.")


class Constraint(_Strict):
    min: float = Field(description="Lowest acceptable raw score; candidates below it rank after every feasible one.")


class AlignRequest(_Strict):
    """One generation request, steered by preferences, a direction and a search strategy."""

    messages: list[ChatMessage] | None = Field(
        None, description="The conversation in OpenAI chat format. Exactly one of `messages` and `prompt`."
    )
    prompt: str | None = Field(
        None, description="Shorthand for a single user message. Exactly one of `messages` and `prompt`."
    )
    preferences: str | None = Field(
        None, max_length=4000, description="Free-text preferences placed in the system message (Janus)."
    )
    preference_vector: dict[str, float] | None = Field(
        None,
        description="Direction over reward objectives (objective -> weight); normalised to a unit vector (DPA).",
    )
    combination: Literal["linear", "and"] = Field(
        "linear", description="How objectives combine: `linear` (v·r) or `and` (Σ|v|·log σ(r − ref)); see preference.py."
    )
    references: dict[str, float] | None = Field(
        None, description="`and` combination: unit-scale reference per objective (default: the objective's own)."
    )
    constraints: dict[str, Constraint] | None = Field(
        None, description="Hard constraints per objective, e.g. {\"harmlessness\": {\"min\": 0.9}}."
    )
    search: SearchSpec = Field(default_factory=SearchSpec, description="Search strategy and its parameters.")
    budget: Budget = Field(default_factory=Budget, description="Compute limits of the search.")
    return_candidates: bool = Field(False, description="Return every final candidate with its scores.")
    max_tokens: int = Field(256, ge=1, description="Most tokens to generate for the response.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Seed for reproducible sampling.")
    stop: list[str] = Field(
        default_factory=list, max_length=MAX_STOP_SEQUENCES, description="Strings that end generation."
    )
    stream: bool = Field(False, description="Stream the response as it is generated.")
    return_prompt: bool = Field(False, description="Return the composed conversation as `prompt`.")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else ([] if value is None else value)

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("stop strings must be non-empty")
        return value

    @field_validator("preference_vector")
    @classmethod
    def _unit_vector(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must name at least one objective")
        for name, weight in value.items():
            if not OBJECTIVE_NAME.match(name):
                raise ValueError(f"objective name {name!r} must match {OBJECTIVE_NAME.pattern}")
            if not math.isfinite(weight):
                raise ValueError(f"weight of {name!r} is {weight}; weights must be finite numbers")
        norm = math.sqrt(sum(w * w for w in value.values()))
        if norm == 0.0:
            raise ValueError("all weights are zero; a direction needs at least one non-zero weight")
        return {name: w / norm for name, w in value.items()}

    @model_validator(mode="after")
    def _one_conversation(self) -> AlignRequest:
        if (self.messages is None) == (self.prompt is None):
            raise InvalidRequest("messages", "give exactly one of `messages` and `prompt`")
        if self.messages is not None:
            if not self.messages:
                raise InvalidRequest("messages", "must not be empty")
            seen_other = False
            for i, message in enumerate(self.messages):
                if message.role != "system":
                    seen_other = True
                elif seen_other:
                    raise InvalidRequest(
                        f"messages[{i}].role", "system messages are allowed only at the start of the conversation"
                    )
            if not any(m.role == "user" for m in self.messages):
                raise InvalidRequest("messages", "must contain at least one user message")
        elif not self.prompt.strip():
            raise InvalidRequest("prompt", "must not be empty")
        if self.search.strategy in RANKED_STRATEGIES and self.preference_vector is None:
            raise InvalidRequest(
                "preference_vector", f"{self.search.strategy} ranks candidates by a direction; give a preference_vector"
            )
        if self.search.strategy == "rejection" and self.search.threshold is None:
            raise InvalidRequest("search.threshold", "rejection sampling needs a threshold on the combined score")
        if self.search.threshold is not None and self.preference_vector is None:
            raise InvalidRequest("preference_vector", "a threshold applies to the combined score; give a preference_vector")
        for name, value in (self.references or {}).items():
            if not math.isfinite(value):
                raise InvalidRequest(f"references.{name}", "must be a finite number")
        for name, constraint in (self.constraints or {}).items():
            if not math.isfinite(constraint.min):
                raise InvalidRequest(f"constraints.{name}.min", "must be a finite number")
        return self

    def scored_objectives(self) -> list[str]:
        """Objectives to score: the direction's, then the constraints', each once."""
        return list(dict.fromkeys([*(self.preference_vector or {}), *(self.constraints or {})]))

    def conversation(self) -> list[ChatMessage]:
        """The user's conversation, with `prompt` expanded to one user message."""
        if self.messages is not None:
            return list(self.messages)
        return [ChatMessage(role="user", content=self.prompt)]

    @classmethod
    def parse(cls, data: Any, limits: SearchLimits = DEFAULT_LIMITS) -> AlignRequest:
        """Validate `data` against `limits`; raise InvalidRequest naming the first offending field."""
        return parse_model(cls, data, context={"limits": limits})


def parse_model(model: type[BaseModel], data: Any, context: dict | None = None) -> Any:
    """`model.model_validate(data)` with pydantic errors turned into InvalidRequest."""
    try:
        return model.model_validate(data, context=context)
    except InvalidRequest:
        raise
    except ValidationError as exc:
        raise invalid_request_from(exc) from None


def invalid_request_from(exc: ValidationError) -> InvalidRequest:
    error = exc.errors()[0]
    field = _field_path(error["loc"])
    ctx_error = (error.get("ctx") or {}).get("error")
    if isinstance(ctx_error, InvalidRequest):
        return ctx_error
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    return InvalidRequest(field, message)


def _field_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


class Usage(_Strict):
    prompt_tokens: int = Field(description="Tokens in the composed prompt.")
    generated_tokens: int = Field(description="Tokens generated, over all candidates.")
    wall_time_s: float = Field(description="Wall time of the request inside the aligner, in seconds.")
    engine_requests: int = Field(0, description="Requests sent to the engine.")
    reward_calls: int = Field(0, description="Candidates (or partial candidates) scored.")
    rounds: int = Field(0, description="Search rounds (rejection) or steps (beam).")
    stopped_by: str | None = Field(None, description="The budget limit that cut the search short, if any.")
    stage_seconds: dict[str, float] = Field(default_factory=dict, description="Wall time per stage: generate, score, select.")


class CandidateInfo(_Strict):
    text: str
    tokens: int = Field(description="Tokens in this candidate.")
    finish_reason: str
    scores: dict[str, float] | None = None
    combined_score: float | None = None
    feasible: bool | None = None


class AlignResponse(_Strict):
    id: str = Field(description="Request id.")
    model: str = Field(description="Policy model that generated the response.")
    text: str = Field(description="The chosen response.")
    finish_reason: Literal["stop", "length", "abort"] = Field(description="Why generation of the response ended.")
    usage: Usage
    scores: dict[str, float] | None = Field(
        None, description="Raw score of the chosen response on each objective of the direction and constraints."
    )
    combined_score: float | None = Field(None, description="The chosen response's combined score under the direction.")
    feasible: bool | None = Field(None, description="Whether the chosen response meets every constraint.")
    threshold_met: bool | None = Field(None, description="rejection: whether a candidate reached the threshold.")
    candidates: list[CandidateInfo] | None = Field(
        None, description="Every final candidate, best first (when `return_candidates` is true)."
    )
    prompt: list[ChatMessage] | None = Field(
        None, description="The composed conversation sent to the model (when `return_prompt` is true)."
    )
