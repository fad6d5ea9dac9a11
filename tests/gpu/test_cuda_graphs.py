"""CUDA-graph scoring equals eager scoring; graphs are captured once per bucket, at start-up (skipped without CUDA)."""

import random

import numpy as np
import pytest
import torch

from aligner.bench.scoring import build_model
from aligner.rewards.hf import pooled_forward
from kernels.buckets import BucketSpec
from kernels.scorer import BatchedScorer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

SPEC = BucketSpec(batch_sizes=(1, 2, 4, 8), seq_lens=(16, 32, 64))


@pytest.fixture(scope="module")
def forward():
    model = build_model("tiny", "cuda").float()
    return pooled_forward(model, pad_id=2)


def sequences_for(batch, seq_len, rng):
    return [
        [rng.randrange(3, 40000) for _ in range(rng.randint(max(1, seq_len // 2 + 1), seq_len))] for _ in range(batch)
    ]


def test_graph_replay_equals_eager_for_every_bucket(forward):
    eager = BatchedScorer(forward, num_outputs=3, pad_id=2, device="cuda", spec=SPEC, cuda_graphs=False)
    graphs = BatchedScorer(forward, num_outputs=3, pad_id=2, device="cuda", spec=SPEC, cuda_graphs=True)
    graphs.capture()
    assert graphs.stats.graph_captures == len(SPEC.shapes())
    rng = random.Random(0)
    for batch, seq_len in SPEC.shapes():
        sequences = sequences_for(batch, seq_len, rng)
        np.testing.assert_allclose(graphs.score(sequences), eager.score(sequences), atol=1e-4, rtol=1e-4)
    assert graphs.stats.graph_replays == graphs.stats.batches and graphs.stats.eager_runs == 0


def test_requests_replay_the_start_up_graphs_without_recapture(forward):
    scorer = BatchedScorer(forward, num_outputs=3, pad_id=2, device="cuda", spec=SPEC, cuda_graphs=True)
    scorer.score(sequences_for(3, 30, random.Random(0)))
    assert scorer.stats.graph_captures == 0 and scorer.stats.eager_runs == 1  # nothing captured in a request
    scorer.capture()
    rng = random.Random(1)
    for _ in range(5):
        scorer.score(sequences_for(3, 30, rng))
    assert scorer.stats.graph_captures == len(SPEC.shapes())
    assert scorer.stats.graph_replays == 5


def test_oversize_batches_run_eagerly(forward):
    scorer = BatchedScorer(forward, num_outputs=3, pad_id=2, device="cuda", spec=SPEC, cuda_graphs=True)
    eager = BatchedScorer(forward, num_outputs=3, pad_id=2, device="cuda", spec=SPEC, cuda_graphs=False)
    scorer.capture()
    sequences = sequences_for(3, 100, random.Random(2))
    np.testing.assert_allclose(scorer.score(sequences), eager.score(sequences), atol=1e-4, rtol=1e-4)
    assert scorer.stats.eager_runs >= 1 and scorer.stats.graph_replays == 0
