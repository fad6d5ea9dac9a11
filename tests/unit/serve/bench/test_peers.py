"""`aligner bench peers`: its report math, the commands it starts, and the its_hub reward adapter."""

import argparse
import asyncio
import sys
from pathlib import Path

import pytest

from serve.bench import peers as bench_peers
from serve.bench import servers
from serve.cli.bench import phase_order, positive


def test_reward_equal_within_noise_or_better_is_met():
    assert bench_peers.reward_not_worse([0.8, 0.7], [0.7, 0.6])["met"] is True
    close = bench_peers.reward_not_worse([0.70, 0.74, 0.72], [0.73, 0.71, 0.75])
    assert close["difference"] == -0.01 and close["met"] is True  # inside two standard errors
    worse = bench_peers.reward_not_worse([0.50, 0.51, 0.49], [0.80, 0.81, 0.79])
    assert worse["met"] is False and worse["difference"] == -0.3
    assert bench_peers.reward_not_worse([], [0.5])["met"] is False


def report(aligner_rps, its_hub_rps, ours, theirs):
    return {
        "best_of_n": {
            "aligner": {"requests_per_s": aligner_rps, "generated_tokens_per_s": 300.0, "chosen_rewards": ours},
            "its_hub": {"requests_per_s": its_hub_rps, "generated_tokens_per_s": 200.0, "chosen_rewards": theirs},
        },
        "sample": {
            "aligner": [{"clients": 1, "tokens_per_s": 30.0}, {"clients": 16, "tokens_per_s": 270.0}],
            "vllm": [{"clients": 1, "tokens_per_s": 40.0}, {"clients": 16, "tokens_per_s": 280.0}],
        },
    }


def test_summary_ratios_and_targets():
    out = bench_peers.summarize(report(1.8, 1.0, [0.74, 0.73], [0.73, 0.72]))
    assert out["ratios"]["aligner_over_its_hub_best_of_n_requests_per_s"] == 1.8
    assert out["ratios"]["aligner_over_its_hub_best_of_n_generated_tokens_per_s"] == 1.5
    assert out["ratios"]["aligner_over_vllm_sample_tokens_per_s"] == {"1": 0.75, "16": 0.964}
    assert out["targets"]["aligner_over_vllm_sample_tokens_per_s_at_max_clients"]["met"] is True
    assert out["targets"]["aligner_over_its_hub_best_of_n_requests_per_s"]["met"] is True


def test_faster_best_of_n_at_a_worse_reward_does_not_meet_its_target():
    out = bench_peers.summarize(report(1.8, 1.0, [0.50, 0.51, 0.49], [0.80, 0.81, 0.79]))
    assert out["ratios"]["aligner_over_its_hub_best_of_n_requests_per_s"] == 1.8
    assert out["targets"]["aligner_chosen_reward_not_worse_than_its_hub"]["met"] is False
    assert out["targets"]["aligner_over_its_hub_best_of_n_requests_per_s"]["met"] is False


def test_a_missing_phase_gives_no_ratio_and_no_met_target():
    out = bench_peers.summarize({"best_of_n": {}, "sample": {}})
    assert out["ratios"]["aligner_over_its_hub_best_of_n_requests_per_s"] is None
    assert all(t["met"] is False for t in out["targets"].values())


def test_both_servers_start_on_their_defaults():
    vllm = servers.vllm_command(Path("/m/SmolLM2"), 8100)
    assert vllm[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    # Nothing that changes decoding: no threads, eager mode, batch sizes, dtype or block size.
    flags = {a for a in vllm if a.startswith("--")}
    assert flags == {"--model", "--host", "--port", "--kv-cache-memory-bytes"}
    aligner = servers.aligner_command(Path("/m/SmolLM2"), 8200, 9200, "sqlite:///x.db")
    assert {a for a in aligner if a.startswith("--")} == {
        "--model",
        "--http-port",
        "--grpc-port",
        "--tenant-store",
        "--no-demo-key",
    }


def test_the_servers_environment_drops_tuning_variables(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    env = servers.user_environment()
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in env and "OMP_NUM_THREADS" not in env
    assert env["PATH"]


def test_phase_order_takes_both_phases_once():
    assert phase_order("aligner,vllm") == ["aligner", "vllm"]
    for bad in ("vllm", "vllm,vllm", "vllm,aligner,x"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected the two phases"):
            phase_order(bad)


class FakeJudge:
    """A fake relevance judge (pure logic): the answer's length over 10."""

    def score(self, question, answers):
        return [len(a) / 10 for a in answers]


def test_its_hub_reward_model_scores_each_conversations_last_answer():
    from its_hub.api.types import ChatMessage

    orm = bench_peers.its_hub_reward_model(FakeJudge())
    conversation = [ChatMessage(role="user", content="q"), ChatMessage(role="assistant", content="four")]
    other = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "twelve chars"}]
    assert asyncio.run(orm.ascore([conversation, other])) == [0.4, 1.2]
    assert orm.score(conversation) == 0.4


def test_counts_must_be_positive():
    assert positive("3") == 3
    for bad in ("0", "-1", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive integer"):
            positive(bad)


def test_its_hub_process_reward_model_scores_each_partial_answer_against_the_prompt():
    class FakeJudge:  # a fake relevance judge: records what it was asked
        def __init__(self):
            self.asked = []

        def score(self, question, answers):
            self.asked.append((question, answers))
            return [float(len(a)) for a in answers]

    judge = FakeJudge()
    prm = bench_peers.its_hub_process_reward_model(judge)
    assert prm.score("What is rain?", ["Water", "Water falling"]) == [5.0, 13.0]
    assert judge.asked == [("What is rain?", ["Water", "Water falling"])]


def test_particle_filter_ratios_and_targets_are_reported_beside_best_of_n():
    row = {"requests_per_s": 2.0, "generated_tokens_per_s": 100.0, "chosen_rewards": [0.5, 0.6]}
    slow = {"requests_per_s": 1.0, "generated_tokens_per_s": 80.0, "chosen_rewards": [0.5, 0.6]}
    got = bench_peers.summarize({"particle_filter": {"aligner": row, "its_hub": slow}})
    assert got["ratios"]["aligner_over_its_hub_particle_filter_requests_per_s"] == 2.0
    assert got["targets"]["aligner_over_its_hub_particle_filter_requests_per_s"]["met"] is True
    assert got["targets"]["aligner_over_its_hub_best_of_n_requests_per_s"]["met"] is False  # not measured
