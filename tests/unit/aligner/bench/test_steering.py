"""`aligner bench steering`'s fixtures and arithmetic (pure logic; the bench itself runs an engine)."""

import pytest

from aligner.bench import steering
from aligner.checks import Check
from aligner.contract import AlignRequest


@pytest.mark.parametrize(("prompt", "checks"), steering.CHECK_PROMPTS)
def test_every_prompts_checks_are_a_valid_request_in_every_mode(prompt, checks):
    for search in steering.CHECK_MODES.values():
        assert AlignRequest.parse({"prompt": prompt, "checks": checks, "search": search}).checks


@pytest.mark.parametrize(("prompt", "words", "check"), steering.PREFERENCE_PROMPTS)
def test_every_preference_has_a_check_that_verifies_it(prompt, words, check):
    parsed = AlignRequest.parse({"prompt": prompt, "preferences": words, "search": {"strategy": "best_of_n"}})
    assert parsed.direction() == {"preference_following": 1.0}
    Check.model_validate(check)


def test_the_targets_compare_the_modes_side_by_side():
    checks = {
        "sample": {"pass_all": 40.0, "candidate_tokens": 60.0, "rounds": 1.0},
        "best_of_n8": {"pass_all": 75.0, "candidate_tokens": 480.0, "rounds": 1.0},
        "adaptive_best_of_n8": {"pass_all": 74.0, "candidate_tokens": 240.0, "rounds": 2.0},
    }
    got = steering.targets(checks)
    assert got["best_of_n8_over_sample_pass_rate_points"] == {"measured": 35.0, "target_min": 25.0, "met": True}
    assert got["adaptive_below_best_of_n8_pass_rate_points"]["measured"] == 1.0
    assert got["adaptive_over_best_of_n8_candidate_tokens"] == {"measured": 0.5, "target_max": 0.6, "met": True}


def test_a_summary_is_the_mean_of_each_column_and_skips_missing_scores():
    rows = [{"a": 1.0, "b": None}, {"a": 3.0, "b": 0.5}]
    assert steering.summary(rows) == {"a": 2.0, "b": 0.5}
