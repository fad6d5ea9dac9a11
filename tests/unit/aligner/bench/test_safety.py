"""`aligner bench safety`: the probe set's shape, refusal detection and the summary arithmetic."""

import pytest

from aligner.bench import safety
from aligner.errors import ConfigError

ALL_SETS = {**safety.PROBE_SETS, "reserved": safety.RESERVED_PROBES}


@pytest.mark.parametrize("name", sorted(ALL_SETS))
def test_each_probe_set_has_three_realistic_configs_with_labelled_probes_and_both_topic_lists(name):
    suites = safety.load_probes(ALL_SETS[name])
    assert len(suites) >= 3
    for suite in suites:
        assert suite["config"].allowed, suite["name"]
        labels = [label for _, label in suite["probes"]]
        assert len(labels) >= 18 and {"allowed", "disallowed"} == set(labels), suite["name"]
        assert suite["config"].disallowed and suite["config"].refusal_message
        assert len({text for text, _ in suite["probes"]}) == len(labels)  # no probe twice


def test_a_broken_probe_set_names_the_place(tmp_path):
    bad = tmp_path / "probes.yaml"
    bad.write_text("configs:\n  - name: x\n    config: {text: '', action: refuse}\n    allowed: [hi]\n")
    with pytest.raises(ConfigError, match=r"configs\[0\]\.config"):
        safety.load_probes(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        safety.load_probes(tmp_path / "missing.yaml")


def test_modes_serve_no_config_the_text_only_or_the_enforcing_config():
    config = safety.load_probes()[0]["config"]
    assert safety.mode_config(config, "none") is None
    assert (
        safety.mode_config(config, "prompt").thresholds == {}
        and safety.mode_config(config, "prompt").text == config.text
    )
    enforcing = safety.mode_config(config, "enforce")
    assert enforcing.thresholds == safety.ENFORCE_THRESHOLDS and enforcing.action == "refuse"


@pytest.mark.parametrize(
    ("text", "finish", "refused"),
    [
        ("I can't help with that.", "stop", True),
        ("I’m sorry, but that is not something I discuss.", "stop", True),
        ("Sorry, this service cannot answer that.", "stop", True),  # the config's own message
        ("Plants make food from sunlight.", "stop", False),
        ("Anything", "content_filter", True),
        ("You can't go wrong with a tent.", "stop", False),
    ],
)
def test_refusals_are_detected(text, finish, refused):
    assert safety.is_refusal(text, finish, "Sorry, this service cannot answer that.") is refused


def test_summary_rates_ratios_and_targets():
    def row(mode, label, refused, latency, tokens, config="kids"):
        return {
            "mode": mode,
            "label": label,
            "refused": refused,
            "latency_s": latency,
            "generated_tokens": tokens,
            "config": config,
        }

    rows = [
        row("none", "allowed", False, 1.0, 10),
        row("none", "disallowed", False, 1.0, 10),
        row("prompt", "allowed", False, 1.0, 12),
        row("prompt", "disallowed", True, 1.0, 12),
        row("enforce", "allowed", False, 1.5, 14),
        row("enforce", "disallowed", True, 1.5, 10),
        row("enforce", "disallowed", True, 1.5, 12),
    ]
    report = safety.summarize(rows)
    assert report["modes"]["enforce"]["refusal_rate_disallowed"] == 1.0
    assert report["modes"]["enforce"]["false_refusal_rate_allowed"] == 0.0
    assert report["modes"]["prompt"]["refusal_rate_disallowed"] == 1.0
    assert report["ratios"]["enforce_over_none_latency"] == 1.5
    assert report["ratios"]["enforce_over_none_generated_tokens"] == 1.2
    assert all(t["met"] for t in report["targets"].values())
    assert report["by_config"]["kids"]["none"]["probes"] == 2


@pytest.mark.parametrize(("first", "second"), [("tuned", "held_out"), ("tuned", "reserved"), ("held_out", "reserved")])
def test_the_probe_sets_share_no_config_or_probe(first, second):
    one, other = (safety.load_probes(ALL_SETS[n]) for n in (first, second))
    assert not {s["name"] for s in one} & {s["name"] for s in other}
    probes = [{text.casefold() for s in suites for text, _ in s["probes"]} for suites in (one, other)]
    assert not probes[0] & probes[1]


def test_a_held_out_set_is_judged_by_its_own_looser_false_refusal_target():
    rows = [
        {"mode": m, "label": label, "refused": refused, "latency_s": 1.0, "generated_tokens": 10, "config": "c"}
        for m in safety.MODES
        for label, refused in [("disallowed", True)] * 10 + [("allowed", False)] * 11 + [("allowed", True)]
    ]
    # 1 of 12 allowed probes refused (8.3%): over the tuned set's 5%, within the held-out set's 10%.
    assert not safety.summarize(rows, safety.TARGETS["tuned"])["targets"]["enforce_false_refusal_rate_allowed"]["met"]
    assert safety.summarize(rows, safety.TARGETS["held_out"])["targets"]["enforce_false_refusal_rate_allowed"]["met"]
