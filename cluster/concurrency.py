"""Structured concurrency for per-host work: tasks live in a group that owns them.

``together`` runs awaitables in an ``asyncio.TaskGroup``: when one fails, its siblings are
cancelled (a host whose rpc-server failed to start does not leave the others polling for
their banners), every task is finished before it returns, and the first failure is raised
as itself, not wrapped in an ``ExceptionGroup``, so callers keep catching our own error
types. Per-host operations that must report every host (``down``, ``status``, ``health``)
catch a host's ``ClusterError`` inside its task and return it as that host's result
(``HostPool.each``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


def first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception of a group, looking inside nested groups."""
    first = group.exceptions[0]
    return first_failure(first) if isinstance(first, BaseExceptionGroup) else first


async def together(*awaitables: Awaitable[T]) -> list[T]:
    """Run concurrently; results in order. The first failure cancels the rest and is
    raised as it is."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_wrap(awaitable)) for awaitable in awaitables]
    except BaseExceptionGroup as failed:
        raise first_failure(failed) from None
    return [task.result() for task in tasks]


async def _wrap(awaitable: Awaitable[T]) -> T:
    return await awaitable
