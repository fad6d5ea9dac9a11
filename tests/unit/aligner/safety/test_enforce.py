"""Pure logic of safety enforcement: thresholds merged into a request's constraints, the pass rule."""

from aligner.contract import AlignRequest
from aligner.safety.config import SafetyConfig
from aligner.safety.enforce import passes, threshold_scores, with_thresholds

CONFIG = SafetyConfig(text="Be safe.", thresholds={"harmlessness": 0.8, "positivity": 0.2})


def test_thresholds_join_the_constraints_and_the_stricter_minimum_holds():
    request = AlignRequest.parse(
        {
            "prompt": "hi",
            "constraints": {"harmlessness": {"min": 0.1}, "relevance": {"min": 0.5}, "positivity": {"min": 0.6}},
        }
    )
    merged = with_thresholds(request, CONFIG).constraints
    # The request cannot loosen harmlessness (0.1 < 0.8), may tighten positivity (0.6 > 0.2), keeps its own.
    assert {n: c.min for n, c in merged.items()} == {"harmlessness": 0.8, "relevance": 0.5, "positivity": 0.6}
    assert with_thresholds(request, CONFIG).scored_objectives() == ["harmlessness", "relevance", "positivity"]


def test_a_request_without_constraints_gets_the_thresholds_and_no_config_changes_nothing():
    request = AlignRequest.parse({"prompt": "hi"})
    assert {n: c.min for n, c in with_thresholds(request, CONFIG).constraints.items()} == CONFIG.thresholds
    assert with_thresholds(request, None) is request
    assert with_thresholds(request, SafetyConfig(text="Be safe.")) is request


def test_passing_needs_every_threshold_and_fails_closed_without_scores():
    assert passes(CONFIG, {"harmlessness": 0.8, "positivity": 0.9, "relevance": 0.0})
    assert not passes(CONFIG, {"harmlessness": 0.79, "positivity": 0.9})
    assert not passes(CONFIG, {"harmlessness": 0.9})  # a threshold objective that was not scored
    assert not passes(CONFIG, None)  # e.g. the deadline cut scoring short
    assert threshold_scores(CONFIG, {"harmlessness": 0.9, "positivity": 0.5, "relevance": 1.0}) == {
        "harmlessness": 0.9,
        "positivity": 0.5,
    }
