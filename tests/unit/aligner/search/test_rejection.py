"""`rejection` stops at the first round with a decided, feasible candidate at the threshold."""

import asyncio

import numpy as np

from aligner.contract import AlignRequest
from aligner.core import Aligner
from aligner.prompting import ModelProfile
from aligner.rewards import Objective, ObjectiveCatalog, RewardModel
from tests.fakes import FakeGenerator


class FakeAbstainingJudge(RewardModel):
    """A fake judge: undecided (NaN) on texts starting with "U", 0.45 on every other text."""

    abstains = True
    objectives = (Objective("judge", "judge"),)

    async def score(self, conversation, responses):
        return np.array([[np.nan if r.startswith("U") else 0.45] for r in responses])


def test_a_decided_candidate_at_the_threshold_ends_the_search_though_an_undecided_one_ranks_above():
    # the undecided candidate sits at the middle of the range (0.5), above the decided 0.45
    request = AlignRequest.parse(
        {
            "prompt": "hi",
            "temperature": 1.0,
            "seed": 1,
            "max_tokens": 32,
            "return_candidates": True,
            "preference_vector": {"judge": 1.0},
            "search": {"strategy": "rejection", "batch": 2, "threshold": 0.4, "max_rounds": 5},
        }
    )
    generator = FakeGenerator(lambda seed, index: "Undecided answer" if index == 0 else "Good answer")
    aligner = Aligner(generator, ObjectiveCatalog([FakeAbstainingJudge()]), profile=ModelProfile())
    response = asyncio.run(aligner.generate(request))
    assert response.threshold_met is True
    assert response.text == "Good answer"
    assert response.usage.rounds == 1
    assert [c.text for c in response.candidates] == ["Good answer", "Undecided answer"]
