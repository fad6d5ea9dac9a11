import random

import pytest

from kernels.buckets import Batch, BucketSpec, pad_batch, plan_batches

SPEC = BucketSpec(batch_sizes=(1, 2, 4, 8), seq_lens=(8, 16, 32))


def test_every_input_is_planned_exactly_once_in_a_fitting_bucket():
    rng = random.Random(0)
    lengths = [rng.randint(1, 40) for _ in range(57)]
    batches = plan_batches(lengths, SPEC)
    seen = sorted(i for b in batches for i in b.indices)
    assert seen == list(range(len(lengths)))
    for b in batches:
        assert len(b.indices) <= b.batch_size
        assert all(lengths[i] <= b.seq_len for i in b.indices)
        if not b.oversize:
            assert b.batch_size in SPEC.batch_sizes and b.seq_len in SPEC.seq_lens
            assert b.batch_size == SPEC.batch_bucket(len(b.indices))
        else:
            assert b.seq_len > SPEC.max_seq_len and b.seq_len == max(lengths[i] for i in b.indices)


def test_sequences_go_to_the_smallest_length_bucket_and_batches_round_up():
    batches = plan_batches([3, 9, 8, 17, 5], SPEC)
    assert batches == [Batch((3,), 1, 32), Batch((1,), 1, 16), Batch((0, 2, 4), 4, 8)]


def test_large_groups_split_at_the_largest_batch_bucket():
    batches = plan_batches([4] * 11, SPEC)
    assert [(len(b.indices), b.batch_size) for b in batches] == [(8, 8), (3, 4)]


def test_oversize_sequences_run_at_their_own_length():
    (batch,) = plan_batches([40, 33], SPEC)
    assert batch == Batch((0, 1), 2, 40, oversize=True)


def test_plan_is_deterministic_and_rejects_empty_sequences():
    lengths = [5, 12, 1, 30, 7, 7]
    assert plan_batches(lengths, SPEC) == plan_batches(list(lengths), SPEC)
    with pytest.raises(ValueError):
        plan_batches([3, 0], SPEC)


def test_right_padding():
    ids, mask = pad_batch([[5, 6, 7], [8]], Batch((0, 1), 4, 8), pad_id=0)
    assert ids[0] == [5, 6, 7, 0, 0, 0, 0, 0] and mask[0] == [1, 1, 1, 0, 0, 0, 0, 0]
    assert ids[1] == [8, 0, 0, 0, 0, 0, 0, 0]
    assert len(ids) == 4 and all(sum(m) >= 1 for m in mask)


def test_left_padding():
    ids, mask = pad_batch([[5, 6, 7]], Batch((0,), 1, 8), pad_id=9, left=True)
    assert ids == [[9, 9, 9, 9, 9, 5, 6, 7]] and mask == [[0, 0, 0, 0, 0, 1, 1, 1]]


def test_capture_order_is_largest_first():
    shapes = SPEC.shapes()
    assert shapes[0] == (8, 32) and shapes[-1] == (1, 8)
    assert len(shapes) == len(SPEC.batch_sizes) * len(SPEC.seq_lens)


@pytest.mark.parametrize("bad", [(), (0, 1), (4, 2), (2, 2)])
def test_bucket_spec_validation(bad):
    with pytest.raises(ValueError):
        BucketSpec(batch_sizes=bad)
