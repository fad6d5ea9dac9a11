"""Reward objectives: what a score means, and the interface every reward model implements."""

from __future__ import annotations

import asyncio
import contextvars
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from aligner.contract import ChatMessage
from aligner.errors import AlignerError
from aligner.safety.config import SafetyConfig


class RewardError(AlignerError):
    """A reward model failed or returned an unusable score."""

    code = "reward_failed"


@dataclass(frozen=True)
class Objective:
    """One named reward dimension.

    Scores are compared on the unit scale: `normalise(raw) = (raw - low) / (high - low)`,
    so a direction weight means the same for every objective. Built-in objectives
    already score in [0, 1]; an HF reward head declares the raw range it usually spans.
    `reference` is the unit-scale value a response must beat to count as good
    under the `and` combination.
    """

    # Whether scoring reads the tenant's safety config (`current_safety`): a request may name such
    # an objective only when it is served under a config. A fact about the objective, so whoever
    # admits a request asks the catalog (`needs_safety_config`) instead of keeping a list of names.
    needs_safety_config: ClassVar[bool] = False

    name: str
    description: str
    low: float = 0.0
    high: float = 1.0
    reference: float = 0.5

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.high > self.low):
            raise ValueError(f"objective {self.name!r}: need finite low < high, got [{self.low}, {self.high}]")

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        return (raw - self.low) / (self.high - self.low)


class TenantPolicyObjective(Objective):
    """An objective judged against the tenant's safety config (its `text` or its topics)."""

    needs_safety_config = True


class RewardModel(ABC):
    """Scores responses to one conversation on its objectives."""

    objectives: tuple[Objective, ...]
    # A judge may abstain: NaN in its scores means it gave no verdict (aligner/preference.py says how that
    # ranks); the catalog refuses NaN from every other model.
    abstains: bool = False

    @abstractmethod
    async def score(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray:
        """Raw scores, float array [len(responses), len(objectives)]."""

    @property
    def label(self) -> str:
        """A short name for logs and metrics (default: its objective names joined by '+')."""
        return "+".join(o.name for o in self.objectives)

    def batched_scorers(self) -> Sequence[Any]:
        """The `kernels.scorer.BatchedScorer`s this model has loaded so far (for their stats); none by default."""
        return ()

    def load(self) -> None:  # noqa: B027 (optional: most models load nothing lazily)
        """Load whatever the model loads lazily (blocking), so the first request does not pay for it."""

    def check_conversation(self, conversation: Sequence[ChatMessage]) -> None:  # noqa: B027 (most accept any)
        """Raise `InvalidRequest` naming `messages` if this model cannot score responses to `conversation`
        (its own chat template refuses it). Blocking and cheap (renders, runs no model); called in a
        request's first phase, so such a request is refused before any engine work or merged batch."""


# One scoring job of a merged batch: a conversation and the responses to score against it.
ScoreItem = tuple[Sequence[ChatMessage], Sequence[str]]


class BlockingRewardModel(RewardModel):
    """A reward model whose work is CPU/GPU-bound Python: runs off the event loop.

    `score_many` scores several conversations' responses in one go; the
    cross-request batcher (`aligner.rewards.batcher`) calls it with the work of
    concurrent requests. Models with a batched forward pass override it so all
    sequences share one pass; it must equal `score_now` item by item.
    """

    async def score(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.score_now, conversation, responses)

    @abstractmethod
    def score_now(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray: ...

    def score_many(self, items: Sequence[ScoreItem]) -> list[np.ndarray]:
        """Raw scores for each (conversation, responses) item, in order: one array per item."""
        return [self.score_now(conversation, responses) for conversation, responses in items]


def split_rows(rows: np.ndarray, items: Sequence[ScoreItem]) -> list[np.ndarray]:
    """Cut the rows scored for all items' responses (concatenated in order) back into one array per item."""
    if not items:
        return []
    return np.split(rows, np.cumsum([len(responses) for _, responses in items])[:-1])


# The safety config the current request is served under, set by `Aligner` for the duration of a
# search: what the objectives that judge against a tenant's policy read (its `text`, `disallowed`).
CURRENT_SAFETY: contextvars.ContextVar[SafetyConfig | None] = contextvars.ContextVar(
    "aligner_current_safety", default=None
)


# The request's own words on how to answer (`AlignRequest.stated_preferences`), set by `Aligner` for the
# duration of its search: what `preference_following` judges against (never the tenant's safety config).
CURRENT_PREFERENCES: contextvars.ContextVar[str] = contextvars.ContextVar("aligner_current_preferences", default="")


def current_safety(objective: str) -> SafetyConfig:
    safety = CURRENT_SAFETY.get()
    if safety is None:
        raise RewardError(f"{objective} needs the request's safety config, and there is none")
    return safety


def last_user_text(conversation: Sequence[ChatMessage]) -> str:
    return next((m.content for m in reversed(conversation) if m.role == "user"), "")
