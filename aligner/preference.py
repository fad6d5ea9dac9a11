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
- thresholds (a tenant's safety config): `min` per objective too, and they come
  first: the ranking is lexicographic, passes the thresholds, then meets the
  constraints (the request's, with the thresholds merged in), then the combined
  score. A request's constraints can never lift a candidate that fails a
  threshold above one that passes.
- an undecided score (NaN: a judge that answered neither Yes nor No) fails every
  constraint and threshold on its objective and counts as the middle of the
  objective's range in the combined score (no evidence either way).
- ties break on the lower candidate index, so rankings are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from aligner.rewards.base import Objective

AND_SHARPNESS = 10.0
UNDECIDED_UNIT = 0.5  # an undecided score's place in the combined score, on the unit scale
Combination = Literal["linear", "and"]


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


@dataclass(frozen=True)
class Ranking:
    combined: np.ndarray  # [N] combined score of each candidate
    feasible: np.ndarray  # [N] bool: meets every constraint
    order: list[int]  # candidate indices, best first
    passes: np.ndarray | None = None  # [N] bool: meets every threshold (None: the combiner has none)
    decided: np.ndarray | None = None  # [N] bool: every objective of the direction has a score (None: all)

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
    thresholds: Mapping[str, float] | None = None  # raw-scale lower bounds that outrank the minimums

    def __post_init__(self):
        names = {o.name for o in self.objectives}
        for mapping in (self.direction, self.references or {}, self.minimums or {}, self.thresholds or {}):
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
            z = np.nan_to_num(objective.normalise(raw[:, j]), nan=UNDECIDED_UNIT)
            if self.method == "linear":
                total += weight * z
            else:
                reference = references.get(objective.name, objective.reference)
                total += abs(weight) * log_sigmoid(np.sign(weight) * AND_SHARPNESS * (z - reference))
        return total

    def feasible(self, raw: np.ndarray, minimums: Mapping[str, float] | None = None) -> np.ndarray:
        """Which rows meet every one of `minimums` (default: the constraints); NaN meets none."""
        minimums = self.minimums if minimums is None else minimums
        ok = np.ones(np.asarray(raw).shape[0], dtype=bool)
        for j, objective in enumerate(self.objectives):
            minimum = (minimums or {}).get(objective.name)
            if minimum is not None:
                ok &= raw[:, j] >= minimum  # False for NaN
        return ok

    def rank(self, raw: np.ndarray) -> Ranking:
        raw = np.asarray(raw, dtype=float)
        combined = self.combine(raw)
        feasible = self.feasible(raw)
        passes = self.feasible(raw, self.thresholds) if self.thresholds else None
        first = passes if passes is not None else np.ones(len(combined), dtype=bool)
        order = sorted(range(len(combined)), key=lambda i: (not first[i], not feasible[i], -combined[i], i))
        # An undecided judge ranks at the middle (no evidence either way: above a judged failure, below a
        # judged success), but its middle score is no evidence that a score threshold is met.
        directed = [j for j, o in enumerate(self.objectives) if self.direction.get(o.name, 0.0) != 0.0]
        decided = ~np.isnan(raw[:, directed]).any(axis=1) if directed else np.ones(len(combined), dtype=bool)
        return Ranking(combined, feasible, order, passes, decided)
