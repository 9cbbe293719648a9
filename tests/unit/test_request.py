"""One streamed, measured request: replayed real streams of both builds, and a real server.

``tests/fixtures/stream/<case>.txt`` holds a body captured from the current (0.3.36) or
legacy (0.3.30) llama-server, and ``<case>.json`` its status and what ``stream_completion``
must make of it. They are replayed through ``httpx.MockTransport`` with a fake clock, so
every time is known; ``test_real_server_*`` run the real binaries when they are built.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.errors import HTTPError
from cluster.measure.request import (
    RequestFailed,
    RequestSample,
    ServerTimings,
    SseDecoder,
    SseEvent,
    build_payload,
    stream_completion,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "stream"
CASES = sorted(FIXTURES.glob("*.json"))
PAYLOAD = build_payload("hello world", 8)


def fixture(name: str) -> tuple[dict[str, Any], bytes]:
    return json.loads((FIXTURES / f"{name}.json").read_text()), (
        FIXTURES / f"{name}.txt"
    ).read_bytes()


class StepClock:
    """Reads 0, step, 2*step, ...: each event read at its own whole step."""

    def __init__(self, step: float = 1.0) -> None:
        self.step = step
        self.reads = 0

    def __call__(self) -> float:
        value = self.reads * self.step
        self.reads += 1
        return value


class ListClock:
    """Reads the given times in order; reading past them fails the test."""

    def __init__(self, times: Sequence[float]) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        assert self.times, "the clock was read more often than the stream has events"
        return self.times.pop(0)


class Pieces(httpx.AsyncByteStream):
    """A body delivered in the given pieces, then optionally an exception or a hang."""

    def __init__(
        self, pieces: Iterable[bytes], *, then: Exception | None = None, hang: bool = False
    ) -> None:
        self.pieces = list(pieces)
        self.then = then
        self.hang = hang
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece
        if self.then is not None:
            raise self.then
        if self.hang:
            await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.closed = True


def split(body: bytes, size: int | None) -> list[bytes]:
    if size is None:
        return [body]
    return [body[start : start + size] for start in range(0, len(body), size)]


def transport(
    body: bytes | httpx.AsyncByteStream,
    *,
    status: int = 200,
    content_type: str = "text/event-stream",
    seen: list[httpx.Request] | None = None,
) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        stream = Pieces([body]) if isinstance(body, bytes) else body
        return httpx.Response(status, headers={"content-type": content_type}, stream=stream)

    return httpx.MockTransport(handler)


def run(
    mock: httpx.MockTransport,
    payload: dict[str, Any] = PAYLOAD,
    *,
    clock: Callable[[], float] | None = None,
    on_progress: Callable[[], None] | None = None,
) -> RequestSample:
    async def main() -> RequestSample:
        async with httpx.AsyncClient(transport=mock, base_url="http://llama") as http:
            return await stream_completion(
                http, payload, on_progress=on_progress, clock=clock or StepClock()
            )

    return asyncio.run(main())


def failure(mock: httpx.MockTransport, **kwargs: Any) -> RequestFailed:
    with pytest.raises(RequestFailed) as caught:
        run(mock, **kwargs)
    return caught.value


# --- the recorded streams -------------------------------------------------------------


@pytest.mark.parametrize("size", [None, 7, 100], ids=["whole", "7B", "100B"])
@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_fixture(case: Path, size: int | None) -> None:
    meta = json.loads(case.read_text())
    body = case.with_suffix(".txt").read_bytes()
    mock = transport(
        Pieces(split(body, size)), status=meta["status"], content_type=meta["content_type"]
    )
    progress: list[None] = []
    expected = meta["expected"]
    if "error" in expected:
        want = expected["error"]
        failed = failure(mock, on_progress=lambda: progress.append(None))
        assert failed.kind == want["kind"]
        assert failed.status_code == want["status_code"]
        assert want["message_contains"] in failed.message
        assert want["message_contains"] in str(failed)
        assert failed.chunks == want["chunks"]
        if failed.kind == "http_status":
            assert failed.elapsed_s == 1.0  # sent at 0, refused at the next read
            assert progress == []
        return
    want = expected["ok"]
    sample = run(mock, on_progress=lambda: progress.append(None))
    # The step clock reads 0 when sending and n at the n-th event.
    assert len(progress) == want["events"]
    assert sample.ttft_s == 1.0
    assert sample.e2e_s == want["events"]
    assert sample.itl_s == (1.0,) * (want["chunks"] - 1)
    assert sample.chunks == want["chunks"]
    assert sample.stop_type == want["stop_type"]
    assert sample.truncated is want["truncated"]
    assert sample.timings == ServerTimings(**want["timings"])
    timings = sample.timings
    divisor = want.get("reported_tg_divides_by")
    if divisor == "predicted_n - 1":
        assert timings.tg_tps == pytest.approx(timings.predicted_per_second)
    elif divisor == "predicted_n":
        reported = timings.predicted_n / timings.predicted_ms * 1000
        assert timings.predicted_per_second == pytest.approx(reported)
        assert timings.tg_tps == pytest.approx(
            reported * (timings.predicted_n - 1) / timings.predicted_n
        )


def test_fixtures_cover_both_builds_and_every_failure_kind() -> None:
    metas = [json.loads(case.read_text()) for case in CASES]
    builds = {meta["build"].split()[0] for meta in metas if meta["build"]}
    kinds = {meta["expected"]["error"]["kind"] for meta in metas if "error" in meta["expected"]}
    assert builds == {"0.3.36", "0.3.30"}
    assert kinds == {"http_status", "stream_error", "disconnected"}
    assert all(case.with_suffix(".txt").exists() for case in CASES)


def test_times_come_from_the_clock_at_each_event() -> None:
    _, body = fixture("current-normal")
    # sent at 10.0; eight token chunks; the final chunk at 14.1
    clock = ListClock([10.0, 10.5, 10.6, 10.8, 11.1, 11.5, 12.0, 12.6, 13.3, 14.1])
    sample = run(transport(body), clock=clock)
    assert clock.times == []
    assert sample.ttft_s == pytest.approx(0.5)
    assert sample.itl_s == pytest.approx((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7))
    assert sample.e2e_s == pytest.approx(4.1)
    assert sample.client_pp_tps == pytest.approx(3 / 0.5)
    assert sample.client_tg_tps == pytest.approx(7 / 3.6)


def test_request_is_a_streamed_post_of_the_payload() -> None:
    _, body = fixture("legacy-normal")
    seen: list[httpx.Request] = []
    run(transport(body, seen=seen), {"prompt": [1, 2, 3], "n_predict": 8, "stream": False})
    (request,) = seen
    assert request.method == "POST"
    assert request.url == "http://llama/completion"
    assert json.loads(request.content) == {"prompt": [1, 2, 3], "n_predict": 8, "stream": True}


def test_pings_and_crlf_change_nothing() -> None:
    _, body = fixture("current-normal")
    plain = run(transport(body))
    progress: list[None] = []
    pinged = b":\n\n" + body.replace(b"\n\n", b"\n\n:\n\n").replace(b"\n", b"\r\n")
    sample = run(transport(pinged), on_progress=lambda: progress.append(None))
    assert sample == plain
    assert len(progress) == 9  # events only: a ping is no sign of compute


def test_no_token_chunk_means_ttft_at_the_final_chunk() -> None:
    _, body = fixture("current-normal")
    final = body.split(b"\n\n")[8]
    sample = run(transport(final + b"\n\n"))
    assert (sample.chunks, sample.ttft_s, sample.e2e_s, sample.itl_s) == (0, 1.0, 1.0, ())
    assert sample.client_tg_tps is None


def test_events_after_the_final_chunk_are_ignored() -> None:
    _, body = fixture("current-normal")
    sample = run(transport(body + b"data: [DONE]\n\ndata: {garbage\n\n"))
    assert sample.chunks == 8


def test_a_body_held_open_after_the_final_chunk_returns_at_once_and_is_closed() -> None:
    _, body = fixture("current-normal")
    stream = Pieces([body], hang=True)
    started = time.monotonic()
    sample = run(transport(stream))
    assert time.monotonic() - started < 0.5
    assert sample.chunks == 8
    assert stream.closed


def test_every_stream_asks_for_its_own_connection() -> None:
    _, body = fixture("current-normal")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    run(httpx.MockTransport(handler))
    assert seen[0].headers["connection"] == "close"


# --- failures --------------------------------------------------------------------------


def test_http_400_carries_the_servers_message() -> None:
    meta, body = fixture("current-context-exceeded")
    failed = failure(transport(body, status=400, content_type=meta["content_type"]))
    assert isinstance(failed, HTTPError)  # in the one error tree: the CLI exits 6
    assert (failed.kind, failed.status_code, failed.chunks) == ("http_status", 400, 0)
    assert failed.message == (
        "request (3002 tokens) exceeds the available context size (1024 tokens), "
        "try increasing it (exceed_context_size_error)"
    )
    assert str(failed).startswith("POST /completion: HTTP 400: request (3002 tokens)")


def test_http_error_that_is_not_json_keeps_its_text() -> None:
    failed = failure(transport(b"Bad Gateway\n", status=502, content_type="text/plain"))
    assert (failed.kind, failed.status_code, failed.message) == ("http_status", 502, "Bad Gateway")


def test_body_cut_inside_an_event_is_disconnected() -> None:
    _, body = fixture("current-normal")
    cut = body[: body.index(b'"tokens_predicted":4') + 5]  # inside the 4th event
    failed = failure(transport(cut))
    assert failed.kind == "disconnected"
    assert failed.status_code is None
    assert failed.chunks == 3
    assert "in the middle of an event" in failed.message
    assert failed.elapsed_s == 4.0  # three events at 1..3, the end read at 4


def test_connection_broken_mid_stream_maps_to_disconnected() -> None:
    _, body = fixture("legacy-normal")
    events = body.split(b"\n\n")
    broken = httpx.RemoteProtocolError(
        "peer closed connection without sending complete message body"
    )
    failed = failure(transport(Pieces([b"\n\n".join(events[:5]) + b"\n\n"], then=broken)))
    assert failed.kind == "disconnected"
    assert failed.chunks == 5
    assert failed.message.startswith("RemoteProtocolError: peer closed connection")
    assert failed.__cause__ is broken


def test_nothing_listening_maps_to_disconnected() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("All connection attempts failed", request=request)

    failed = failure(httpx.MockTransport(refuse))
    assert (failed.kind, failed.chunks, failed.elapsed_s) == ("disconnected", 0, 1.0)
    assert "ConnectError" in failed.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"data: {not json\n\n", "not JSON"),
        (b"data: [1, 2]\n\n", "not a JSON object"),
        (b'data: {"content": "x"}\n\n', "not a completion chunk"),
        (b'data: {"content": 3, "stop": false}\n\n', "not a completion chunk"),
        (b'data: {"content": "x", "tokens": 5, "stop": false}\n\n', "tokens is not a list"),
        (b'data: {"content": "", "stop": true, "stop_type": "limit"}\n\n', "no timings"),
        (b'data: {"content": "", "stop": true, "timings": {}}\n\n', "no stop_type"),
    ],
    ids=["json", "array", "no-stop", "content", "tokens", "timings", "stop-type"],
)
def test_garbage_is_malformed(body: bytes, message: str) -> None:
    failed = failure(transport(body))
    assert failed.kind == "malformed"
    assert message in failed.message


def test_final_chunk_with_incomplete_timings_is_malformed() -> None:
    _, body = fixture("current-normal")
    failed = failure(transport(body.replace(b'"predicted_ms":', b'"predicted_msec":')))
    assert failed.kind == "malformed"
    assert "predicted_ms" in failed.message
    assert failed.chunks == 8


def test_a_page_that_is_not_an_event_stream_is_malformed() -> None:
    failed = failure(transport(b"<html>It works!</html>", content_type="text/html"))
    assert failed.kind == "malformed"
    assert "text/html" in failed.message


@pytest.mark.parametrize(
    "event",
    [
        b'event: error\ndata: {"code": 500, "message": "boom", "type": "server_error"}\n\n',
        b'error: {"message": "boom"}\n\n',
        b'data: {"error": "boom"}\n\n',
    ],
    ids=["event-error", "error-field", "error-string"],
)
def test_error_events_are_stream_errors(event: bytes) -> None:
    _, body = fixture("current-normal")
    first_two = b"\n\n".join(body.split(b"\n\n")[:2]) + b"\n\n"
    failed = failure(transport(first_two + event))
    assert (failed.kind, failed.chunks, failed.elapsed_s) == ("stream_error", 2, 3.0)
    assert "boom" in failed.message


def test_a_hanging_stream_can_be_cancelled_by_the_caller() -> None:
    _, body = fixture("current-normal")
    stream = Pieces([body.split(b"\n\n")[0] + b"\n\n"], hang=True)

    async def main() -> None:
        first_event = asyncio.Event()
        async with httpx.AsyncClient(transport=transport(stream), base_url="http://llama") as http:
            task = asyncio.create_task(
                stream_completion(http, PAYLOAD, on_progress=first_event.set)
            )
            await asyncio.wait_for(first_event.wait(), timeout=5)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert stream.closed


# --- pure parts ------------------------------------------------------------------------


def test_sse_decoder_follows_the_event_rules() -> None:
    decoder = SseDecoder()
    lines = ["data: a", "data:b", ": ping", "event: custom", "id: 7", "", "", "data: c"]
    events = [decoder.feed(line) for line in lines]
    assert events == [None, None, None, None, None, SseEvent("custom", "a\nb"), None, None]
    assert decoder.pending
    assert decoder.feed("") == SseEvent("message", "c")
    assert not decoder.pending


TIMINGS = {
    "cache_n": 0,
    "prompt_n": 100,
    "prompt_ms": 100.0,
    "prompt_per_token_ms": 1.0,
    "prompt_per_second": 1000.0,
    "predicted_n": 11,
    "predicted_ms": 100.0,
    "predicted_per_token_ms": 9.09,
    "predicted_per_second": 110.0,  # a legacy build's n / ms
}


def test_timings_parse_reads_the_seven_keys() -> None:
    timings = ServerTimings.parse(TIMINGS)
    assert timings == ServerTimings(
        prompt_n=100,
        prompt_ms=100.0,
        prompt_per_second=1000.0,
        predicted_n=11,
        predicted_ms=100.0,
        predicted_per_second=110.0,
        cache_n=0,
    )
    assert timings.tg_tps == pytest.approx(100.0)  # ten decode steps in 100 ms


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"prompt_n": None}, "prompt_n"),
        ({"prompt_ms": "1.0"}, "prompt_ms"),
        ({"predicted_n": 2.5}, "predicted_n"),
        ({"cache_n": True}, "cache_n"),
        ({"predicted_ms": -1.0}, "predicted_ms"),
        ({"prompt_per_second": float("nan")}, "prompt_per_second"),
    ],
)
def test_timings_parse_refuses_missing_or_invalid_keys(change: dict[str, Any], key: str) -> None:
    data = {k: v for k, v in {**TIMINGS, **change}.items() if v is not None}
    with pytest.raises(ValueError, match=key):
        ServerTimings.parse(data)


def test_tg_tps_needs_two_tokens() -> None:
    assert ServerTimings.parse({**TIMINGS, "predicted_n": 1}).tg_tps is None
    assert ServerTimings.parse({**TIMINGS, "predicted_ms": 0}).tg_tps is None


def sample(ttft_s: float, e2e_s: float, chunks: int, **timings: Any) -> RequestSample:
    return RequestSample(
        ttft_s=ttft_s,
        e2e_s=e2e_s,
        itl_s=(),
        chunks=chunks,
        timings=ServerTimings.parse({**TIMINGS, **timings}),
        stop_type="limit",
    )


def test_disagreements_compare_client_and_server_rates() -> None:
    # server: pp 1000/s, tg 100/s over decode steps (the reported 110/s is not used)
    agree = sample(ttft_s=0.125, e2e_s=0.225, chunks=11)  # client pp 800 (-20%), tg 100
    assert agree.client_pp_tps == pytest.approx(800.0)
    assert agree.client_tg_tps == pytest.approx(100.0)
    assert agree.disagreements() == []
    both = sample(ttft_s=0.2, e2e_s=0.4, chunks=11)  # client pp 500 (-50%), tg 50 (-50%)
    assert both.disagreements() == ["pp", "tg"]
    assert both.disagreements(threshold=0.5) == []  # exactly at the threshold is agreement
    assert both.disagreements(threshold=0.49) == ["pp", "tg"]
    fast_client = sample(ttft_s=0.125, e2e_s=0.175, chunks=11)  # tg 200 (+100%)
    assert fast_client.disagreements() == ["tg"]


def test_disagreements_skip_what_cannot_be_computed() -> None:
    one_chunk = sample(ttft_s=0.5, e2e_s=0.6, chunks=1)
    assert one_chunk.client_tg_tps is None
    assert one_chunk.disagreements() == ["pp"]
    cached = sample(ttft_s=0.5, e2e_s=0.6, chunks=1, prompt_n=0, prompt_per_second=0.0)
    assert cached.client_pp_tps is None
    assert cached.disagreements() == []
    with pytest.raises(ValueError, match="threshold"):
        one_chunk.disagreements(threshold=-0.1)


def test_build_payload_asks_for_a_fixed_length_without_cache() -> None:
    assert build_payload("hi", 16) == {
        "prompt": "hi",
        "n_predict": 16,
        "ignore_eos": True,
        "cache_prompt": False,
    }
    assert build_payload([1, 2], 4, extra={"seed": 7, "cache_prompt": True}) == {
        "prompt": [1, 2],
        "n_predict": 4,
        "ignore_eos": True,
        "cache_prompt": True,
        "seed": 7,
    }
    with pytest.raises(ValueError, match="n_predict"):
        build_payload("hi", 0)


# --- real llama-server -------------------------------------------------------------------

CACHE = Path.home() / ".cache" / "clusterctl"
BUILDS = {"current": "0.3.36", "legacy": "0.3.30"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(generation: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = CACHE / "llama.cpp" / BUILDS[generation] / "build" / "bin" / "llama-server"
    models = sorted((CACHE / "models").glob("tiny-llama-*.gguf"))
    if not binary.exists() or not models:
        pytest.skip(f"needs {binary} and a tiny-llama model (built by the testbed)")
    port = free_port()
    argv = [str(binary), "-m", str(models[0]), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [*argv, "--no-warmup", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    with httpx.Client(base_url=base, timeout=1) as http:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if http.get("/health").status_code == 200:
                    return proc, base
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    pytest.fail(f"llama-server ({generation}) did not become ready (exit {proc.returncode})")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


async def stream_once(
    base: str, payload: dict[str, Any], on_progress: Callable[[], None] | None = None
) -> RequestSample:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        return await stream_completion(http, payload, on_progress=on_progress)


@pytest.mark.parametrize("generation", ["current", "legacy"])
def test_real_server_streams_a_measured_sample(generation: str) -> None:
    proc, base = start_server(generation, "-c", "2048", "-np", "2")
    try:
        sample = asyncio.run(stream_once(base, build_payload("hello world", 8)))
        with pytest.raises(RequestFailed) as caught:
            asyncio.run(stream_once(base, build_payload("opt " * 3000, 8)))
    finally:
        stop(proc)
    assert (sample.chunks, sample.stop_type, sample.truncated) == (8, "limit", False)
    assert (sample.timings.prompt_n, sample.timings.predicted_n, sample.timings.cache_n) == (
        3,
        8,
        0,
    )
    assert len(sample.itl_s) == 7
    assert 0 < sample.ttft_s <= sample.e2e_s
    assert sample.e2e_s == pytest.approx(sample.ttft_s + sum(sample.itl_s), abs=0.05)
    failed = caught.value
    assert (failed.kind, failed.status_code) == ("http_status", 400)
    assert "exceeds the available context size" in failed.message


@pytest.mark.parametrize("generation", ["current", "legacy"])
def test_real_server_killed_mid_stream_is_disconnected(generation: str) -> None:
    proc, base = start_server(generation, "-c", "8192", "-np", "1")
    events = 0

    def kill_after_five() -> None:
        nonlocal events
        events += 1
        if events == 5:
            os.kill(proc.pid, signal.SIGKILL)

    try:
        with pytest.raises(RequestFailed) as caught:
            asyncio.run(stream_once(base, build_payload("hello world", 8000), kill_after_five))
    finally:
        stop(proc)
    failed = caught.value
    assert failed.kind == "disconnected"
    assert 5 <= failed.chunks < 8000
