"""The `checks` objective: the share of the request's checkable instructions (its `checks` field,
aligner/checks) that a response passes. A request with checks is ranked with `checks ≥ 1` as a hard
constraint (aligner/search/base.py), so a candidate failing any check ranks below every one passing all."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

import numpy as np

from aligner.checks import Check
from aligner.contract import CHECKS_OBJECTIVE, ChatMessage
from aligner.rewards.base import Objective, RewardError, RewardModel


class CheckRun:
    """The checks of one request and what each text scored so far passed: the verifiers run once per
    text, when the text is scored, and the response reports those same verdicts."""

    def __init__(self, checks: Sequence[Check] = ()):
        self.checks = tuple(checks)
        self._verdicts: dict[str, list[bool]] = {}

    def passed(self, text: str) -> list[bool]:
        if text not in self._verdicts:
            self._verdicts[text] = [check.passes(text) for check in self.checks]
        return self._verdicts[text]


# The checks of the request being searched, set by `Aligner` for the duration of its search.
CURRENT_CHECKS: contextvars.ContextVar[CheckRun | None] = contextvars.ContextVar("aligner_current_checks", default=None)


class RequestChecks(RewardModel):
    """Scores in the request's own task (the checks are the request's); verifiers run in a worker thread."""

    objectives = (
        Objective(
            CHECKS_OBJECTIVE,
            "Share of the request's `checks` (IFEval instruction types) the response passes, 1 when it passes "
            "all; every request with checks also needs them all passed (a hard constraint). Only for requests "
            "with checks.",
        ),
    )

    async def score(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray:
        run = CURRENT_CHECKS.get()
        if run is None or not run.checks:
            raise RewardError("the checks objective scores the request's checks, and it has none")
        rows = await asyncio.to_thread(lambda: [run.passed(r) for r in responses])
        return np.array([sum(row) / len(run.checks) for row in rows], dtype=float).reshape(-1, 1)
