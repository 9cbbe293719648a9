"""The front door on the real testbed: one /v1 endpoint through the daemon that holds
requests while the group restarts, streams token by token, refuses without a key, and
turns a burst past its queue into 503s with Retry-After."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import Cluster, DaemonProcess

pytestmark = pytest.mark.testbed

PORT = 18766
KEY = "front-door-key"
BASE = f"http://127.0.0.1:{PORT}"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def daemon(cluster: Cluster, tiny_model: Path) -> Iterator[DaemonProcess]:
    # llama-server on the head's loopback, with a key of its own the front door adds.
    cluster.write_profile(
        "tiny", tiny_model, ctx_size=8192, parallel=2, stall_timeout_s=5, api_key_env="TB_LLAMA_KEY"
    )
    with cluster.hosts_file.open("a") as hosts:
        hosts.write(
            f'\n[daemon]\nprobe_interval_s = 1\nlisten = "127.0.0.1:{PORT}"\n'
            'keys_env = "TB_FRONT_KEYS"\nqueue_size = 2\nqueue_wait_s = 90\n'
        )
    started = DaemonProcess(cluster)
    started.start({"TB_FRONT_KEYS": f"other-key,{KEY}", "TB_LLAMA_KEY": "llama-own-key"})
    started.client.set_desired("tiny")
    started.serving()
    yield started
    started.stop()
    started.client.close()


def completion(n: int = 16, stream: bool = False) -> dict[str, object]:
    return {"prompt": "Hello", "max_tokens": n, "stream": stream, "ignore_eos": True}


def test_a_request_without_a_valid_key_is_refused(daemon: DaemonProcess) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        refused = httpx.post(f"{BASE}/v1/completions", json=completion(), headers=headers)
        assert refused.status_code == 401
        assert "front-door key" in refused.json()["error"]["message"]
    ok = httpx.post(f"{BASE}/v1/completions", json=completion(), headers=AUTH, timeout=60)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 16
    models = httpx.get(f"{BASE}/v1/models", headers=AUTH, timeout=30)
    assert models.status_code == 200 and models.json()["data"]


def test_a_streamed_reply_arrives_token_by_token(daemon: DaemonProcess) -> None:
    arrivals: list[float] = []
    sent = time.monotonic()
    with httpx.stream(
        "POST", f"{BASE}/v1/completions", json=completion(1500, True), headers=AUTH, timeout=60
    ) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith("data:") and "[DONE]" not in line:
                arrivals.append(time.monotonic())
    assert len(arrivals) >= 1000
    total = arrivals[-1] - sent
    # Not buffered: the first tokens arrived while the rest were still being generated, and
    # the chunks spread over the generation instead of landing in one burst at its end.
    assert arrivals[0] - sent < total / 4
    quarters = [sum(1 for t in arrivals if sent + q * total / 4 <= t < sent + (q + 1) * total / 4)
                for q in range(4)]  # fmt: skip
    assert all(count > len(arrivals) / 10 for count in quarters), quarters
    recent = httpx.get(f"{BASE}/api/requests", timeout=10).json()
    streamed = [r for r in recent if r["stream"]][-1]
    assert 0 < streamed["ttft_s"] < total / 4 and streamed["status"] == 200
    assert streamed["completion_tokens"] == 1500 and streamed["tg_tps"] > 0


def test_a_request_sent_right_after_a_crash_is_answered_once_serving_again(
    cluster: Cluster, daemon: DaemonProcess
) -> None:
    os.kill(cluster.component_pid("evo", "llama-server"), signal.SIGKILL)
    answer = httpx.post(f"{BASE}/v1/completions", json=completion(), headers=AUTH, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 16
    status = daemon.client.status()
    assert status.incidents and status.incidents[0].recovered is not None
    recent = httpx.get(f"{BASE}/api/requests", timeout=10).json()
    assert recent[-1]["status"] == 200 and recent[-1]["queued_s"] > 0  # it waited


def test_a_burst_past_the_queue_gets_503_with_retry_after(
    cluster: Cluster, daemon: DaemonProcess
) -> None:
    daemon.client.set_desired(None)
    daemon.until(lambda s: s.state.value == "idle", "not serving")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=BASE, headers=AUTH, timeout=120) as client:
            tasks = [
                asyncio.ensure_future(client.post("/v1/completions", json=completion()))
                for _ in range(4)
            ]
            await asyncio.sleep(2)
            refused = [t for t in tasks if t.done()]
            assert len(refused) == 2  # the queue holds two; the others are refused at once
            daemon.client.set_desired("tiny")  # serving again lets the two waiting go on
            return list(await asyncio.gather(*tasks))

    answers = asyncio.run(burst())
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200, 503, 503]
    for refused in (a for a in answers if a.status_code == 503):
        assert int(refused.headers["retry-after"]) >= 1
        assert "not serving" in refused.json()["error"]["message"]


def test_a_request_in_flight_when_llama_server_dies_ends_with_an_error(
    cluster: Cluster, daemon: DaemonProcess
) -> None:
    events: list[str] = []
    started = time.monotonic()
    with httpx.stream(
        "POST", f"{BASE}/v1/completions", json=completion(6000, True), headers=AUTH, timeout=60
    ) as reply:
        for line in reply.iter_lines():
            if not line.startswith("data:"):
                continue
            events.append(line)
            if len(events) == 10:
                os.kill(cluster.component_pid("evo", "llama-server"), signal.SIGKILL)
    assert time.monotonic() - started < 30  # ended, never hung
    last = json.loads(events[-1].removeprefix("data:"))
    assert "went away mid-request" in last["error"]["message"]
    daemon.serving()
