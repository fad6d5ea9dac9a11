"""Reward objectives: what a score means, and the interface every reward model implements."""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aligner.errors import AlignerError
from aligner.types import ChatMessage


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


class RewardModel(ABC):
    """Scores responses to one conversation on its objectives."""

    objectives: tuple[Objective, ...]

    @abstractmethod
    async def score(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray:
        """Raw scores, float array [len(responses), len(objectives)]."""


class BlockingRewardModel(RewardModel):
    """A reward model whose work is CPU/GPU-bound Python: runs off the event loop."""

    async def score(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.score_now, conversation, responses)

    @abstractmethod
    def score_now(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray: ...


def last_user_text(conversation: Sequence[ChatMessage]) -> str:
    return next((m.content for m in reversed(conversation) if m.role == "user"), "")
