"""The objective catalog: every configured reward model's objectives under unique names."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aligner.errors import ConfigError, InvalidRequest
from aligner.rewards.base import Objective, RewardError, RewardModel
from aligner.rewards.hf import HFRewardModelConfig
from aligner.types import ChatMessage


class RewardsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    builtin: bool = Field(True, description="Serve the built-in objectives (verbosity, relevance, readability, harmlessness, positivity).")
    judge: bool = Field(True, description="Serve `helpfulness`, judged by the policy model through the engine.")
    models: list[HFRewardModelConfig] = Field(default_factory=list, description="HF reward models to load.")


class ObjectiveCatalog:
    def __init__(self, models: Sequence[RewardModel]):
        self.models = list(models)
        self._owner: dict[str, tuple[RewardModel, int]] = {}
        for model in self.models:
            for column, objective in enumerate(model.objectives):
                if objective.name in self._owner:
                    raise ConfigError(
                        f"objective {objective.name!r} is declared by two reward models "
                        f"({type(self._owner[objective.name][0]).__name__} and {type(model).__name__}); names must be unique"
                    )
                self._owner[objective.name] = (model, column)

    @property
    def names(self) -> list[str]:
        return list(self._owner)

    def objective(self, name: str) -> Objective:
        model, column = self._owner[name]
        return model.objectives[column]

    def check_names(self, names: Sequence[str], field: str) -> None:
        for name in names:
            if name not in self._owner:
                valid = ", ".join(sorted(self._owner)) or "(none configured)"
                raise InvalidRequest(field, f"unknown objective {name!r}; valid objectives: {valid}")

    async def score(self, conversation: Sequence[ChatMessage], responses: Sequence[str], names: Sequence[str]) -> np.ndarray:
        """Raw scores [len(responses), len(names)]; each needed model runs once, all concurrently."""
        self.check_names(names, "objectives")
        needed: dict[int, RewardModel] = {id(self._owner[n][0]): self._owner[n][0] for n in names}
        results = await asyncio.gather(*(m.score(conversation, responses) for m in needed.values()))
        by_model = dict(zip(needed, results))
        out = np.empty((len(responses), len(names)), dtype=float)
        for j, name in enumerate(names):
            model, column = self._owner[name]
            scores = np.asarray(by_model[id(model)], dtype=float)
            if scores.shape != (len(responses), len(model.objectives)):
                raise RewardError(
                    f"reward model for {name!r} returned shape {scores.shape}, expected {(len(responses), len(model.objectives))}"
                )
            bad = ~np.isfinite(scores[:, column])
            if bad.any():
                raise RewardError(f"objective {name!r} returned a non-finite score for candidate {int(np.argmax(bad))}")
            out[:, j] = scores[:, column]
        return out

    def describe(self) -> list[dict[str, Any]]:
        return [asdict(self.objective(n)) for n in self.names]

    def attach_engine(self, engine: Any) -> None:
        """Give engine-backed objectives (the judge) the engine once it has started."""
        for model in self.models:
            if hasattr(model, "engine"):
                model.engine = engine


def build_catalog(config: RewardsConfig, *, tokenizer: Any, engine: Any = None, device: str = "cpu") -> ObjectiveCatalog:
    """Every configured objective; engine-backed ones score once an engine is given or attached."""
    from aligner.rewards.builtin import builtin_models
    from aligner.rewards.hf import HFRewardModel
    from aligner.rewards.judge import HelpfulnessJudge

    models: list[RewardModel] = []
    if config.builtin:
        models += builtin_models(tokenizer, device)
    if config.judge:
        models.append(HelpfulnessJudge(tokenizer, engine))
    models += [HFRewardModel(c) for c in config.models]
    return ObjectiveCatalog(models)
