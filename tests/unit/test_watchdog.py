"""The progress watchdog's decisions, on a fake clock: stalls, trickle, timeouts, crashes."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import shutil
import socket
import subprocess
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cluster.orchestration.watchdog import (
    CHECK_S,
    LINK_PROGRESS_BYTES,
    SAMPLE_S,
    Expired,
    Expiry,
    Limits,
    ProgressClock,
    Sample,
    Watchdog,
    parse_sample,
    sample_command,
)

T = TypeVar("T")


class FakeTime:
    """Virtual time: ``sleep`` waits for the driver, which jumps to the next wake-up once
    every task is waiting."""

    def __init__(self) -> None:
        self.t = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._order), future))
        await future

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        async def drive() -> T:
            task = asyncio.ensure_future(coro)
            while not task.done():
                for _ in range(50):
                    await asyncio.sleep(0)
                if task.done():
                    break
                wake, _, future = heapq.heappop(self._sleepers)
                self.t = max(self.t, wake)
                if not future.cancelled():
                    future.set_result(None)
            return task.result()

        return asyncio.run(drive())


def link_source(time: FakeTime, rate: Callable[[float], float]) -> Callable[[], Awaitable[Sample]]:
    """A head whose link carries ``rate(t)`` bytes per second, sampled like the real one."""
    state = {"bytes": 0.0, "t": 0.0}

    async def sample() -> Sample:
        now = time.now()
        state["bytes"] += rate(state["t"]) * (now - state["t"])
        state["t"] = now
        return Sample(log_size=100, worker_bytes=int(state["bytes"]))

    return sample


def never_done() -> Callable[[], Awaitable[None]]:
    async def step() -> None:
        return None

    return step


def test_a_stall_is_reported_within_one_second_of_the_stall_timeout() -> None:
    time = FakeTime()
    stop = 10.0
    sample = link_source(time, lambda t: 50e6 if t < stop else 0.0)
    dog: Watchdog[None] = Watchdog(Limits(5, 900), sample, now=time.now, sleep=time.sleep)
    with pytest.raises(Expired) as raised:
        time.run(dog.watch(never_done()))
    assert raised.value.kind is Expiry.STALL
    detected = time.t
    assert stop + 5 < detected <= stop + 5 + SAMPLE_S + CHECK_S + 0.01
    assert detected - stop < 5 + 1


def test_keep_alive_trickle_is_not_progress() -> None:
    time = FakeTime()
    # 200 bytes a second after the transfer stops: keep-alives, zero-window probes.
    sample = link_source(time, lambda t: 50e6 if t < 10 else 200.0)
    dog: Watchdog[None] = Watchdog(Limits(5, 900), sample, now=time.now, sleep=time.sleep)
    with pytest.raises(Expired) as raised:
        time.run(dog.watch(never_done()))
    assert raised.value.kind is Expiry.STALL and time.t < 16


def test_a_slow_but_real_transfer_is_progress_until_the_total_limit() -> None:
    time = FakeTime()
    # 64 KiB every 2 s: under the threshold per sample, over it per stall window.
    sample = link_source(time, lambda t: LINK_PROGRESS_BYTES / 2)
    dog: Watchdog[None] = Watchdog(Limits(5, 30), sample, now=time.now, sleep=time.sleep)
    with pytest.raises(Expired) as raised:
        time.run(dog.watch(never_done()))
    assert raised.value.kind is Expiry.TIMEOUT
    assert 30 < time.t <= 30 + CHECK_S + 0.01


def test_log_growth_is_progress() -> None:
    time = FakeTime()

    async def sample() -> Sample:  # no link traffic; the log grows until t = 8
        return Sample(log_size=int(min(time.t, 8.0) * 100), worker_bytes=0)

    dog: Watchdog[None] = Watchdog(Limits(3, 900), sample, now=time.now, sleep=time.sleep)
    with pytest.raises(Expired) as raised:
        time.run(dog.watch(never_done()))
    assert raised.value.kind is Expiry.STALL and 11 < time.t <= 11.4


def test_the_step_result_ends_the_watch_and_its_tasks() -> None:
    time = FakeTime()
    calls = []

    async def step() -> str | None:
        calls.append(time.t)
        return "ready" if time.t >= 3 else None

    dog: Watchdog[str] = Watchdog(
        Limits(5, 900), link_source(time, lambda t: 1e6), now=time.now, sleep=time.sleep
    )

    async def watch_then_look() -> tuple[str, set[str]]:
        result = await dog.watch(step, step_s=0.5)
        return result, {t.get_coro().__name__ for t in asyncio.all_tasks()}  # type: ignore[union-attr]

    result, running = time.run(watch_then_look())
    assert result == "ready" and calls[-1] == 3.0
    assert not running & {"_sampler", "_checker", "_stepper"}  # none left behind


class Crashed(Exception):
    pass


def test_a_crash_seen_by_the_step_ends_the_watch_with_it() -> None:
    time = FakeTime()

    async def step() -> None:
        if time.t >= 2:
            raise Crashed("llama-server exited (134)")

    dog: Watchdog[None] = Watchdog(
        Limits(5, 900), link_source(time, lambda t: 0.0), now=time.now, sleep=time.sleep
    )
    with pytest.raises(Crashed):
        time.run(dog.watch(step))
    assert time.t == 2.0


def test_stream_chunks_are_progress() -> None:
    time = FakeTime()
    dog: Watchdog[None] = Watchdog(
        Limits(2, 900), link_source(time, lambda t: 0.0), now=time.now, sleep=time.sleep
    )

    async def step() -> None:
        if time.t < 6:
            dog.chunk()  # tokens arrive until t = 6

    with pytest.raises(Expired):
        time.run(dog.watch(step, step_s=0.5))
    assert 5.5 + 2 < time.t <= 5.5 + 2 + CHECK_S + 0.01  # the last chunk came at t = 5.5


def test_progress_clock_rules() -> None:
    clock = ProgressClock(0.0)
    assert not clock.sample(1.0, Sample(100, 1000))  # first sample: a baseline only
    assert not clock.sample(2.0, Sample(100, 1000 + LINK_PROGRESS_BYTES - 1))
    assert clock.sample(3.0, Sample(100, 1000 + LINK_PROGRESS_BYTES))
    assert clock.last_progress == 3.0
    assert not clock.sample(4.0, Sample(50, None))  # a new, shorter log: new baseline
    assert clock.sample(5.0, Sample(51, None))
    clock.chunk(4.5)  # an older chunk never moves the clock back
    assert clock.last_progress == 5.0 and clock.stalled_for(7.0) == 2.0


def test_parse_sample() -> None:
    assert parse_sample("1234\ntcp 30\n") == Sample(1234, 30)
    assert parse_sample("-\nlink 30\n") == Sample(None, 30)
    assert parse_sample("77\nnone\n") == Sample(77, None)
    assert parse_sample("77\n") == Sample(77, None)
    assert parse_sample("") == Sample(None, None)


def _sample_on_this_machine(interface: str, workers: list[str], path: str) -> Sample:
    argv = sample_command("/etc/hostname", interface, workers)
    done = subprocess.run(argv, capture_output=True, text=True, env={"PATH": path}, check=True)
    return parse_sample(done.stdout)


def test_only_the_sockets_to_the_workers_count_not_the_interface(tmp_path: Path) -> None:
    """Traffic on the link that is not the head's with its rpc-servers (on a loopback link:
    the controller's own /health polls) must not read as load progress."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            peer, _ = server.accept()
            with peer:
                before = _sample_on_this_machine("lo", [f"127.0.0.1:{port}"], os.environ["PATH"])
                client.sendall(b"x" * 100_000)
                received = 0
                while received < 100_000:
                    received += len(peer.recv(1 << 16))
                after = _sample_on_this_machine("lo", [f"127.0.0.1:{port}"], os.environ["PATH"])
                elsewhere = _sample_on_this_machine(
                    "lo", [f"127.0.0.1:{port + 1}"], os.environ["PATH"]
                )
    assert before.worker_bytes is not None and after.worker_bytes is not None
    assert after.worker_bytes - before.worker_bytes >= 100_000
    assert elsewhere.worker_bytes == 0


def test_without_ss_a_loopback_link_gives_no_byte_count(tmp_path: Path) -> None:
    for tool in ("sh", "stat", "cat", "awk"):
        (tmp_path / tool).symlink_to(shutil.which(tool) or tool)
    assert _sample_on_this_machine("lo", ["127.0.0.1:1"], str(tmp_path)).worker_bytes is None
    assert _sample_on_this_machine("lo", [], os.environ["PATH"]).worker_bytes is None


def test_a_cancellation_that_arrives_while_the_watch_winds_down_is_not_swallowed() -> None:
    """Ctrl-C (or `down`) cancels the job's task once: it must end the job even when it
    arrives while the watch is cancelling its helpers."""

    async def slow_to_stop() -> Sample:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)  # cleaning up, like a command being killed
            raise
        return Sample(0, 0)

    async def step() -> None:
        await asyncio.sleep(0.05)
        raise Crashed("llama-server exited")

    async def go() -> str:
        dog: Watchdog[None] = Watchdog(Limits(60, 600), slow_to_stop)
        task = asyncio.ensure_future(dog.watch(step))
        await asyncio.sleep(0.1)  # the step has failed; the watch is winding down
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        except Crashed:
            return "the cancellation was lost"
        return "returned"

    assert asyncio.run(go()) == "cancelled"


def test_a_sampler_that_loses_its_cancellation_does_not_hold_the_watch() -> None:
    """Python 3.11's asyncio.wait_for (inside asyncssh's run) returns the command's result
    when it arrives together with the cancellation: the sampler then goes on as if never
    cancelled. The watch must still end with the step's result (a screen hung there)."""

    async def loses_it() -> Sample:
        with contextlib.suppress(asyncio.CancelledError):  # the result came in with it
            await asyncio.sleep(0.01)
        return Sample(0, 0)

    async def step() -> str | None:
        await asyncio.sleep(0.05)
        return "served"

    async def go() -> str:
        dog: Watchdog[str] = Watchdog(Limits(60, 600), loses_it, sample_s=0.001)
        return await asyncio.wait_for(dog.watch(step, 0.01), 10)

    assert asyncio.run(go()) == "served"


def test_a_helper_stuck_after_a_lost_cancellation_is_cancelled_again() -> None:
    """A sample that lost one cancellation and then waits for a command that never ends
    (an ssh channel that never closes) is cancelled again after WIND_DOWN_S."""
    cancels = []

    async def stuck() -> Sample:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            cancels.append("lost")
            try:
                await asyncio.sleep(3600)  # the next command never finishes
            except asyncio.CancelledError:
                cancels.append("taken")
                raise
        return Sample(0, 0)

    async def step() -> str | None:
        await asyncio.sleep(0.05)
        return "served"

    async def go() -> str:
        dog: Watchdog[str] = Watchdog(Limits(60, 600), stuck, sample_s=0.001)
        return await asyncio.wait_for(dog.watch(step, 0.01), 10)

    assert asyncio.run(go()) == "served"
    assert cancels == ["lost", "taken"]
