"""`Usage`, what a request cost: in its own module so that the errors, which carry it, need nothing of
the contract (which imports the errors)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Usage(BaseModel):
    # What a request cost: part of every AlignResponse, and of an error's ErrorInfo for metering. Strict
    # like the rest of the contract (aligner/contract.py re-exports it). No docstring: it would become the
    # schema's description.
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt_tokens: int = Field(description="Tokens in the composed prompt.")
    completion_tokens: int = Field(0, description="Tokens of the chosen response.")
    generated_tokens: int = Field(
        description="Tokens the engine generated for this request: every candidate's, and the judge's."
    )
    candidate_tokens: int = Field(
        0, description="Tokens generated over all candidates (what budget.max_candidate_tokens bounds)."
    )
    prefill_tokens: int = Field(0, description="Prompt tokens over every engine request (candidates' and the judge's).")
    candidates: int = Field(1, description="Final candidates the search compared.")
    wall_time_s: float = Field(description="Wall time of the request inside the aligner, in seconds.")
    engine_requests: int = Field(0, description="Requests sent to the engine, the judge's included.")
    reward_calls: int = Field(0, description="Candidates (or partial candidates) scored.")
    rounds: int = Field(0, description="Search rounds (rejection) or steps (beam).")
    stopped_by: str | None = Field(
        None,
        description="What ended the search before its full size, if anything: a limit (`max_candidate_tokens`, "
        "`max_reward_calls` or `deadline_ms`: the request's budget; `max_request_s`: the server's time limit), or "
        "an adaptive search's own rule (`converged`: more draws were unlikely to pay; `checks_passed`).",
    )
    stage_seconds: dict[str, float] = Field(
        default_factory=dict, description="Wall time per stage: generate, score, select."
    )
