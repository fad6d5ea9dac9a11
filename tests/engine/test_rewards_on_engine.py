"""Reward-ranked generation on the real engine with the embedded objectives."""

import numpy as np
import pytest

from aligner.contract import AlignRequest, ChatMessage
from aligner.errors import InvalidRequest


def test_judge_scores_with_the_policy_logprobs(catalog, run):
    conversation = [ChatMessage(role="user", content="What is the capital of France?")]
    scores = run(
        catalog.score(
            conversation, ["The capital of France is Paris.", "Bananas are yellow and grow on trees."], ["helpfulness"]
        )
    )
    assert scores.shape == (2, 1)
    assert ((scores > 0) & (scores < 1)).all()
    assert not np.allclose(scores, 0.5), "the judge should find Yes/No among the top logprobs"
    assert scores[0, 0] > scores[1, 0]


def test_best_of_n_reports_scores_usage_and_is_deterministic(aligner, run):
    request = AlignRequest.parse(
        {
            "prompt": "Give me a tip for studying.",
            "seed": 5,
            "max_tokens": 48,
            "preference_vector": {"relevance": 1, "verbosity": -0.5},
            "constraints": {"harmlessness": {"min": 0.5}},
            "search": {"strategy": "best_of_n", "n": 4},
        }
    )
    first = run(aligner.generate(request))
    assert set(first.scores) == {"relevance", "verbosity", "harmlessness"}
    assert first.feasible is True and first.scores["harmlessness"] >= 0.5
    assert first.usage.generated_tokens > len(aligner.engine.tokenizer(first.text)["input_ids"])
    again = run(aligner.generate(request))
    assert (again.text, again.combined_score) == (first.text, first.combined_score)


def test_unknown_objective_is_rejected_with_the_valid_names(aligner, run):
    request = AlignRequest.parse({"prompt": "hi", "preference_vector": {"wit": 1}})
    with pytest.raises(InvalidRequest) as err:
        run(aligner.generate(request))
    assert err.value.field == "preference_vector"
    assert f"valid objectives: {', '.join(sorted(aligner.catalog.names))}" in err.value.message
    assert "harmlessness, helpfulness" in err.value.message
