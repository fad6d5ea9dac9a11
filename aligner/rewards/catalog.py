"""The objective catalog: every configured reward model's objectives under unique names."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from aligner.checks import Check
from aligner.concurrency import gather_all
from aligner.contract import ChatMessage
from aligner.errors import ConfigError, InvalidRequest
from aligner.rewards.base import (
    CURRENT_PREFERENCES,
    CURRENT_SAFETY,
    BlockingRewardModel,
    Objective,
    RewardError,
    RewardModel,
)
from aligner.rewards.batcher import BatchObserver, ScoringBatcher, UnbatchedScorer
from aligner.rewards.builtin import builtin_models
from aligner.rewards.checks import CURRENT_CHECKS, CheckRun, RequestChecks
from aligner.rewards.hf import HFRewardModel, HFRewardModelConfig
from aligner.rewards.judge import (
    GuardModelJudge,
    HelpfulnessJudge,
    PolicyComplianceJudge,
    PreferenceFollowingJudge,
    PreferenceModelJudge,
)
from aligner.safety.config import SafetyConfig
from kernels.scorer import ScorerStats

log = logging.getLogger(__name__)


class RewardsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    builtin: bool = Field(
        True,
        description="Serve the built-in objectives (verbosity, relevance, readability, harmlessness, positivity, "
        "topic_safety).",
    )
    judge: bool = Field(
        True,
        description="Serve `helpfulness`, `policy_compliance` and `preference_following`, judged by the policy model "
        "through the engine.",
    )
    models: list[HFRewardModelConfig] = Field(default_factory=list, description="HF reward models to load.")
    guard_model: str | None = Field(
        None,
        description="A local HF causal-LM directory (a guard model) that judges `policy_compliance` instead of "
        "the policy model; served even with `judge: false`.",
    )
    preference_judge_model: str | None = Field(
        None,
        description="A local HF causal-LM directory (e.g. a strong instruct model on a GPU node) that judges "
        "`preference_following` instead of the policy model; served even with `judge: false`.",
    )
    judge_max_input_tokens: int = Field(
        4096,
        ge=64,
        le=1_000_000,
        validation_alias=AliasChoices("judge_max_input_tokens", "guard_max_input_tokens"),
        description="Longest prompt a local judge model (`guard_model`, `preference_judge_model`) reads per "
        "response: the policy text or the request's preferences (cut to a quarter of this), the question's last "
        "quarter of this and the whole response; a response longer than half of this, or a policy text that "
        "leaves no room, gets no verdict (undecided: fails every threshold on it), never a verdict on a part.",
    )
    batch_window_ms: float | None = Field(
        2.0,
        ge=0,
        le=1000,
        description="Cross-request scoring: concurrent scoring calls on one reward model that arrive within this "
        "window (or while that model's previous batch is running) are merged into one batched pass. "
        "0 never waits: it merges only calls queued in the same event-loop iteration or during the previous batch. "
        "null turns merging off: every call scores on its own.",
    )
    max_batch_sequences: int = Field(
        256, ge=1, description="Most responses in one merged scoring batch; a full batch closes before its window ends."
    )


class ObjectiveCatalog:
    """Every objective by name, and the scoring of any subset of them.

    With `batch_window_ms` set (as `build_catalog` does by default), each
    blocking reward model scores through a `ScoringBatcher`, which merges
    concurrent requests' calls into one `score_many` pass; with None (the
    default here) each call runs on its own in a worker thread. Either way
    every scoring pass is reported to the batch observers.
    """

    def __init__(
        self,
        models: Sequence[RewardModel],
        *,
        batch_window_ms: float | None = None,
        max_batch_sequences: int = 256,
    ):
        self.models = list(models)
        self._observers: list[BatchObserver] = []
        # What `score` calls for each model: the model itself or its batcher.
        self._scorer: dict[int, RewardModel] = {
            id(model): self._scorer_for(model, batch_window_ms, max_batch_sequences) for model in self.models
        }
        self._owner: dict[str, tuple[RewardModel, int]] = {}
        for model in self.models:
            for column, objective in enumerate(model.objectives):
                if objective.name in self._owner:
                    raise ConfigError(
                        f"objective {objective.name!r} is declared by two reward models "
                        f"({type(self._owner[objective.name][0]).__name__} and {type(model).__name__}); "
                        "names must be unique"
                    )
                self._owner[objective.name] = (model, column)

    def _scorer_for(self, model: RewardModel, window_ms: float | None, max_batch_sequences: int) -> RewardModel:
        if not isinstance(model, BlockingRewardModel):
            return model
        if window_ms is None:
            return UnbatchedScorer(model, on_batch=self._batch_done)
        return ScoringBatcher(
            model, window_ms=window_ms, max_batch_sequences=max_batch_sequences, on_batch=self._batch_done
        )

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

    def needs_safety_config(self, names: Sequence[str]) -> list[str]:
        """Those of `names` (served objectives) that judge against the tenant's safety config, in order."""
        return [name for name in names if self.objective(name).needs_safety_config]

    def check_conversation(self, conversation: Sequence[ChatMessage], names: Sequence[str]) -> None:
        """Every model that scores `names` (served objectives) renders `conversation` with its own template;
        the first that refuses it raises `InvalidRequest` naming `messages`. Blocking: call it off the loop."""
        for model in {id(self._owner[n][0]): self._owner[n][0] for n in names}.values():
            model.check_conversation(conversation)

    async def score(
        self, conversation: Sequence[ChatMessage], responses: Sequence[str], names: Sequence[str]
    ) -> np.ndarray:
        """Raw scores [len(responses), len(names)]; each needed model runs once, all concurrently."""
        self.check_names(names, "objectives")
        needed: dict[int, RewardModel] = {id(self._owner[n][0]): self._owner[n][0] for n in names}
        # A failing model must not leave the others (the judge's engine requests) running.
        results = await gather_all(*(self._scorer[key].score(conversation, responses) for key in needed))
        by_model = dict(zip(needed, results))
        out = np.empty((len(responses), len(names)), dtype=float)
        for j, name in enumerate(names):
            model, column = self._owner[name]
            scores = np.asarray(by_model[id(model)], dtype=float)
            if scores.shape != (len(responses), len(model.objectives)):
                raise RewardError(
                    f"reward model for {name!r} returned shape {scores.shape}, "
                    f"expected {(len(responses), len(model.objectives))}"
                )
            # NaN is an abstaining judge's "no verdict"; any other non-finite score is a fault.
            bad = np.isinf(scores[:, column]) if model.abstains else ~np.isfinite(scores[:, column])
            if bad.any():
                raise RewardError(f"objective {name!r} returned a non-finite score for candidate {int(np.argmax(bad))}")
            out[:, j] = scores[:, column]
        return out

    def add_batch_observer(self, observer: BatchObserver) -> None:
        """Call `observer(model_label, requests, sequences, seconds)` after every merged scoring batch.

        It runs on the event loop thread that scored the batch, after the callers got
        their rows; it must be quick and must not block. Its exceptions are logged
        and ignored. Every blocking model reports (unmerged calls as batches of one
        request); engine-backed ones (the judge) do not.
        """
        self._observers.append(observer)

    def _batch_done(self, model: str, requests: int, sequences: int, seconds: float) -> None:
        for observer in self._observers:
            try:
                observer(model, requests, sequences, seconds)
            except Exception:
                log.exception("scoring batch observer %r failed", observer)

    def scorer_stats(self) -> dict[str, float]:
        """`kernels.scorer.ScorerStats` summed over every loaded BatchedScorer of every model.

        Keys: calls, sequences, batches, real_tokens, padded_tokens, graph_replays,
        eager_runs, graph_captures (counters since start) and padding_waste (of the sums).
        All zero while no model has a scorer loaded (Relevance loads its own on first use).
        """
        total = ScorerStats()
        for model in self.models:
            for scorer in getattr(model, "batched_scorers", tuple)():
                for name, value in asdict(scorer.stats).items():
                    setattr(total, name, getattr(total, name) + value)
        return total.to_dict()

    def warm_up(self) -> None:
        """Load every lazily loaded model and capture its scorers' CUDA graphs (blocking; at start-up)."""
        for model in self.models:
            model.load()
            for scorer in model.batched_scorers():
                scorer.capture()

    async def probe(self) -> None:
        """Score a canned answer on every objective (readiness: each model answers), under a canned
        policy for the objectives that judge against one, a canned check for `checks` and canned preferences."""
        token = CURRENT_SAFETY.set(SafetyConfig(text="Be polite.", disallowed=["violence"]))
        checks = CURRENT_CHECKS.set(CheckRun([Check(id="punctuation:no_comma")]))
        preferences = CURRENT_PREFERENCES.set("Answer briefly.")
        try:
            await self.score([ChatMessage(role="user", content="Say hello.")], ["Hello!"], self.names)
        finally:
            CURRENT_PREFERENCES.reset(preferences)
            CURRENT_CHECKS.reset(checks)
            CURRENT_SAFETY.reset(token)

    def describe(self) -> list[dict[str, Any]]:
        return [asdict(self.objective(n)) for n in self.names]

    def attach_engine(self, engine: Any) -> None:
        """Give engine-backed objectives (the judge) the engine once it has started."""
        for model in self.models:
            if hasattr(model, "engine"):
                model.engine = engine


def build_catalog(
    config: RewardsConfig, *, tokenizer: Any, engine: Any = None, device: str = "cpu"
) -> ObjectiveCatalog:
    """Every configured objective; engine-backed ones score once an engine is given or attached."""
    models: list[RewardModel] = []
    if config.builtin:
        models += builtin_models(tokenizer, device)
    if config.judge:
        models.append(HelpfulnessJudge(tokenizer, engine))
    if config.guard_model is not None:
        models.append(GuardModelJudge(config.guard_model, device, config.judge_max_input_tokens))
    elif config.judge:
        models.append(PolicyComplianceJudge(tokenizer, engine))
    if config.preference_judge_model is not None:
        models.append(PreferenceModelJudge(config.preference_judge_model, device, config.judge_max_input_tokens))
    elif config.judge:
        models.append(PreferenceFollowingJudge(tokenizer, engine))
    models += [HFRewardModel(c) for c in config.models]
    models.append(RequestChecks())  # the request's own checks: no model, served whatever else is
    return ObjectiveCatalog(
        models, batch_window_ms=config.batch_window_ms, max_batch_sequences=config.max_batch_sequences
    )
