"""Cross-request scoring micro-batcher: concurrent `score` calls on one model share one `score_many` call.

Many requests run on one event loop; each scores its candidates with its own
`score(conversation, responses)`. `ScoringBatcher` queues those calls per
event loop and hands them to the model together:

- a batch closes `window_ms` after its first call arrived, or as soon as the
  queue holds `max_batch_sequences` responses (a single bigger call goes alone);
- one batch per model runs at a time, so calls arriving while it runs queue up
  and go together in the next one (with `window_ms=0` that, and calls made in
  the same loop iteration, is all that is merged: nothing ever waits);
- the merged batch runs `model.score_many(items)` in a worker thread
  (`asyncio.to_thread`), so the event loop never blocks; each caller then gets
  its own rows, in order;
- a caller cancelled while queued is dropped, one cancelled while its batch
  runs just does not get its rows: the others are unaffected. Once the callers
  that left hold most of a running pass's sequences, the pass stops at the
  scorer's next batch (`SCORING_ABANDONED`) and the calls still waiting are
  scored again without them, in a pass that runs to its end while any of them
  waits: a tenant that gives up a large search does not keep another tenant's
  one candidate waiting behind its sequences, and no call is restarted twice;
- a failure is isolated to the calls that cause it: when a merged batch's
  `score_many` raises (or returns the wrong number of results), its calls are
  rescored apart, halving the batch until each failing call is alone, so that
  call's caller gets the exception and every other caller its rows (one tenant's
  conversation never fails another's request). A batch that succeeds costs one
  pass, as before; one bad call among k costs about 1 + 2·log2(k) passes. The
  rescoring of one batch is capped at 4·⌈log2 k⌉ passes (two bad calls isolated
  in full): a model that fails every call, one that is down, would otherwise be
  run 2k − 1 times; past the cap the calls not yet alone get their group's error.

The per-loop state is created on first use, so a batcher may be built outside
any loop and used from several loops (tests run engines on a background thread's
loop). Observers (`on_batch`) run on the event loop thread after each pass
(a rescoring that isolates a failure is a pass of its own).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aligner.contract import ChatMessage
from aligner.rewards.base import BlockingRewardModel, Objective, RewardError, RewardModel, ScoreItem
from kernels.scorer import SCORING_ABANDONED, ScoringAbandoned

log = logging.getLogger(__name__)

# observer(model label, requests merged, sequences scored, seconds score_many took as seen from the loop)
BatchObserver = Callable[[str, int, int, float], None]


@dataclass(eq=False)
class _Call:
    item: ScoreItem
    future: asyncio.Future
    arrived: float  # loop.time()

    @property
    def sequences(self) -> int:
        return len(self.item[1])


@dataclass(eq=False)
class _LoopState:
    """What the callers of one model on one event loop share."""

    pending: deque[_Call] = field(default_factory=deque)
    drainer: asyncio.Task | None = None  # the task forming and running batches while calls are queued
    wake: asyncio.Future | None = None  # resolved to close the waiting batch early (it is full)

    def queued_sequences(self) -> int:
        return sum(call.sequences for call in self.pending)

    def prune(self) -> None:
        """Drop calls whose callers were cancelled."""
        if any(call.future.done() for call in self.pending):
            self.pending = deque(call for call in self.pending if not call.future.done())


def _all_gone(calls: list[_Call]) -> bool:
    return all(call.future.done() for call in calls)


def _mostly_gone(calls: list[_Call]) -> bool:
    """The callers that left hold more than half of the calls' sequences."""
    gone = sum(call.sequences for call in calls if call.future.done())
    return 2 * gone > sum(call.sequences for call in calls)


class _ScoringWrapper(RewardModel):
    """What the catalog scores through instead of a `BlockingRewardModel`: same objectives, and
    every scoring pass reported to `on_batch`."""

    def __init__(self, model: BlockingRewardModel, on_batch: BatchObserver | None):
        self.model = model
        self.on_batch = on_batch

    @property
    def objectives(self) -> tuple[Objective, ...]:  # type: ignore[override]
        return self.model.objectives

    @property
    def label(self) -> str:
        return self.model.label

    def batched_scorers(self) -> Sequence[Any]:
        return self.model.batched_scorers()

    def _report(self, requests: int, sequences: int, seconds: float) -> None:
        if self.on_batch is not None:
            try:
                self.on_batch(self.label, requests, sequences, seconds)
            except Exception:
                log.exception("scoring batch observer failed")


class ScoringBatcher(_ScoringWrapper):
    """A `BlockingRewardModel` whose concurrent `score` calls are merged into `score_many` batches."""

    def __init__(
        self,
        model: BlockingRewardModel,
        *,
        window_ms: float = 2.0,
        max_batch_sequences: int = 256,
        on_batch: BatchObserver | None = None,
    ):
        if not window_ms >= 0:
            raise ValueError(f"window_ms must be >= 0, got {window_ms}")
        if max_batch_sequences < 1:
            raise ValueError(f"max_batch_sequences must be >= 1, got {max_batch_sequences}")
        super().__init__(model, on_batch)
        self.window = window_ms / 1000.0
        self.max_batch_sequences = max_batch_sequences
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self._states_lock = threading.Lock()

    async def score(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray:
        if not responses:
            return np.zeros((0, len(self.objectives)))
        loop = asyncio.get_running_loop()
        state = self._state(loop)
        call = _Call((tuple(conversation), tuple(responses)), loop.create_future(), loop.time())
        state.pending.append(call)
        if state.drainer is None:
            state.drainer = loop.create_task(self._drain(state, loop), name=f"scoring-batcher[{self.label}]")
        elif state.wake is not None and not state.wake.done() and state.queued_sequences() >= self.max_batch_sequences:
            state.wake.set_result(None)
        # Cancelling the caller cancels `call.future`; the drainer then skips it.
        return await call.future

    def _state(self, loop: asyncio.AbstractEventLoop) -> _LoopState:
        with self._states_lock:
            state = self._states.get(loop)
            if state is None:
                for closed in [old for old in self._states if old.is_closed()]:
                    del self._states[closed]
                state = self._states[loop] = _LoopState()
            return state

    async def _drain(self, state: _LoopState, loop: asyncio.AbstractEventLoop) -> None:
        """Form and run batches until the queue is empty (runs as one task per loop while calls are queued)."""
        batch: list[_Call] = []
        try:
            while True:
                state.prune()
                if not state.pending:
                    return
                delay = state.pending[0].arrived + self.window - loop.time()
                if delay > 0 and state.queued_sequences() < self.max_batch_sequences:
                    state.wake = loop.create_future()
                    try:
                        await asyncio.wait([state.wake], timeout=delay)
                    finally:
                        state.wake = None
                    state.prune()
                batch = self._take(state)
                if batch:
                    await self._run(batch)
                batch = []
        except BaseException:
            # The drainer itself was cancelled (the loop is shutting down): nobody will answer these calls.
            for call in [*batch, *state.pending]:
                call.future.cancel()
            state.pending.clear()
            raise
        finally:
            state.drainer = None

    def _take(self, state: _LoopState) -> list[_Call]:
        """The oldest calls that fit in `max_batch_sequences` (at least one)."""
        batch: list[_Call] = []
        sequences = 0
        while state.pending and (not batch or sequences + state.pending[0].sequences <= self.max_batch_sequences):
            call = state.pending.popleft()
            batch.append(call)
            sequences += call.sequences
        return batch

    async def _run(self, batch: list[_Call]) -> None:
        """Score `batch` in one pass; if that fails, find the failing calls (`_isolate`)."""
        error = await self._pass(batch, abandon=_mostly_gone)
        if isinstance(error, ScoringAbandoned):
            # The callers that left held most of it: the others once more, to the end, without them.
            error = await self._pass(batch)
        if error is not None and any(not call.future.done() for call in batch):
            if len(batch) > 1:
                # The type only: the message may quote a request's text; each failing caller gets it whole.
                log.warning(
                    "reward model %r: a merged batch of %d requests failed (%s); rescoring them apart",
                    self.label,
                    len(batch),
                    type(error).__name__,
                )
            await self._isolate(batch, error, [4 * math.ceil(math.log2(max(2, len(batch))))])

    async def _isolate(self, group: list[_Call], error: Exception, passes_left: list[int]) -> None:
        """`group` failed with `error` as one pass: a call alone gets the error, a larger group is halved
        and each half rescored, so only the calls that fail on their own get an exception. Once the
        batch's `passes_left` are spent, every call of a failing group gets its error."""
        live = [call for call in group if not call.future.done()]
        if len(live) == 1:
            live[0].future.set_exception(error)  # `error` came from a pass of this call alone
            return
        if live and passes_left[0] <= 0:
            self._fail_unisolated(live, error)
            return
        half = len(live) // 2
        for part in (live[:half], live[half:]):
            if passes_left[0] <= 0:  # spent in the first half: the second is not rescored either
                self._fail_unisolated([call for call in part if not call.future.done()], error)
                continue
            passes_left[0] -= 1
            part_error = await self._pass(part)
            if part_error is not None:
                await self._isolate(part, part_error, passes_left)

    def _fail_unisolated(self, calls: list[_Call], error: Exception) -> None:
        """Calls the pass cap left without a pass of their own: a generic error, never `error`, whose
        message may quote another request's conversation."""
        for call in calls:
            call.future.set_exception(
                RewardError(f"reward model {self.label!r} failed every pass of a merged batch ({type(error).__name__})")
            )

    async def _pass(self, group: list[_Call], abandon: Callable[[list[_Call]], bool] = _all_gone) -> Exception | None:
        """One `score_many` over the calls of `group` still waiting: each gets its rows, or nothing
        happens to them and the exception is returned. Every pass is reported to `on_batch`."""
        live = [call for call in group if not call.future.done()]
        if not live:
            return None
        items = [call.item for call in live]
        started = time.perf_counter()
        # The worker thread inherits this: once `abandon` says so, it stops between batches.
        abandoned = SCORING_ABANDONED.set(lambda: abandon(live))
        error: Exception | None = None
        try:
            rows = await asyncio.to_thread(self.model.score_many, items)
            if len(rows) != len(items):
                raise RewardError(f"reward model {self.label!r} returned {len(rows)} results for {len(items)} requests")
        except Exception as exc:
            error = exc
        else:
            for call, scores in zip(live, rows):
                if not call.future.done():
                    call.future.set_result(np.asarray(scores, dtype=float))
        finally:
            SCORING_ABANDONED.reset(abandoned)
        self._report(len(live), sum(call.sequences for call in live), time.perf_counter() - started)
        return error


class UnbatchedScorer(_ScoringWrapper):
    """A `BlockingRewardModel` scored one call at a time, each in its own worker thread.

    What the catalog uses when cross-request batching is off: every call is its
    own batch of one request, reported to `on_batch` like a merged one, so the
    batch metrics mean the same with and without the batcher.
    """

    def __init__(self, model: BlockingRewardModel, *, on_batch: BatchObserver | None = None):
        super().__init__(model, on_batch)

    async def score(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray:
        if not responses:
            return np.zeros((0, len(self.objectives)))
        started = time.perf_counter()
        gone = threading.Event()
        abandoned = SCORING_ABANDONED.set(gone.is_set)
        try:
            return await asyncio.to_thread(self.model.score_now, conversation, responses)
        except asyncio.CancelledError:
            gone.set()  # the worker thread stops between batches
            raise
        finally:
            SCORING_ABANDONED.reset(abandoned)
            self._report(1, len(responses), time.perf_counter() - started)
