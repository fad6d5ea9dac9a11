"""The arithmetic of the rate-limit accuracy figure of `aligner bench tenants` (serve/bench/rate_limit.py):
admitted / (the bucket's burst, the whole per-minute limit, plus its refill over the window)."""

from serve.bench.rate_limit import accuracy, allowed_requests
from serve.bench.tenants import TARGETS, summarize
from serve.deployments.quota_keeper import Bucket


def test_allowed_is_the_keepers_full_bucket_plus_its_refill_over_the_window():
    assert allowed_requests(60, 40.0) == 100.0  # 60 at once, then one a second
    assert allowed_requests(600, 0.0) == 600.0
    bucket = Bucket(capacity=60, level=60.0, at=0.0)  # the keeper's own bucket gives exactly that
    taken = bucket.take(1000)
    bucket.refill(40.0)
    assert taken + bucket.take(1000) == allowed_requests(60, 40.0)


def test_accuracy_is_admitted_over_allowed_and_is_a_target_of_the_bench():
    assert accuracy(105, 60, 40.0) == 1.05
    assert accuracy(0, 60, 40.0) == 0.0
    assert TARGETS["rate_limit_accuracy"] == {"max": 1.05}
    report = {"light": {}, "shares": {}, "throughput": {}, "rate_limit": {"ratio": accuracy(101, 60, 40.0)}}
    summary = summarize(report)
    assert summary["ratios"]["rate_limit_accuracy"] == 1.01
    assert summary["targets"]["rate_limit_accuracy"]["met"] is True
    over = summarize({**report, "rate_limit": {"ratio": accuracy(110, 60, 40.0)}})
    assert over["targets"]["rate_limit_accuracy"]["met"] is False
