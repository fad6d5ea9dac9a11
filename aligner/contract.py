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
MAX_STOP_CHARS = 128
MAX_SEED = 2**63 - 1
MAX_MESSAGES = 1024
MAX_OBJECTIVES = 64
MAX_DEADLINE_MS = 3_600_000
SURROGATE = re.compile("[\ud800-\udfff]")

# Search parameters each strategy reads; setting another one is refused (it would do nothing).
STRATEGY_FIELDS = {
    "sample": (),
    "best_of_n": ("n",),
    "rejection": ("batch", "threshold", "max_rounds"),
    "beam": ("beam_width", "expansions", "chunk_tokens", "prune"),
    "rps": ("n", "neighbors", "spread"),
}


class _Strict(BaseModel):
    # Strict types: JSON's "5" or true is not an integer; nothing is coerced silently.
    model_config = ConfigDict(extra="forbid", strict=True)


def check_text(field: str, text: str) -> None:
    """Refuse text JSON can carry but no tokenizer can encode: unpaired UTF-16 surrogates."""
    match = SURROGATE.search(text)
    if match:
        raise InvalidRequest(
            field, f"contains an unpaired UTF-16 surrogate (U+{ord(match.group()):04X}) at index {match.start()}; "
            "send valid Unicode"
        )


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
    max_tokens: int = Field(4096, ge=1, description="Most tokens one request may ask to generate (`max_tokens`).")
    max_input_chars: int = Field(
        200_000,
        ge=1,
        description="Most characters in a request's text (message contents or prompt, plus preferences), checked "
        "before anything is tokenized.",
    )
    max_candidates: int = Field(
        256,
        ge=1,
        description="Most candidates one request's search may generate (rejection: over all rounds; beam: the "
        "continuations of one step).",
    )
    max_search_tokens: int = Field(
        262_144,
        ge=1,
        description="Most tokens one request's search may generate over all candidates: its worst case "
        "(candidates × max_tokens), or the request's budget.max_candidate_tokens when that is lower.",
    )


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
            if name not in SearchSpec.model_fields:
                continue
            value = getattr(self, name)
            if value > maximum and name not in self.model_fields_set:
                # A default above the server's maximum becomes the maximum; only explicit values are refused.
                object.__setattr__(self, name, maximum)
            elif value > maximum:
                raise InvalidRequest(f"search.{name}", f"is {value} but the configured maximum is {maximum}")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise InvalidRequest("search.threshold", "must be a finite number")
        applies = STRATEGY_FIELDS[self.strategy]
        for name in sorted(self.model_fields_set - {"strategy", *applies}):
            users = ", ".join(s for s, fields in STRATEGY_FIELDS.items() if name in fields)
            raise InvalidRequest(
                f"search.{name}", f"does not apply to strategy {self.strategy!r} (it is read by: {users})"
            )
        return self

    def worst_case(self, max_tokens: int, objectives: int) -> tuple[int, int]:
        """(candidates, generated tokens) this search may cost at most, before any budget."""
        if self.strategy == "sample":
            return 1, max_tokens
        if self.strategy == "best_of_n":
            return self.n, self.n * max_tokens
        if self.strategy == "rejection":
            count = self.batch * self.max_rounds
            return count, count * max_tokens
        if self.strategy == "rps":
            count = self.n * (self.neighbors if objectives > 1 else 1)
            return count, count * max_tokens
        # beam: every step asks `expansions` children of each kept beam, `chunk_tokens` each; the
        # candidates alive at once are one step's children.
        per_step = self.beam_width * self.expansions
        return per_step, per_step * max_tokens


class Budget(_Strict):
    max_candidate_tokens: int | None = Field(
        None, ge=1, le=2**31 - 1, description="Most tokens generated over all candidates."
    )
    max_reward_calls: int | None = Field(
        None, ge=1, le=2**31 - 1, description="Most candidates (or partial candidates) scored."
    )
    deadline_ms: int | None = Field(
        None, ge=1, le=MAX_DEADLINE_MS, description="Wall-time limit of the whole search (scoring included), in ms."
    )


class Constraint(_Strict):
    min: float = Field(description="Lowest acceptable raw score; candidates below it rank after every feasible one.")


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
        None, max_length=4000, description="Free-text preferences placed in the system message (Janus)."
    )
    preference_vector: dict[str, float] | None = Field(
        None,
        max_length=MAX_OBJECTIVES,
        description="Direction over reward objectives (objective -> weight); normalised to a unit vector (DPA).",
    )
    combination: Literal["linear", "and"] = Field(
        "linear", description="How objectives combine: `linear` (v·r) or `and` (Σ|v|·log σ(r − ref)); see preference.py."
    )
    references: dict[str, float] | None = Field(
        None,
        max_length=MAX_OBJECTIVES,
        description="`and` combination: unit-scale reference per objective of the direction or the constraints "
        "(default: the objective's own).",
    )
    constraints: dict[str, Constraint] | None = Field(
        None, max_length=MAX_OBJECTIVES, description="Hard constraints per objective, e.g. {\"harmlessness\": {\"min\": 0.9}}."
    )
    search: SearchSpec = Field(default_factory=SearchSpec, description="Search strategy and its parameters.")
    budget: Budget = Field(default_factory=Budget, description="Compute limits of the search.")
    return_candidates: bool = Field(False, description="Return every final candidate with its scores.")
    max_tokens: int = Field(256, ge=1, description="Most tokens to generate for the response.")
    temperature: float = Field(
        0.7, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy (only `sample`: ranked candidates would be identical)."
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
        if self.max_tokens > limits.max_tokens:
            raise InvalidRequest("max_tokens", f"is {self.max_tokens} but the configured maximum is {limits.max_tokens}")
        self._check_conversation(limits)
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
                    raise InvalidRequest(f"messages[{i}].content", "a user message must not be empty or only whitespace")
                texts.append((f"messages[{i}].content", message.content))
            if not any(m.role == "user" for m in self.messages):
                raise InvalidRequest("messages", "must contain at least one user message")
        else:
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
        search = self.search
        if search.strategy in RANKED_STRATEGIES and self.preference_vector is None:
            raise InvalidRequest(
                "preference_vector", f"{search.strategy} ranks candidates by a direction; give a preference_vector"
            )
        if search.strategy == "rejection" and search.threshold is None:
            raise InvalidRequest("search.threshold", "rejection sampling needs a threshold on the combined score")
        if search.strategy in RANKED_STRATEGIES and self.temperature == 0:
            raise InvalidRequest(
                "temperature", f"is 0 (greedy), so every {search.strategy} candidate would be the same; use a "
                "temperature above 0 or strategy 'sample'"
            )
        candidates, tokens = search.worst_case(self.max_tokens, len(self.preference_vector or {}))
        if candidates > limits.max_candidates:
            raise InvalidRequest(
                "search", f"{search.strategy} may generate up to {candidates} candidates; the configured maximum per "
                f"request is {limits.max_candidates} (max_candidates)"
            )
        if self.budget.max_candidate_tokens is not None:
            tokens = min(tokens, self.budget.max_candidate_tokens)
        if tokens > limits.max_search_tokens:
            raise InvalidRequest(
                "search", f"{search.strategy} may generate up to {tokens} tokens over all candidates; the configured "
                f"maximum per request is {limits.max_search_tokens} (max_search_tokens): lower max_tokens or the "
                "search size, or set budget.max_candidate_tokens"
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
            if not OBJECTIVE_NAME.match(name):
                raise InvalidRequest(f"constraints.{name}", f"objective names must match {OBJECTIVE_NAME.pattern}")
            if not math.isfinite(constraint.min):
                raise InvalidRequest(f"constraints.{name}.min", "must be a finite number")

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
    elif error["type"] == "string_unicode":
        message = "contains an unpaired UTF-16 surrogate; send valid Unicode"
    return InvalidRequest(field, message)


def _field_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


class Usage(_Strict):
    prompt_tokens: int = Field(description="Tokens in the composed prompt.")
    completion_tokens: int = Field(0, description="Tokens of the chosen response.")
    generated_tokens: int = Field(
        description="Tokens the engine generated for this request: every candidate's, and the judge's."
    )
    candidate_tokens: int = Field(0, description="Tokens generated over all candidates (what budget.max_candidate_tokens bounds).")
    prefill_tokens: int = Field(0, description="Prompt tokens over every engine request (candidates' and the judge's).")
    candidates: int = Field(1, description="Final candidates the search compared.")
    wall_time_s: float = Field(description="Wall time of the request inside the aligner, in seconds.")
    engine_requests: int = Field(0, description="Requests sent to the engine, the judge's included.")
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
        None, description="Raw scores of the returned response on the config's threshold objectives (null when refused)."
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
    feasible: bool | None = Field(None, description="Whether the chosen response meets every constraint.")
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
