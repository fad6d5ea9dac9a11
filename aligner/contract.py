"""Request and response types: the public JSON contract of the CLI, server and clients."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from aligner.checks import MAX_CHECKS, Check, validate_checks
from aligner.errors import InvalidRequest
from aligner.limits import DEFAULT_LIMITS, Budget, SearchLimits
from aligner.search import registry as search_registry
from aligner.search.params import sample
from aligner.search.params.base import SearchParams
from aligner.search.params.cost import RequestShape
from aligner.usage import Usage

OBJECTIVE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
MAX_STOP_SEQUENCES = 8
MAX_STOP_CHARS = 128
MAX_SEED = 2**63 - 1
MAX_MESSAGES = 1024
MAX_OBJECTIVES = 64
SURROGATE = re.compile("[\ud800-\udfff]")


class _Strict(BaseModel):
    # Strict types: JSON's "5" or true is not an integer; nothing is coerced silently.
    model_config = ConfigDict(extra="forbid", strict=True)


def check_text(field: str, text: str) -> None:
    """Refuse text JSON can carry but no tokenizer can encode: unpaired UTF-16 surrogates."""
    match = SURROGATE.search(text)
    if match:
        raise InvalidRequest(
            field,
            f"contains an unpaired UTF-16 surrogate (U+{ord(match.group()):04X}) at index {match.start()}; "
            "send valid Unicode",
        )


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"] = Field(description="Who wrote the message.")
    content: str = Field(description="The message text.")


# The flat `search` object of the wire: `strategy` and every registered strategy's parameters.
SearchSpec = search_registry.wire_model()


class Constraint(_Strict):
    min: float = Field(description="Lowest acceptable raw score; candidates below it rank after every feasible one.")


# The objective a ranked strategy ranks by when the request states preferences in words and no vector.
PREFERENCE_OBJECTIVE = "preference_following"
# The objective of the request's own `checks` (the share passed).
CHECKS_OBJECTIVE = "checks"


class AlignRequest(_Strict):
    """One generation request, steered by preferences, a direction and a search strategy."""

    messages: list[ChatMessage] | None = Field(
        None,
        max_length=MAX_MESSAGES,
        description="The conversation in OpenAI chat format. Exactly one of `messages` and `prompt`.",
    )
    prompt: str | None = Field(
        None, description="Shorthand for a single user message. Exactly one of `messages` and `prompt`."
    )
    preferences: str | None = Field(
        None,
        max_length=4000,
        description="Free-text preferences placed in the system message (Janus); without a preference_vector, a "
        "ranked strategy ranks candidates by how well they follow them (the `preference_following` judge).",
    )
    preference_vector: dict[str, float] | None = Field(
        None,
        max_length=MAX_OBJECTIVES,
        description="Direction over reward objectives (objective -> weight); normalised to a unit vector (DPA).",
    )
    combination: Literal["linear", "and"] = Field(
        "linear",
        description="How objectives combine: `linear` (v·r) or `and` (Σ|v|·log σ(r − ref)); see preference.py.",
    )
    references: dict[str, float] | None = Field(
        None,
        max_length=MAX_OBJECTIVES,
        description="`and` combination: unit-scale reference per objective of the direction or the constraints "
        "(default: the objective's own).",
    )
    constraints: dict[str, Constraint] | None = Field(
        None,
        max_length=MAX_OBJECTIVES,
        description='Hard constraints per objective, e.g. {"harmlessness": {"min": 0.9}}.',
    )
    checks: list[Check] | None = Field(
        None,
        max_length=MAX_CHECKS,
        description="Checkable instructions (IFEval instruction ids with IFEval's parameters), each a hard "
        'constraint on every candidate, e.g. [{"id": "length_constraints:number_words", "relation": "less than", '
        '"num_words": 60}]; scored as the `checks` objective, and reported per candidate.',
    )
    search: Annotated[SearchParams, search_registry.SearchField()] = Field(
        default_factory=sample.Params, description="Search strategy and its parameters."
    )
    budget: Budget = Field(default_factory=Budget, description="Compute limits of the search.")
    return_candidates: bool = Field(False, description="Return every final candidate with its scores.")
    max_tokens: int = Field(256, ge=1, description="Most tokens to generate for the response.")
    temperature: float = Field(
        0.7,
        ge=0.0,
        le=2.0,
        description="Sampling temperature; 0 is greedy (only `sample`: ranked candidates would be identical).",
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Seed for reproducible sampling.")
    stop: list[str] = Field(
        default_factory=list,
        max_length=MAX_STOP_SEQUENCES,
        description=f"Strings that end generation (at most {MAX_STOP_SEQUENCES}, each at most {MAX_STOP_CHARS} "
        "characters); the returned text stops before the first one, streamed or not.",
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
        for i, stop in enumerate(value):
            if not stop:
                raise InvalidRequest(f"stop[{i}]", "must be non-empty")
            if len(stop) > MAX_STOP_CHARS:
                raise InvalidRequest(f"stop[{i}]", f"is {len(stop)} characters; the maximum is {MAX_STOP_CHARS}")
            check_text(f"stop[{i}]", stop)
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
        # Scale by the largest weight first: squares of 1e200 overflow and of 1e-200 underflow.
        largest = max(abs(w) for w in value.values())
        if largest == 0.0:
            raise ValueError("all weights are zero; a direction needs at least one non-zero weight")
        scaled = {name: w / largest for name, w in value.items()}
        norm = math.hypot(*scaled.values())
        return {name: w / norm for name, w in scaled.items()}

    @model_validator(mode="after")
    def _one_conversation(self, info: ValidationInfo) -> AlignRequest:
        limits = (info.context or {}).get("limits", DEFAULT_LIMITS)
        if "max_tokens" not in self.model_fields_set and self.max_tokens > limits.max_tokens:
            # A default above the configured maximum becomes it; only an explicit value is refused. Set
            # in __dict__ so the field stays unset (as the client sent it) for anything that asks.
            self.__dict__["max_tokens"] = limits.max_tokens
        if self.max_tokens > limits.max_tokens:
            raise InvalidRequest(
                "max_tokens", f"is {self.max_tokens} but the configured maximum is {limits.max_tokens}"
            )
        self._check_conversation(limits)
        validate_checks(self.checks or [])
        self._check_search(limits)
        self._check_objectives()
        return self

    def _check_conversation(self, limits: SearchLimits) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise InvalidRequest("messages", "give exactly one of `messages` and `prompt`")
        texts = [("preferences", self.preferences or "")]
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
                if message.role == "user" and not message.content.strip():
                    raise InvalidRequest(
                        f"messages[{i}].content", "a user message must not be empty or only whitespace"
                    )
                texts.append((f"messages[{i}].content", message.content))
            if not any(m.role == "user" for m in self.messages):
                raise InvalidRequest("messages", "must contain at least one user message")
        elif self.prompt is not None:
            if not self.prompt.strip():
                raise InvalidRequest("prompt", "must not be empty or only whitespace")
            texts.append(("prompt", self.prompt))
        # Sizes before content: nothing below may scan a text longer than the limit.
        total = sum(len(text) for _, text in texts)
        if total > limits.max_input_chars:
            field = "prompt" if self.prompt is not None else "messages"
            raise InvalidRequest(
                field, f"the request's text has {total} characters; the configured maximum is {limits.max_input_chars}"
            )
        for field, text in texts:
            check_text(field, text)

    def _check_search(self, limits: SearchLimits) -> None:
        self.search.check_request(
            shape=self.shape(),
            direction=self.direction() is not None or bool(self.checks),
            temperature=self.temperature,
            budget=self.budget,
            limits=limits,
        )

    def shape(self) -> RequestShape:
        """What the search's cost depends on besides its own parameters (`SearchParams.cost`)."""
        return RequestShape(
            max_tokens=self.max_tokens,
            objectives=len(self.direction() or {}),
            scored=len(self.scored_objectives()),
            checks=len(self.checks or ()),
        )

    def _check_objectives(self) -> None:
        scored = set(self.scored_objectives())
        if self.references is not None and self.combination != "and":
            raise InvalidRequest("references", "apply only to combination 'and'")
        for name, value in (self.references or {}).items():
            if name not in scored:
                raise InvalidRequest(
                    f"references.{name}", "names no objective of the preference_vector or the constraints"
                )
            if not math.isfinite(value):
                raise InvalidRequest(f"references.{name}", "must be a finite number")
        for name, constraint in (self.constraints or {}).items():
            if name == "checks":
                raise InvalidRequest(
                    "constraints.checks",
                    "every one of the request's `checks` must pass; list the ones wanted in `checks`",
                )
            if not OBJECTIVE_NAME.match(name):
                raise InvalidRequest(f"constraints.{name}", f"objective names must match {OBJECTIVE_NAME.pattern}")
            if not math.isfinite(constraint.min):
                raise InvalidRequest(f"constraints.{name}.min", "must be a finite number")

    def scored_objectives(self) -> list[str]:
        """Objectives to score: the direction's, then the constraints', then `checks` if it has checks, each once."""
        checks = [CHECKS_OBJECTIVE] if self.checks else []
        return list(dict.fromkeys([*(self.direction() or {}), *(self.constraints or {}), *checks]))

    def stated_preferences(self) -> str:
        """The request's own words on how to answer: `preferences`, then the user's system messages."""
        parts = [self.preferences or "", *(m.content for m in self.messages or () if m.role == "system")]
        return "\n\n".join(p.strip() for p in parts if p.strip())

    def direction(self) -> dict[str, float] | None:
        """What the search ranks by: the preference_vector; without one, a ranked strategy given `preferences`
        ranks by how well candidates follow them (`implied_direction`)."""
        if self.preference_vector is not None:
            return self.preference_vector
        return self.implied_direction()

    def implied_direction(self) -> dict[str, float] | None:
        """{preference_following: 1} for a ranked strategy with `preferences` (a system message alone does not
        imply it: many clients send a stock one); None otherwise."""
        if self.search.ranked and (self.preferences or "").strip():
            return {PREFERENCE_OBJECTIVE: 1.0}
        return None

    def conversation(self) -> list[ChatMessage]:
        """The user's conversation, with `prompt` expanded to one user message."""
        if self.messages is not None:
            return list(self.messages)
        return [ChatMessage(role="user", content=self.prompt or "")]

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
    elif error["type"] == "string_unicode":
        message = "contains an unpaired UTF-16 surrogate; send valid Unicode"
    return InvalidRequest(field, message)


def _field_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


class CandidateInfo(_Strict):
    text: str
    tokens: int = Field(description="Tokens in this candidate.")
    finish_reason: str
    scores: dict[str, float] | None = None
    combined_score: float | None = None
    feasible: bool | None = None
    checks: list[bool] | None = Field(None, description="Whether it passes each of the request's `checks`, in order.")


class SafetyInfo(_Strict):
    version: int | None = Field(
        None, description="Version of the tenant's safety config the request was served under (null: not stored)."
    )
    verdict: Literal["passed", "refused", "resampled", "flagged"] | None = Field(
        None,
        description="Enforcement of the config's thresholds: `passed` (the chosen response met them), `resampled` "
        "(it did not; a resampled candidate did), `refused` (none did: the refusal message is returned), "
        "`flagged` (none did: the best is returned, flagged). Null when the config has no thresholds.",
    )
    scores: dict[str, float] | None = Field(
        None,
        description="Raw scores of the returned response on the config's threshold objectives (null when refused).",
    )


class AlignResponse(_Strict):
    id: str = Field(description="Request id.")
    model: str = Field(description="Policy model that generated the response.")
    text: str = Field(description="The chosen response.")
    finish_reason: Literal["stop", "length", "abort", "content_filter"] = Field(
        description="Why generation of the response ended; `content_filter`: the tenant's safety config refused it."
    )
    usage: Usage
    scores: dict[str, float] | None = Field(
        None, description="Raw score of the chosen response on each objective of the direction and constraints."
    )
    combined_score: float | None = Field(None, description="The chosen response's combined score under the direction.")
    feasible: bool | None = Field(
        None, description="Whether the chosen response meets every constraint (and passes every check)."
    )
    checks: list[bool] | None = Field(
        None, description="Whether the returned text passes each of the request's `checks`, in order."
    )
    threshold_met: bool | None = Field(None, description="rejection: whether a candidate reached the threshold.")
    candidates: list[CandidateInfo] | None = Field(
        None, description="Every final candidate, best first (when `return_candidates` is true)."
    )
    prompt: list[ChatMessage] | None = Field(
        None,
        description="The composed conversation sent to the model (when `return_prompt` is true); for a tenant key "
        "the tenant's safety config text appears as a placeholder naming its version.",
    )
    safety: SafetyInfo | None = Field(
        None, description="The tenant's safety config the request was served under (when the tenant has one)."
    )
