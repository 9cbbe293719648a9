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
from typing import Any, TypeVar

T = TypeVar("T")

# How long a cancelled task may take to end before it is cancelled again.
RECANCEL_S = 1.0


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


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel the tasks and wait until every one has ended, cancelling again those still
    running after ``RECANCEL_S``. A cancellation can be lost: Python 3.11's
    ``asyncio.wait_for``, which asyncssh's ``run`` uses, returns the command's result
    instead when both arrive together, and a loop that lost it (a progress sampler, the
    lease's renewal) would go on forever and hold whoever waits for it (a screen hung
    there). A cancellation of the caller's own task while it waits here still ends it
    (Ctrl-C, `down`). What the tasks raised on the way out is retrieved, not raised."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
    for task in tasks:
        if not task.cancelled():
            task.exception()
