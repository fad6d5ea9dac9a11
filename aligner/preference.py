"""Turning per-objective rewards into one ranking: direction, combination, constraints.

All arithmetic is on the unit scale of each objective (Objective.normalise),
so a weight means the same for every objective.

- `linear`: R = v · z, the DPA reward for unit direction v.
- `and`: R = Σ |vᵢ| · log σ(sᵢ · K · (zᵢ − refᵢ)) with sᵢ = sign(vᵢ) and K = 10
  (the unit range spans 10 logits, the usual span of a Bradley-Terry reward).
  Each term is the log-probability that the response is good on objective i in
  the wanted direction, so the sum is the log-probability that it is good on
  all of them ("Transforming and Combining Rewards", 2024): one terrible
  objective cannot be bought back by the others.
- constraints: `min` per objective on the raw scale; a violating candidate
  ranks below every feasible one (and is reported as infeasible).
- ties break on the lower candidate index, so rankings are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from aligner.rewards.base import Objective

AND_SHARPNESS = 10.0
Combination = Literal["linear", "and"]


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


@dataclass(frozen=True)
class Ranking:
    combined: np.ndarray  # [N] combined score of each candidate
    feasible: np.ndarray  # [N] bool: meets every constraint
    order: list[int]  # candidate indices, best first

    @property
    def best(self) -> int:
        return self.order[0]


@dataclass(frozen=True)
class Combiner:
    objectives: tuple[Objective, ...]  # the columns of the score matrix
    direction: Mapping[str, float]  # unit vector over a subset of the columns
    method: Combination = "linear"
    references: Mapping[str, float] | None = None  # unit-scale overrides of Objective.reference
    minimums: Mapping[str, float] | None = None  # raw-scale lower bounds

    def __post_init__(self):
        names = {o.name for o in self.objectives}
        for mapping in (self.direction, self.references or {}, self.minimums or {}):
            missing = set(mapping) - names
            if missing:
                raise ValueError(f"objectives {sorted(missing)} are not among the scored columns {sorted(names)}")

    def combine(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        total = np.zeros(raw.shape[0])
        references = self.references or {}
        for j, objective in enumerate(self.objectives):
            weight = self.direction.get(objective.name, 0.0)
            if weight == 0.0:
                continue
            z = objective.normalise(raw[:, j])
            if self.method == "linear":
                total += weight * z
            else:
                reference = references.get(objective.name, objective.reference)
                total += abs(weight) * log_sigmoid(np.sign(weight) * AND_SHARPNESS * (z - reference))
        return total

    def feasible(self, raw: np.ndarray) -> np.ndarray:
        ok = np.ones(np.asarray(raw).shape[0], dtype=bool)
        for j, objective in enumerate(self.objectives):
            minimum = (self.minimums or {}).get(objective.name)
            if minimum is not None:
                ok &= raw[:, j] >= minimum
        return ok

    def rank(self, raw: np.ndarray) -> Ranking:
        combined = self.combine(raw)
        feasible = self.feasible(raw)
        order = sorted(range(len(combined)), key=lambda i: (not feasible[i], -combined[i], i))
        return Ranking(combined, feasible, order)
