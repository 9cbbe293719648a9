"""One streamed, measured llama-server request (``POST /completion`` with ``"stream": true``).

The server answers Server-Sent Events, one JSON object per event (both builds, captured in
``tests/fixtures/stream/``)::

    data: {"index":0,"content":" clu","tokens":[602],"stop":false,...,"tokens_predicted":1}
    <blank line>
    ...
    data: {"content":"","tokens":[],"stop":true,...,"stop_type":"limit","truncated":false,
           "timings":{"cache_n":0,"prompt_n":3,"prompt_ms":0.572,...}}

There is no ``data: [DONE]`` on ``/completion``; the body simply ends after the final
chunk. A request the server refuses before it starts (prompt longer than the slot's
context, a wrongly typed field in current builds) is an HTTP 400 with a JSON body
``{"error": {"code", "message", "type"}}`` and no stream. An error after the stream began
is one more event, ``data: {"error": {...}}``, and then the end of the body
(``format_error`` in tools/server/server-context.cpp of both builds). While waiting for a
result the HTTP thread sends ``:`` comment lines every ``sse_ping_interval`` seconds (30);
they come even when the compute is stuck, so they are not progress.

``stream_completion`` reads that stream as it arrives and times it with the client's clock:
time to first token, the gaps between token chunks, time to the final chunk. The server's
own ``timings`` count compute only; ``RequestSample.disagreements`` compares the two.

What a prompt too long for the slot does, observed on both builds: ``prompt_n`` greater
than the slot context is refused (HTTP 400 ``exceed_context_size_error``), but a prompt
that fits while prompt plus ``n_predict`` does not is served and cut short: the final chunk
says ``stop_type: "limit"``, ``truncated: true`` and ``predicted_n`` below ``n_predict``.
``RequestSample.truncated`` carries that flag, since ``stop_type`` alone cannot tell.

Errors: every failure is a ``RequestFailed`` carrying what the client saw, in the one error
tree of ``cluster.errors``; httpx exceptions are mapped here and nowhere else::

    cluster.errors.HTTPError
    └── RequestFailed   kind: http_status | stream_error | disconnected | malformed
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import httpx

from cluster.errors import HTTPError

COMPLETION_PATH = "/completion"
# Every streamed request gets its own connection. llama-server closes the connection after
# a stream although it announced keep-alive, and through an ssh tunnel that close can come
# after httpx has handed the connection to the next request, which then fails at once
# ("Server disconnected without sending a response"; seen in 3 of 10 benches). A connect
# costs under a millisecond; waiting for the end of the body to reuse one cost a second.
STREAM_HEADERS = {"Connection": "close"}

FailureKind = Literal["http_status", "stream_error", "disconnected", "malformed"]


class RequestFailed(HTTPError):
    """A streamed request did not reach its final chunk; carries what the client saw.

    ``kind`` says how it failed: ``http_status`` (the server refused it: a status other
    than 200, ``status_code`` set, ``message`` the server's own), ``stream_error`` (an error
    event after the stream began), ``disconnected`` (the body ended, or the connection
    broke or timed out, before the final chunk) or ``malformed`` (something that is not a
    llama-server stream). ``elapsed_s`` is the client time from sending to the failure,
    ``chunks`` the token chunks received until then.
    """

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status_code: int | None = None,
        elapsed_s: float,
        chunks: int,
    ) -> None:
        where = f"HTTP {status_code}" if status_code is not None else kind.replace("_", " ")
        super().__init__(
            f"POST {COMPLETION_PATH}: {where}: {message} "
            f"(after {elapsed_s:.3f}s and {chunks} token chunks)"
        )
        self.kind: FailureKind = kind
        self.status_code = status_code
        self.message = message
        self.elapsed_s = elapsed_s
        self.chunks = chunks


def _number(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"timings: {key} is {value!r}, not a finite number")
    if value < 0:
        raise ValueError(f"timings: {key} is negative ({value!r})")
    return float(value)


def _count(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"timings: {key} is {value!r}, not an integer")
    if value < 0:
        raise ValueError(f"timings: {key} is negative ({value!r})")
    return value


@dataclass(frozen=True)
class ServerTimings:
    """The server's own account of a request (the final chunk's ``timings``): compute only.

    ``prompt_n`` counts the prompt tokens evaluated (``cache_n`` more were reused from the
    slot's cache), ``predicted_n`` the tokens generated, including the first one.
    """

    prompt_n: int
    prompt_ms: float
    prompt_per_second: float
    predicted_n: int
    predicted_ms: float
    predicted_per_second: float
    cache_n: int

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> ServerTimings:
        """Read a ``timings`` object; ValueError names the first key missing or invalid."""
        if not isinstance(data, Mapping):
            raise ValueError(f"timings is {type(data).__name__}, not an object")
        return cls(
            prompt_n=_count(data, "prompt_n"),
            prompt_ms=_number(data, "prompt_ms"),
            prompt_per_second=_number(data, "prompt_per_second"),
            predicted_n=_count(data, "predicted_n"),
            predicted_ms=_number(data, "predicted_ms"),
            predicted_per_second=_number(data, "predicted_per_second"),
            cache_n=_count(data, "cache_n"),
        )

    @property
    def tg_tps(self) -> float | None:
        """Generation rate over decode steps, ``(predicted_n - 1) / predicted_ms``, the same
        for both builds; None with fewer than two tokens.

        The first token is sampled from the last prompt batch's logits, so ``predicted_ms``
        covers ``predicted_n - 1`` decode steps. Current builds (0.3.36) report
        ``predicted_per_second`` that way; legacy builds (0.3.30) divide by ``predicted_n``
        (8 tokens: 8/7 = 14% higher), and for one token current builds report 0.0 where
        legacy ones report 1000000.0. Compare builds with this, not the reported rate.
        """
        if self.predicted_n < 2 or self.predicted_ms <= 0:
            return None
        return (self.predicted_n - 1) / self.predicted_ms * 1000.0


@dataclass(frozen=True)
class RequestSample:
    """One completed request as the client timed it, with the server's own timings.

    Times are seconds from just before the request was sent. A token chunk is one that
    carries generated text (non-empty ``content`` or ``tokens``); with no token chunk at
    all, ``ttft_s`` is the time of the final chunk and ``chunks`` is 0.
    """

    ttft_s: float  # request sent -> first token chunk
    e2e_s: float  # request sent -> final chunk
    itl_s: tuple[float, ...]  # gaps between successive token chunks
    chunks: int  # token chunks received
    timings: ServerTimings
    stop_type: str  # "limit" when n_predict (or the slot's context) was reached
    truncated: bool = False  # the slot's context ran out before n_predict

    @property
    def client_pp_tps(self) -> float | None:
        """Prompt tokens the server evaluated over the client's time to first token."""
        if self.timings.prompt_n <= 0 or self.ttft_s <= 0:
            return None
        return self.timings.prompt_n / self.ttft_s

    @property
    def client_tg_tps(self) -> float | None:
        """Token chunks after the first over the rest of the stream, as the client saw it."""
        span = self.e2e_s - self.ttft_s
        if self.chunks < 2 or span <= 0:
            return None
        return (self.chunks - 1) / span

    def disagreements(self, threshold: float = 0.25) -> list[str]:
        """The metrics (``"pp"``, ``"tg"``) whose client and server rates differ by more than
        ``threshold`` relative to the server's.

        They measure different things, so some gap is expected. The client's prompt rate
        runs from sending the request to the first token chunk: the HTTP exchange, JSON
        parsing, tokenization, waiting for a free slot, the prompt's compute, sampling the
        first token and sending it back; the server's counts the prompt's compute only. The
        client's generation rate includes each chunk's serialization, the network and the
        event loop; the server's (``ServerTimings.tg_tps``) only the decode steps. With a
        tiny model on loopback the overheads dominate and pp always disagrees; with a real
        model a large gap means time went to queueing or the network, not compute.
        A metric either side cannot compute is not compared.
        """
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, not {threshold}")
        pairs = (
            ("pp", self.client_pp_tps, self.timings.prompt_per_second),
            ("tg", self.client_tg_tps, self.timings.tg_tps),
        )
        return [
            name
            for name, client, server in pairs
            if client is not None
            and server is not None
            and server > 0
            and abs(client - server) / server > threshold
        ]


def build_payload(
    prompt: str | list[int], n_predict: int, *, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The body of a measured ``/completion``: a fixed number of tokens, no reused cache.

    - ``prompt``: text, or token ids the server evaluates as they are;
    - ``n_predict``: how many tokens to generate (at least 1; llama-server generates one
      token even for 0, and -1 means no limit);
    - ``ignore_eos``: true, so a sampled end-of-sequence does not end the request early
      and every request generates ``n_predict`` tokens (unless the slot's context runs
      out: see ``RequestSample.truncated``);
    - ``cache_prompt``: false, so the whole prompt is evaluated every time instead of
      reusing the slot's cache from a previous request (``prompt_n`` is the prompt's
      length and ``cache_n`` 0, and repeated requests measure the same work).

    Sampling settings are left at the server's defaults. ``extra`` keys are added last and
    win; ``stream`` is set by ``stream_completion``.
    """
    if n_predict < 1:
        raise ValueError(f"n_predict must be at least 1, not {n_predict}")
    return {
        "prompt": prompt,
        "n_predict": n_predict,
        "ignore_eos": True,
        "cache_prompt": False,
        **(extra or {}),
    }


@dataclass(frozen=True)
class SseEvent:
    """One Server-Sent Event: its type (``message`` unless named) and its data."""

    event: str
    data: str


class SseDecoder:
    """Turns the lines of an SSE body into events (the WHATWG rules llama-server needs).

    ``feed`` one line at a time, without its line ending; it returns an event when a blank
    line completes one. ``data:`` lines accumulate (joined by newlines), ``event:`` names
    the type, lines starting with ``:`` are comments (llama-server's pings) and other
    fields are ignored, except ``error:``, which some servers send instead of ``data:``
    and which is read as the data of an ``error`` event.
    """

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""

    @property
    def pending(self) -> bool:
        """Whether a started event still waits for its blank line."""
        return bool(self._data)

    def feed(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SseEvent(self._event or "message", "\n".join(self._data))
            self._data, self._event = [], ""
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "error":
            self._event = "error"
            self._data.append(value)
        return None


def _error_message(error: Any) -> str:
    """The message of llama-server's ``{"error": ...}`` value (an object or a string)."""
    if isinstance(error, Mapping):
        message = error.get("message")
        if isinstance(message, str) and message:
            kind = error.get("type")
            return f"{message} ({kind})" if isinstance(kind, str) and kind else message
        return json.dumps(error)[:300]
    return str(error)[:300]


def _body_message(raw: bytes) -> str:
    """The server's message in a refused request's body, else the body's start."""
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:300] or "empty body"
    if isinstance(body, Mapping) and "error" in body:
        return _error_message(body["error"])
    return text.strip()[:300]


class _Stream:
    """The client's view of one stream so far: token chunk times, then the final chunk."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.token_times: list[float] = []
        self.sample: RequestSample | None = None

    def failed(self, kind: FailureKind, message: str, now: float) -> RequestFailed:
        return RequestFailed(
            kind, message, elapsed_s=now - self.start, chunks=len(self.token_times)
        )

    def take(self, event: SseEvent, now: float) -> None:
        """Account one event; set ``sample`` on the final chunk, raise on an error."""
        if event.event == "error":
            raise self.failed("stream_error", _error_data_message(event.data), now)
        if event.data == "[DONE]":  # OpenAI-style terminator; not sent on /completion
            return
        try:
            chunk = json.loads(event.data)
        except ValueError:
            raise self.failed("malformed", f"not JSON: {event.data[:120]!r}", now) from None
        if not isinstance(chunk, dict):
            raise self.failed("malformed", f"not a JSON object: {event.data[:120]!r}", now)
        if "error" in chunk:
            raise self.failed("stream_error", _error_message(chunk["error"]), now)
        stop = chunk.get("stop")
        content = chunk.get("content", "")
        tokens = chunk.get("tokens", [])
        if not isinstance(stop, bool) or not isinstance(content, str):
            raise self.failed("malformed", f"not a completion chunk: {event.data[:120]!r}", now)
        if not isinstance(tokens, list):
            raise self.failed("malformed", f"tokens is not a list: {event.data[:120]!r}", now)
        if content or tokens:
            self.token_times.append(now)
        if stop:
            self.sample = self._final(chunk, now)

    def _final(self, chunk: Mapping[str, Any], now: float) -> RequestSample:
        stop_type = chunk.get("stop_type")
        if not isinstance(stop_type, str):
            raise self.failed("malformed", f"final chunk has no stop_type: {stop_type!r}", now)
        raw_timings = chunk.get("timings")
        if not isinstance(raw_timings, Mapping):
            raise self.failed("malformed", f"final chunk has no timings: {raw_timings!r}", now)
        try:
            timings = ServerTimings.parse(raw_timings)
        except ValueError as exc:
            raise self.failed("malformed", f"final chunk: {exc}", now) from None
        times = self.token_times
        return RequestSample(
            ttft_s=(times[0] if times else now) - self.start,
            e2e_s=now - self.start,
            itl_s=tuple(later - earlier for earlier, later in itertools.pairwise(times)),
            chunks=len(times),
            timings=timings,
            stop_type=stop_type,
            truncated=chunk.get("truncated") is True,
        )


def _error_data_message(data: str) -> str:
    try:
        body = json.loads(data)
    except ValueError:
        return data[:300] or "error event without data"
    if isinstance(body, Mapping) and "error" in body:
        return _error_message(body["error"])
    return _error_message(body)


async def stream_completion(
    http: httpx.AsyncClient,
    payload: Mapping[str, Any],
    *,
    on_progress: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> RequestSample:
    """POST ``payload`` to ``/completion`` as a stream and time it; raise RequestFailed.

    ``http`` has the server's base URL; its timeouts are the only ones (httpx's read
    timeout applies to each wait for data, the first being the whole prompt's compute, so
    a long prompt needs a client with a long or no read timeout). A hang is the caller's
    to detect: ``on_progress`` is called for every event received (not for pings), and the
    caller cancels the task when it stops. ``clock`` is read just before sending and once
    per event, when the event is complete.
    """
    stream = _Stream(clock())
    try:
        async with http.stream(
            "POST", COMPLETION_PATH, json={**payload, "stream": True}, headers=STREAM_HEADERS
        ) as resp:
            if resp.status_code != 200:
                raw = await resp.aread()
                raise RequestFailed(
                    "http_status",
                    _body_message(raw),
                    status_code=resp.status_code,
                    elapsed_s=clock() - stream.start,
                    chunks=0,
                )
            content_type = resp.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                head = (await resp.aread())[:120]
                raise stream.failed(
                    "malformed",
                    f"not an event stream ({content_type or 'no type'}): {head!r}",
                    clock(),
                )
            decoder = SseDecoder()
            # aiter_lines is an async generator (typed as an iterator): close it here,
            # not whenever the event loop finalizes it.
            lines = cast(AsyncGenerator[str, None], resp.aiter_lines())
            async with contextlib.aclosing(lines):
                async for line in lines:
                    event = decoder.feed(line)
                    if event is None:
                        continue
                    now = clock()
                    if on_progress is not None:
                        on_progress()
                    stream.take(event, now)
                    if stream.sample is not None:
                        # Done: leaving the block closes the connection, whatever is left.
                        return stream.sample
            cut = " in the middle of an event" if decoder.pending else ""
            raise stream.failed(
                "disconnected", f"the stream ended before the final chunk{cut}", clock()
            )
    except httpx.TransportError as exc:
        raise stream.failed("disconnected", f"{type(exc).__name__}: {exc}", clock()) from exc
    except httpx.DecodingError as exc:
        raise stream.failed("malformed", f"{type(exc).__name__}: {exc}", clock()) from exc
