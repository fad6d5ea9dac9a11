"""Batched reward scoring: bucket, pad, one forward pass per bucket, slice back in input order.

On CUDA every bucket's forward pass is captured once, at start-up, as a CUDA
graph (static input buffers, warm-up on a side stream, largest bucket first so
the smaller graphs share its memory pool) and replayed; batches above the
largest bucket, and any bucket before `capture()` ran, run eagerly. On CPU
the same buckets group the sequences, but each batch runs eagerly at its real
size (padded only to its longest member), since eager execution gains nothing
from fixed shapes and padding is pure extra compute.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass, replace
from typing import Protocol

import numpy as np
import torch

from kernels.buckets import Batch, BucketSpec, pad_batch, plan_batches

log = logging.getLogger(__name__)

# forward(input_ids [B,T], attention_mask [B,T], position_ids [B,T]) -> scores [B,K]
Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# Whether everyone waiting for the scoring running in this context has gone (deadline passed,
# client disconnected). A thread cannot be interrupted, so `score` asks between batches and
# gives up, releasing the scorer for other requests. Callers set it around their worker thread.
SCORING_ABANDONED: ContextVar[Callable[[], bool]] = ContextVar("scoring_abandoned", default=lambda: False)


class ScoringAbandoned(Exception):
    """Raised by `BatchedScorer.score` when SCORING_ABANDONED says nobody waits for the result."""


@dataclass
class ScorerStats:
    calls: int = 0
    sequences: int = 0
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    graph_replays: int = 0
    eager_runs: int = 0
    graph_captures: int = 0

    @property
    def padding_waste(self) -> float:
        return 0.0 if not self.padded_tokens else 1.0 - self.real_tokens / self.padded_tokens

    def to_dict(self) -> dict:
        return {**asdict(self), "padding_waste": round(self.padding_waste, 4)}


class CapturedGraph(Protocol):
    """What a graph backend's `capture` returns: replays one bucket's forward pass."""

    def run(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor: ...


class _Graph:
    """One captured bucket: static inputs in, static output out."""

    def __init__(self, forward: Forward, batch: int, seq_len: int, device: torch.device, pool, stream):
        self.input_ids = torch.zeros(batch, seq_len, dtype=torch.long, device=device)
        self.attention_mask = torch.ones(batch, seq_len, dtype=torch.long, device=device)
        self.position_ids = torch.arange(seq_len, device=device).expand(batch, seq_len).contiguous()
        args = (self.input_ids, self.attention_mask, self.position_ids)
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up: lazy inits and autotuning happen outside the capture
                forward(*args)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool, stream=stream):
            self.output = forward(*args)

    def run(self, ids, mask, positions) -> torch.Tensor:
        self.input_ids.copy_(ids)
        self.attention_mask.copy_(mask)
        self.position_ids.copy_(positions)
        self.graph.replay()
        return self.output


class CudaGraphs:
    """The real graph backend: a memory pool and a side stream per scorer, graphs captured into them."""

    def new_pool(self, device: torch.device):
        return torch.cuda.graph_pool_handle(), torch.cuda.Stream(device=device)

    def capture(self, forward: Forward, batch: int, seq_len: int, device: torch.device, pool) -> _Graph:
        handle, stream = pool
        return _Graph(forward, batch, seq_len, device, handle, stream)

    def synchronize(self, device: torch.device) -> None:
        torch.cuda.synchronize(device)


# torch's graph capture is process-global (one capture at a time, and work on other streams
# can invalidate it), so every scorer in the process captures under this lock.
CAPTURE_LOCK = threading.Lock()


class BatchedScorer:
    """Scores token-id sequences with `forward`, batched into fixed buckets."""

    def __init__(
        self,
        forward: Forward,
        *,
        num_outputs: int,
        pad_id: int,
        device: torch.device | str = "cpu",
        spec: BucketSpec = BucketSpec(),
        left_padding: bool = False,
        cuda_graphs: bool | None = None,
        graph_backend=None,
    ):
        self.forward = forward
        self.num_outputs = num_outputs
        self.pad_id = pad_id
        self.device = torch.device(device)
        self.spec = spec
        self.left_padding = left_padding
        self.use_graphs = (self.device.type == "cuda") if cuda_graphs is None else cuda_graphs
        if self.use_graphs and self.device.type != "cuda" and graph_backend is None:
            raise ValueError("CUDA graphs need a CUDA device")
        # Injected so the capture plan and accounting are testable without a GPU.
        self.graphs = graph_backend or CudaGraphs()
        self.stats = ScorerStats()
        self._graphs: dict[tuple[int, int], CapturedGraph] = {}
        self._pool = None
        self._lock = threading.RLock()

    def capture(self) -> None:
        """Capture every bucket's graph, largest first into one memory pool, so the smaller graphs
        reuse the largest one's memory. Call once at start-up: `score` never captures, so no
        request pays for (or races with) a capture; a bucket without a graph runs eagerly."""
        if not self.use_graphs:
            return
        with CAPTURE_LOCK, self._lock, torch.inference_mode():
            if self._pool is None:
                self._pool = self.graphs.new_pool(self.device)
            for shape in self.spec.shapes():  # largest first
                if shape not in self._graphs:
                    self._graphs[shape] = self.graphs.capture(self.forward, *shape, self.device, self._pool)
                    self.stats.graph_captures += 1
            self.graphs.synchronize(self.device)

    @property
    def captured(self) -> bool:
        return not self.use_graphs or len(self._graphs) == len(self.spec.shapes())

    def score(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """float32 array [len(sequences), num_outputs], row i for sequences[i]."""
        out = np.zeros((len(sequences), self.num_outputs), dtype=np.float32)
        if not sequences:
            return out
        lengths = [len(s) for s in sequences]
        abandoned = SCORING_ABANDONED.get()
        with self._lock, torch.inference_mode():
            self.stats.calls += 1
            self.stats.sequences += len(sequences)
            for batch in plan_batches(lengths, self.spec):
                if abandoned():
                    raise ScoringAbandoned(f"nobody waits for the remaining {len(sequences)} sequences' scores")
                if not self.use_graphs:
                    # Eager runs need no fixed shapes: keep the bucket's grouping, drop its padding.
                    batch = replace(
                        batch, batch_size=len(batch.indices), seq_len=max(lengths[i] for i in batch.indices)
                    )
                rows = self._run(sequences, batch)
                out[list(batch.indices)] = rows[: len(batch.indices)]
                self.stats.batches += 1
                self.stats.real_tokens += sum(lengths[i] for i in batch.indices)
                self.stats.padded_tokens += batch.batch_size * batch.seq_len
        return out

    def _run(self, sequences: Sequence[Sequence[int]], batch: Batch) -> np.ndarray:
        ids, mask = pad_batch(sequences, batch, self.pad_id, left=self.left_padding)
        ids_t = torch.tensor(ids, dtype=torch.long, device=self.device)
        mask_t = torch.tensor(mask, dtype=torch.long, device=self.device)
        positions = (mask_t.cumsum(-1) - 1).clamp(min=0)
        graph = self._graphs.get((batch.batch_size, batch.seq_len)) if self.use_graphs and not batch.oversize else None
        if graph is not None:
            result = graph.run(ids_t, mask_t, positions)
            self.stats.graph_replays += 1
        else:
            result = self.forward(ids_t, mask_t, positions)
            self.stats.eager_runs += 1
        return result.float().cpu().numpy()
