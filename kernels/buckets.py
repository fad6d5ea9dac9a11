"""Fixed (batch, sequence-length) buckets for reward scoring: plain Python, no torch.

Sequences are grouped by the smallest sequence-length bucket that holds them,
split into batches of at most the largest batch bucket, and each batch is
padded up to the next batch bucket. Fixed shapes are what lets the GPU path
replay one captured CUDA graph per bucket; on CPU they bound the number of
distinct shapes. Sequences longer than the largest length bucket form
"oversize" batches, run eagerly at their own length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_SEQ_LENS = (64, 128, 256, 512)


@dataclass(frozen=True)
class BucketSpec:
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    seq_lens: tuple[int, ...] = DEFAULT_SEQ_LENS

    def __post_init__(self):
        for name, values in (("batch_sizes", self.batch_sizes), ("seq_lens", self.seq_lens)):
            if not values or any(v < 1 for v in values) or list(values) != sorted(set(values)):
                raise ValueError(f"{name} must be strictly increasing positive integers, got {values}")

    @property
    def max_batch(self) -> int:
        return self.batch_sizes[-1]

    @property
    def max_seq_len(self) -> int:
        return self.seq_lens[-1]

    def batch_bucket(self, count: int) -> int:
        return next(b for b in self.batch_sizes if b >= count)

    def seq_bucket(self, length: int) -> int | None:
        """Smallest length bucket that holds `length`; None when it is oversize."""
        return next((s for s in self.seq_lens if s >= length), None)

    def shapes(self) -> list[tuple[int, int]]:
        """Every (batch, seq_len) bucket, largest first (the order CUDA graphs are captured in)."""
        return sorted(
            ((b, s) for b in self.batch_sizes for s in self.seq_lens), key=lambda bs: (bs[0] * bs[1], bs), reverse=True
        )


@dataclass(frozen=True)
class Batch:
    """Input positions `indices` padded to (`batch_size`, `seq_len`); `oversize` runs eagerly."""

    indices: tuple[int, ...]
    batch_size: int
    seq_len: int
    oversize: bool = False


def plan_batches(lengths: Sequence[int], spec: BucketSpec) -> list[Batch]:
    """Batches covering every input exactly once, longest buckets first, deterministic."""
    if any(n < 1 for n in lengths):
        raise ValueError("every sequence needs at least one token")
    groups: dict[int, list[int]] = {}
    oversize: list[int] = []
    for i, n in enumerate(lengths):
        bucket = spec.seq_bucket(n)
        if bucket is None:
            oversize.append(i)
        else:
            groups.setdefault(bucket, []).append(i)
    batches: list[Batch] = []
    for seq_len in sorted(groups, reverse=True):
        members = groups[seq_len]
        for start in range(0, len(members), spec.max_batch):
            chunk = tuple(members[start : start + spec.max_batch])
            batches.append(Batch(chunk, spec.batch_bucket(len(chunk)), seq_len))
    # Oversize sequences: no graph exists for them, so pad only to the longest in each chunk.
    oversize.sort(key=lambda i: lengths[i], reverse=True)
    for start in range(0, len(oversize), spec.max_batch):
        chunk = tuple(oversize[start : start + spec.max_batch])
        batches.append(Batch(chunk, len(chunk), max(lengths[i] for i in chunk), oversize=True))
    return batches


def pad_batch(
    sequences: Sequence[Sequence[int]], batch: Batch, pad_id: int, *, left: bool = False
) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and attention mask of `batch`, padded to its bucket.

    Rows beyond the real sequences hold a single attended pad token, so no row
    is fully masked; their results are discarded.
    """
    ids: list[list[int]] = []
    mask: list[list[int]] = []
    rows = [list(sequences[i]) for i in batch.indices]
    rows += [[pad_id]] * (batch.batch_size - len(rows))
    for row in rows:
        padding = batch.seq_len - len(row)
        if padding < 0:
            raise ValueError(f"sequence of {len(row)} tokens does not fit a {batch.seq_len}-token bucket")
        if left:
            ids.append([pad_id] * padding + row)
            mask.append([0] * padding + [1] * len(row))
        else:
            ids.append(row + [pad_id] * padding)
            mask.append([1] * len(row) + [0] * padding)
    return ids, mask
