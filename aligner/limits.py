"""`SearchLimits`, the server's maximums for a request's search parameters and for what one request may
cost (the contract checks a request against them when it parses it; a tenant's policy may lower them),
and `Budget`, what a request itself allows its search to spend. Here, apart from the contract, so the
strategies' cost models can name them without importing the contract that imports the strategies."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_DEADLINE_MS = 3_600_000


class SearchLimits(BaseModel):
    """Server-side maximums for search parameters and for what one request may cost (a request above one is
    rejected, naming it)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(64, ge=1, description="Most candidates per direction (best_of_n, rps).")
    batch: int = Field(64, ge=1, description="Most candidates per round (rejection, adaptive best_of_n).")
    max_rounds: int = Field(64, ge=1, description="Most rejection rounds.")
    beam_width: int = Field(16, ge=1, description="Widest beam.")
    expansions: int = Field(16, ge=1, description="Most continuations per beam and step.")
    chunk_tokens: int = Field(512, ge=1, description="Longest chunk in tokens (beam, particle_filter).")
    neighbors: int = Field(16, ge=1, description="Most neighbouring directions for rps.")
    particles: int = Field(32, ge=1, description="Most particles for particle_filter.")
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
        "continuations of one step), a tenant's `resample` action's included.",
    )
    max_search_tokens: int = Field(
        262_144,
        ge=1,
        description="Most tokens one request's search may generate over all candidates: its worst case "
        "(candidates × max_tokens; beam: every step's children × their chunk), or the request's "
        "budget.max_candidate_tokens when that is lower.",
    )
    max_reward_calls: int = Field(
        8192,
        ge=1,
        description="Most reward calls (candidates or partial candidates scored) one request's search may make: its "
        "worst case (beam: every step's children, over ⌈max_tokens / chunk_tokens⌉ steps), or the request's "
        "budget.max_reward_calls when that is lower.",
    )
    max_engine_requests: int = Field(
        2048,
        ge=1,
        description="Most generation requests one request's search may send to the engine (rejection: one per "
        "round; beam: one per running beam and step; rps: one per direction). Judges are capped by "
        "max_judge_prefill_tokens.",
    )
    max_scoring_rounds: int = Field(
        256, ge=1, description="Most scoring rounds of one request's search (rejection rounds, beam steps)."
    )
    max_judge_prefill_tokens: int = Field(
        1_048_576,
        ge=1,
        description="Most prompt tokens the judges on the policy model (e.g. helpfulness, policy_compliance) may "
        "prefill for one request: reward calls × judged objectives × (composed prompt + response, at most 512, + "
        "the judge's template), each at most the model's context. Checked once the prompt is composed, before "
        "any engine work.",
    )
    max_request_s: float | None = Field(
        300.0,
        gt=0,
        description="Wall time after which the server ends any search, streamed or not, whatever its "
        "budget.deadline_ms (the smaller of the two holds): the best result found so far is returned with "
        "usage.stopped_by `max_request_s`, or the error `deadline_exceeded` when there is none. Null: no server "
        "limit.",
    )


DEFAULT_LIMITS = SearchLimits()


class Budget(BaseModel):
    # Strict types: JSON's "5" or true is not an integer; nothing is coerced silently.
    model_config = ConfigDict(extra="forbid", strict=True)

    max_candidate_tokens: int | None = Field(
        None, ge=1, le=2**31 - 1, description="Most tokens generated over all candidates."
    )
    max_reward_calls: int | None = Field(
        None, ge=1, le=2**31 - 1, description="Most candidates (or partial candidates) scored."
    )
    deadline_ms: int | None = Field(
        None, ge=1, le=MAX_DEADLINE_MS, description="Wall-time limit of the whole search (scoring included), in ms."
    )
