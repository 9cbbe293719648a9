"""The daemon's event stream: incidents, state changes and job progress, to every
listener of ``GET /api/events`` (server-sent events) as they happen.

Each subscriber gets a bounded queue; a slow one loses its oldest events rather than
slowing the daemon (it can always re-read ``/api/status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

QUEUE = 256


@dataclass(frozen=True)
class Event:
    kind: str  # state, incident, job, progress, request
    data: dict[str, Any]
    at: float

    def sse(self) -> str:
        """One server-sent event: ``event: KIND`` and ``data: JSON``."""
        body = json.dumps({**self.data, "at": self.at}, default=str)
        return f"event: {self.kind}\ndata: {body}\n\n"


class EventBus:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Event]] = set()

    def publish(self, kind: str, **data: Any) -> None:
        event = Event(kind, data, time.time())
        for queue in list(self._queues):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    @contextlib.contextmanager
    def subscription(self) -> Iterator[asyncio.Queue[Event]]:
        queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

    async def stream(self, keepalive_s: float = 15.0) -> AsyncIterator[str]:
        """Server-sent events for one client, with a comment line as keep-alive."""
        with self.subscription() as queue:
            yield ": connected\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), keepalive_s)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield event.sse()
