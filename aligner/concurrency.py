"""Running sibling coroutines so that none outlives a failed sibling."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def gather_all(*coroutines: Coroutine[Any, Any, T]) -> list[T]:
    """Results of every coroutine, in order. When one fails, the others are cancelled (which aborts
    their engine requests) before its exception is raised; `asyncio.gather` would leave them running."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks: list[asyncio.Task[T]] = [group.create_task(c) for c in coroutines]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]
