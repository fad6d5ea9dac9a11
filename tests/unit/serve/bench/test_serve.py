import argparse

import pytest

from aligner.bench.common import ratio, target
from serve.bench import serve as bench
from serve.bench.load import histogram_totals, load_summary, mean_between
from serve.bench.replicas import capacity_inputs
from serve.cli.bench import counts
from serve.cli.main import main

METRICS = """\
# HELP aligner_reward_batch_size Responses per merged reward-model batch (across requests).
# TYPE aligner_reward_batch_size histogram
aligner_reward_batch_size_bucket{replica="a",le="1.0"} 0.0
aligner_reward_batch_size_bucket{replica="a",le="+Inf"} 3.0
aligner_reward_batch_size_sum{replica="a"} 24.0
aligner_reward_batch_size_count{replica="a"} 3.0
aligner_reward_batch_size_bucket{replica="b",le="+Inf"} 1.0
aligner_reward_batch_size_sum{replica="b"} 4.0
aligner_reward_batch_size_count{replica="b"} 1.0
# HELP aligner_reward_scoring_seconds Seconds.
# TYPE aligner_reward_scoring_seconds histogram
aligner_reward_scoring_seconds_sum 9.0
aligner_reward_scoring_seconds_count 9.0
"""


def test_histogram_totals_sums_every_label_set_and_ignores_other_metrics():
    assert histogram_totals(METRICS) == (28.0, 4.0)
    assert histogram_totals("") == (0.0, 0.0)


def test_mean_between_uses_the_difference_of_two_readings():
    assert mean_between((28.0, 4.0), (68.0, 9.0)) == 8.0
    assert mean_between((28.0, 4.0), (28.0, 4.0)) is None


def test_ratio_and_targets():
    assert ratio(1.05, 1.0) == 1.05
    assert ratio(None, 1.0) is None and ratio(1.0, 0) is None
    assert target(1.05, {"max": 1.1}) == {"measured": 1.05, "target_max": 1.1, "met": True}
    assert target(0.8, {"min": 0.9})["met"] is False
    assert target(None, {"min": 0.9})["met"] is False


def test_load_summary():
    row = load_summary([1.0, 3.0], [64, 64], 4.0, 2)
    assert row["tokens_per_s"] == 32.0 and row["requests"] == 2 and row["mean_latency_s"] == 2.0
    assert row["completion_tokens"] == 128 and row["clients"] == 2


def test_throughput_rows_take_the_median_of_every_run_per_client_count():
    runs = [
        {"clients": 16, "tokens_per_s": v, "label": label}
        for v, label in ((200.0, "before"), (260.0, "before"), (210.0, "after"), (190.0, "after"))
    ]
    runs.append({"clients": 1, "tokens_per_s": 20.0, "label": "before"})
    rows = bench.throughput_rows(runs)
    assert [r["clients"] for r in rows] == [1, 16]
    assert rows[0]["tokens_per_s"] == 20.0 and len(rows[0]["runs"]) == 1
    assert rows[1]["tokens_per_s"] == 205.0  # one fast run moves the median little
    assert [r["label"] for r in rows[1]["runs"]] == ["before", "before", "after", "after"]


def test_summarize_computes_every_ratio_and_target():
    report = {
        "overhead": {"http": {"median_s": 1.05}, "grpc": {"median_s": 1.02}, "in_process": {"median_s": 1.0}},
        "overhead_1_token": {"overhead_ms": {"http": 20.0, "grpc": 15.0}},
        "transports": {"http": {"tokens_per_s": 100.0}, "grpc": {"tokens_per_s": 104.0}},
        "throughput": {
            "aligner": [{"clients": 1, "tokens_per_s": 50.0}, {"clients": 16, "tokens_per_s": 180.0}],
            "vllm": [{"clients": 1, "tokens_per_s": 50.0}, {"clients": 16, "tokens_per_s": 200.0}],
        },
        "best_of_n": {
            "batcher_on": {"mean_reward_batch_size": 12.0, "tokens_per_s": 110.0},
            "batcher_off": {"mean_reward_batch_size": 6.0, "tokens_per_s": 100.0},
        },
    }
    summary = bench.summarize(report)
    ratios, targets = summary["ratios"], summary["targets"]
    assert ratios["http_over_in_process_latency"] == 1.05
    assert ratios["grpc_over_in_process_latency"] == 1.02
    assert ratios["grpc_over_http_latency"] == 0.971
    assert ratios["grpc_over_http_overhead_1_token"] == 0.75
    assert ratios["grpc_over_http_tokens_per_s_at_max_clients"] == 1.04
    assert ratios["aligner_over_vllm_tokens_per_s"] == {"1": 1.0, "16": 0.9}
    assert ratios["aligner_over_vllm_tokens_per_s_at_max_clients"] == 0.9
    assert ratios["batcher_on_over_off_mean_batch_size"] == 2.0
    assert ratios["batcher_on_over_off_tokens_per_s"] == 1.1
    assert all(t["met"] for t in targets.values())


def test_summarize_with_missing_phases_reports_unmet_targets():
    summary = bench.summarize({"overhead": {}, "throughput": {}, "best_of_n": {}})
    assert all(t["met"] is False and t["measured"] is None for t in summary["targets"].values())


def test_counts():
    assert counts("1,4,16") == [1, 4, 16]
    for bad in ("", "0", "a,b"):
        with pytest.raises(argparse.ArgumentTypeError):
            counts(bad)


def test_bench_serve_is_registered():
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "serve", "--help"])
    assert exit_info.value.code == 0


def test_bench_soak_is_registered():
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "soak", "--help"])
    assert exit_info.value.code == 0


def test_soak_summary_counts_statuses_5xx_latency_and_memory_growth_after_warm_up():
    from serve.bench.soak import summarize

    results = [
        {"kind": "sample", "outcome": "200", "seconds": 1.0},
        {"kind": "sample", "outcome": "200", "seconds": 3.0},
        {"kind": "bad_key", "outcome": "401", "seconds": 0.1},
        {"kind": "sample", "outcome": "503", "seconds": 0.2},
        {"kind": "abandoned_stream", "outcome": "abandoned", "seconds": 0.5},
    ]
    samples = [(0.0, 100 << 20), (30.0, 200 << 20), (60.0, 210 << 20), (100.0, 220 << 20)]
    summary = summarize(results, samples, duration_s=100)
    assert summary["requests_by_status"] == {"200": 2, "401": 1, "503": 1, "abandoned": 1}
    assert summary["five_xx"] == 1
    assert summary["requests_by_kind"]["sample"] == {"200": 2, "503": 1}
    assert summary["latency_answered_s"]["p50"] == 1.0  # abandoned requests have no answer latency
    memory = summary["memory"]  # warm-up is the first 25 s: growth counts from the 30 s sample
    assert memory["after_warm_up_mib"] == 200 and memory["growth_mib"] == 20 and memory["growth_fraction"] == 0.1


def test_capacity_inputs_and_the_replicas_ratio():
    usages = [
        {
            "generated_tokens": 100,
            "completion_tokens": 25,
            "reward_calls": 4,
            "engine_requests": 1,
            "stage_seconds": {"generate": 2.0, "score": 0.5},
            "wall_time_s": 2.6,
        },
        {
            "generated_tokens": 300,
            "completion_tokens": 75,
            "reward_calls": 4,
            "engine_requests": 1,
            "stage_seconds": {"generate": 4.0, "score": 0.7},
            "wall_time_s": 4.8,
        },
    ]
    costs = capacity_inputs(usages, tokens_per_s=400.0)
    assert costs["generated_tokens"] == 200 and costs["score_s"] == 0.6 and costs["requests"] == 2
    assert costs["decode_bound_requests_per_s"] == 2.0
    assert capacity_inputs([], None)["decode_bound_requests_per_s"] is None
    summary = bench.summarize(
        {"replicas": [{"replicas": 1, "tokens_per_s": 100.0}, {"replicas": 2, "tokens_per_s": 150.0}]}
    )
    assert summary["ratios"]["replicas_2_over_1_tokens_per_s"] == 1.5
