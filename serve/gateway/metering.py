"""`UsageMeter`: each replica's usage counts, batched in memory and added to the tenant store.

Every finished request of an admitted tenant (answered, failed, refused or cancelled) is
counted in memory under (tenant, UTC hour, status): no database write per request. A failed request
is counted with what its search had generated (the replica's error carries it). A cancelled one's
gateway never hears from the replica again, so the model replica meters its tokens itself, with a
meter of its own (`requests=0`: the ingress counts the request, nothing is counted twice). Every
`usage_flush_s` the counts are swapped out and added to the store in one transaction of atomic
upserts (aligner/tenants/usage_table.py), so replicas on any number of nodes add up. A flush that
fails keeps its counts for the next one; stopping the replica flushes what is left. A replica that
dies without stopping loses at most the counts of one interval (docs/tenancy.md, Metering).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from aligner.contract import Usage
from aligner.tenants import TenantStore, UsageCounts, UsageKey, hour_of
from aligner.tenants.records import now

log = logging.getLogger("aligner.serve")


def counts_of(usage: Usage | None, verdict: str | None, requests: int = 1) -> UsageCounts:
    """One request's counts: its usage when it was answered, or what it had cost when it failed or was
    cancelled after engine work (None: nothing, refused before any); `requests=0` for tokens only."""
    if usage is None:
        return UsageCounts(requests=requests)
    counts = UsageCounts(
        requests=requests,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        generated_tokens=usage.generated_tokens,
        candidate_tokens=usage.candidate_tokens,
        prefill_tokens=usage.prefill_tokens,
        reward_calls=usage.reward_calls,
        engine_requests=usage.engine_requests,
    )
    if verdict is not None:
        name = f"safety_{verdict}"
        setattr(counts, name, getattr(counts, name) + 1)
    return counts


class UsageMeter:
    """Counts finished requests; `start()` flushes them to the store every `interval_s`, `close()` at the end."""

    def __init__(self, store: TenantStore, interval_s: float):
        self.store = store
        self.interval_s = interval_s
        self.pending: dict[UsageKey, UsageCounts] = {}
        self._flushing = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None

    def record(
        self,
        tenant: str,
        status: str,
        usage: Usage | None = None,
        verdict: str | None = None,
        at: datetime | None = None,
        requests: int = 1,
    ) -> None:
        """Count one finished request (synchronous and in memory: it is on every request's path).
        `requests=0`: only the tokens of a request counted elsewhere (a model replica meters what a
        cancelled search generated; the ingress counts the request)."""
        key = UsageKey(tenant, hour_of(at or now()), status)
        self.pending.setdefault(key, UsageCounts()).add(counts_of(usage, verdict, requests))

    async def flush(self) -> int:
        """Add the pending counts to the store; the rows written. On a store error they stay pending."""
        async with self._flushing:
            batch, self.pending = self.pending, {}
            if not batch:
                return 0
            try:
                await asyncio.to_thread(self.store.add_usage, batch)
            except Exception as exc:
                for key, counts in batch.items():  # kept, in front of what arrived meanwhile
                    self.pending.setdefault(key, UsageCounts()).add(counts)
                reason = self.store.reason(exc)  # a database's message may quote the URL's user-info
                log.warning(
                    "usage metering: cannot write to the tenant store (%s); keeping %d rows", reason, len(batch)
                )
                return 0
            return len(batch)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        # Ended by `close` between flushes, never cancelled inside one: a write in its thread goes on
        # when the awaiting task is cancelled, so a cancelled flush could not tell whether it was stored.
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)
            await self.flush()

    async def close(self) -> None:
        """Stop the flush loop and write what is left (the replica is stopping)."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush()
