"""What the front door saw of each request: tokens, time to first token and speed, as
rolling figures for the dashboard (``GET /api/requests``) and Prometheus.

The numbers come from llama-server's own accounting (``timings`` of ``/completion`` and
the OpenAI routes' ``usage`` and ``timings``) where it reports them, else from the
front door's clock; the last ``KEEP`` requests are kept in memory.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

KEEP = 500


class RequestRecord(BaseModel):
    at: float  # when it ended
    route: str  # /v1/chat/completions ...
    status: int  # the HTTP status the client got
    stream: bool
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None  # time to the first token (streamed), as the client saw it
    duration_s: float
    pp_tps: float | None = None  # from llama-server's timings
    tg_tps: float | None = None
    queued_s: float = 0.0  # waited at the front door while the cluster was not serving
    error: str | None = None


class Usage:
    def __init__(self, keep: int = KEEP) -> None:
        self.records: deque[RequestRecord] = deque(maxlen=keep)
        self.started = time.time()

    def add(self, record: RequestRecord) -> None:
        self.records.append(record)

    def recent(self, limit: int = 200) -> list[RequestRecord]:
        return list(self.records)[-limit:]


def figures(body: Mapping[str, Any]) -> dict[str, Any]:
    """Tokens and rates from a llama-server answer (or a final stream chunk): its
    ``timings`` (prompt_n, predicted_n, *_per_second) and the OpenAI ``usage``."""
    raw_timings, raw_usage = body.get("timings"), body.get("usage")
    timings: Mapping[str, Any] = raw_timings if isinstance(raw_timings, Mapping) else {}
    usage: Mapping[str, Any] = raw_usage if isinstance(raw_usage, Mapping) else {}
    found: dict[str, Any] = {}
    prompt = usage.get("prompt_tokens", timings.get("prompt_n"))
    completion = usage.get("completion_tokens", timings.get("predicted_n"))
    if isinstance(prompt, int):
        found["prompt_tokens"] = prompt
    if isinstance(completion, int):
        found["completion_tokens"] = completion
    for key, name in (("pp_tps", "prompt_per_second"), ("tg_tps", "predicted_per_second")):
        value = timings.get(name)
        if isinstance(value, int | float):
            found[key] = float(value)
    return found
