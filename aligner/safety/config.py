"""Per-tenant safety configs (CoSA): what one tenant's users may and may not get, set by an admin.

A config is natural-language `text` placed first in the system message, `thresholds` that
become hard constraints on every candidate, and what to do when no candidate passes. The
tenant store keeps every version (immutable, numbered per tenant) and an audit row per change.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aligner.contract import OBJECTIVE_NAME, check_text
from aligner.errors import InvalidRequest

MAX_TEXT_CHARS = 20_000
MAX_TOPICS = 32
MAX_TOPIC_CHARS = 200
MAX_THRESHOLDS = 16
DEFAULT_REFUSAL = "I can't help with that request."
ALLOWED_TOPICS_HEADING = "Topics to help with:"
DISALLOWED_TOPICS_HEADING = "Topics to decline:"


# Objectives that score a request against what that request itself states: no tenant threshold can use them.
REQUEST_OBJECTIVES = ("checks", "preference_following")


class SafetyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        description="What this tenant's users may and may not get, in natural language; placed first in the "
        "system message, with precedence over everything the user writes.",
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        max_length=MAX_THRESHOLDS,
        description="Objective -> lowest acceptable raw score; hard constraints on every candidate, beside the "
        "request's own (which cannot loosen them).",
    )
    action: Literal["refuse", "resample", "flag"] = Field(
        "refuse",
        description="When no candidate passes: `refuse` answers with `refusal_message`; `resample` draws more "
        "candidates (up to `max_resamples`), then refuses; `flag` returns the best, marked flagged.",
    )
    refusal_message: str = Field(
        DEFAULT_REFUSAL, min_length=1, max_length=2000, description="The answer when a request is refused."
    )
    max_resamples: int = Field(8, ge=1, le=64, description="`resample`: most extra candidates before refusing.")
    allowed: list[str] = Field(
        default_factory=list,
        max_length=MAX_TOPICS,
        description="Short descriptions of topics the tenant's users may ask about. Listed in the operator's "
        "section; under a `topic_safety` threshold, a question or response nearer an allowed topic than its "
        "nearest disallowed one by `ALLOWED_MARGIN` is exempt from that disallowed match.",
    )
    disallowed: list[str] = Field(
        default_factory=list,
        max_length=MAX_TOPICS,
        description="Short descriptions of topics to decline. Listed in the operator's section; the "
        "`topic_safety` objective scores an exchange by its distance from them (a threshold on it enforces).",
    )

    @field_validator("text", "refusal_message")
    @classmethod
    def _real_text(cls, value: str, info) -> str:
        if not value.strip():
            raise InvalidRequest(info.field_name, "must not be empty or only whitespace")
        check_text(info.field_name, value)
        return value

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for name, minimum in value.items():
            if not OBJECTIVE_NAME.match(name):
                raise InvalidRequest(f"thresholds.{name}", f"objective names must match {OBJECTIVE_NAME.pattern}")
            if not math.isfinite(minimum):
                raise InvalidRequest(f"thresholds.{name}", "must be a finite number")
        return value

    @field_validator("allowed", "disallowed")
    @classmethod
    def _topics(cls, value: list[str], info) -> list[str]:
        for i, topic in enumerate(value):
            field = f"{info.field_name}[{i}]"
            if not topic.strip():
                raise InvalidRequest(field, "must not be empty or only whitespace")
            if len(topic) > MAX_TOPIC_CHARS:
                raise InvalidRequest(field, f"is {len(topic)} characters; the maximum is {MAX_TOPIC_CHARS}")
            if any(c in topic for c in "\n\r\u2028\u2029\x0b\x0c\x85"):
                # Each list is one line of the operator's section: a line break would start a line of its own.
                raise InvalidRequest(field, "must be one line (no line breaks)")
            check_text(field, topic)
        return value

    def operator_text(self) -> str:
        """The operator's section as the models read it: the text, then the topic lists (the policy judge
        reads the same)."""
        lines = [self.text.strip()]
        if self.allowed:
            lines.append(f"{ALLOWED_TOPICS_HEADING} " + "; ".join(t.strip() for t in self.allowed) + ".")
        if self.disallowed:
            lines.append(f"{DISALLOWED_TOPICS_HEADING} " + "; ".join(t.strip() for t in self.disallowed) + ".")
        return "\n".join(lines)

    def check_request_objectives(self) -> None:
        """No threshold rests on an objective that scores what each request itself asks."""
        for name in self.thresholds:
            if name in REQUEST_OBJECTIVES:
                raise InvalidRequest(
                    f"thresholds.{name}",
                    f"{name} scores what each request itself asks (its own checks or words); a tenant's "
                    "threshold cannot rest on it",
                )

    def check_objectives(self, ranges: Mapping[str, tuple[float, float]]) -> None:
        """Every threshold names a served objective (`ranges`: name -> (low, high)) within its raw range."""
        self.check_request_objectives()
        for name, minimum in self.thresholds.items():
            if name not in ranges:
                valid = ", ".join(sorted(ranges)) or "(none configured)"
                raise InvalidRequest(f"thresholds.{name}", f"unknown objective {name!r}; valid objectives: {valid}")
            low, high = ranges[name]
            if not low <= minimum <= high:
                raise InvalidRequest(
                    f"thresholds.{name}", f"is {minimum} but {name}'s scores lie in [{low:g}, {high:g}]"
                )

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON: what the audit log records of each version."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def resamples_allowed(config: SafetyConfig | None) -> int:
    """The candidates a request served under `config` may draw again when none passes (its `resample`
    action's `max_resamples`; 0 under no config, no threshold or another action)."""
    if config is None or not config.thresholds or config.action != "resample":
        return 0
    return config.max_resamples
