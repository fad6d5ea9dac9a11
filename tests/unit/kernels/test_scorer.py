"""The CUDA-graph plan on CPU: capture at start-up only, largest first, one pool, serialised per process.

A fake graph backend stands in for torch.cuda (named as a fake): it records what is captured, into
which pool, by which thread and when, and "replays" by running the forward eagerly.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from kernels.buckets import BucketSpec
from kernels.scorer import BatchedScorer

SPEC = BucketSpec(batch_sizes=(1, 2, 4), seq_lens=(8, 16))


def forward(ids, mask, positions):
    return (ids * mask).sum(-1, keepdim=True).float()


class FakeGraph:
    def __init__(self, forward, backend):
        self.forward = forward
        self.backend = backend

    def run(self, ids, mask, positions):
        self.backend.replays += 1
        return self.forward(ids, mask, positions)


class FakeGraphBackend:
    def __init__(self, capture_seconds=0.0, log=None):
        self.capture_seconds = capture_seconds
        self.pools = 0
        self.captures: list[tuple[tuple[int, int], int]] = []  # (shape, pool)
        self.replays = 0
        self.log = log if log is not None else []

    def new_pool(self, device):
        self.pools += 1
        return self.pools

    def capture(self, forward, batch, seq_len, device, pool):
        self.log.append(("start", threading.get_ident()))
        time.sleep(self.capture_seconds)
        self.captures.append(((batch, seq_len), pool))
        self.log.append(("end", threading.get_ident()))
        return FakeGraph(forward, self)

    def synchronize(self, device):
        pass


def scorer(backend):
    return BatchedScorer(forward, num_outputs=1, pad_id=0, spec=SPEC, cuda_graphs=True, graph_backend=backend)


def test_every_bucket_is_captured_once_largest_first_into_one_pool():
    backend = FakeGraphBackend()
    s = scorer(backend)
    assert not s.captured
    s.capture()
    s.capture()  # idempotent
    shapes = [shape for shape, _ in backend.captures]
    assert shapes == SPEC.shapes() and shapes[0] == (4, 16)
    assert {pool for _, pool in backend.captures} == {1} and backend.pools == 1
    assert s.captured and s.stats.graph_captures == len(SPEC.shapes())


def test_requests_replay_graphs_and_never_capture():
    backend = FakeGraphBackend()
    s = scorer(backend)
    sequences = [[1, 2, 3], [4, 5], [6] * 12]
    eager = BatchedScorer(forward, num_outputs=1, pad_id=0, spec=SPEC, cuda_graphs=False)
    # Before start-up capture: every batch runs eagerly; nothing is captured inside a request.
    np.testing.assert_array_equal(s.score(sequences), eager.score(sequences))
    assert backend.captures == [] and s.stats.eager_runs == s.stats.batches and s.stats.graph_replays == 0
    s.capture()
    before = len(backend.captures)
    np.testing.assert_array_equal(s.score(sequences), eager.score(sequences))
    assert len(backend.captures) == before
    assert s.stats.graph_replays == backend.replays == 2  # one batch per length bucket


def test_oversize_batches_run_eagerly_after_capture():
    backend = FakeGraphBackend()
    s = scorer(backend)
    s.capture()
    s.score([[1] * 40])
    assert s.stats.eager_runs == 1 and backend.replays == 0


def test_capture_is_serialised_across_scorers_in_the_process():
    log: list[tuple[str, int]] = []
    scorers = [scorer(FakeGraphBackend(capture_seconds=0.005, log=log)) for _ in range(3)]
    threads = [threading.Thread(target=s.capture) for s in scorers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(log) == 2 * 3 * len(SPEC.shapes())
    # No capture starts while another one is running, whichever scorer or thread it belongs to.
    for first, second in zip(log[::2], log[1::2]):
        assert first[0] == "start" and second[0] == "end" and first[1] == second[1]


def test_the_cpu_default_has_no_graphs():
    s = BatchedScorer(forward, num_outputs=1, pad_id=0, spec=SPEC)
    s.capture()
    assert s.captured and s.stats.graph_captures == 0
    assert s.score([[1, 2]]).tolist() == [[3.0]] and s.stats.eager_runs == 1
