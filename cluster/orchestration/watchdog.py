"""One progress watchdog for loads and for requests: the same notion of progress for both.

Progress is any of:

- the head's llama-server log grew (load lines, progress dots, request lines);
- the head's connections to its rpc-servers moved ``LINK_PROGRESS_BYTES`` more since the
  last progress (weights streaming to the workers, activations during a request), counted
  per socket from ``ss`` (bytes acknowledged plus bytes received); the trickle of TCP
  keep-alives and zero-window probes of a hung transfer never adds up to that. Only those
  sockets count: an interface's counters also carry whatever else crosses it (on a
  loopback "link" the controller's own ``/health`` polls, about 5 kB a second, kept a hung
  load alive forever). Without ``ss`` the link interface's counters stand in, unless the
  interface is a loopback, where the log alone tells progress;
- a streamed request received a chunk (``ProgressClock.chunk``).

No progress for ``stall_s`` is a stall, and longer than ``total_s`` overall is a timeout.
Everything else (a component that exited, a fatal line in a live log, ``/health`` turning
200) is the caller's ``step``, which runs on its own, slower cadence.

Why a separate sampler: the progress sample (one command on the head printing the log's
size and the worker sockets' bytes) runs every ``SAMPLE_S`` on its own, and a change is
dated when the sample that saw it came back, so the progress clock never lags the link by
more than one sample. The slower checks of ``step`` (a poll of every component, ``/health``) cannot
delay it, and the stall is judged every ``CHECK_S``: a stall is reported within
``SAMPLE_S + CHECK_S`` plus one sample's round trip of the stall timeout.

``ProgressClock`` is pure and the runner takes its clock and sleep as arguments, so the
decisions are unit-tested with a fake clock (tests/unit/test_watchdog.py).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from cluster.concurrency import cancel_and_wait

T = TypeVar("T")

LINK_PROGRESS_BYTES = 64 * 1024
SAMPLE_S = 0.25
CHECK_S = 0.1

# Prints the log's size (or -), then how the head's traffic with its workers was counted
# and the count: "tcp N" (the ss filter's sockets), "link N" (the link interface's rx + tx,
# where ss is missing) or "none". Arguments: the log, the link interface, the ss filter.
SAMPLE_SCRIPT = r"""
stat -c %s -- "$1" 2>/dev/null || echo -
iface=$2; shift 2
if [ $# -eq 0 ]; then
  echo none
elif command -v ss >/dev/null 2>&1; then
  ss -tinH state established "$@" 2>/dev/null | awk '
    { for (i = 1; i <= NF; i++) if ($i ~ /^bytes_(acked|received):[0-9]+$/) {
        split($i, kv, ":"); n += kv[2] } }
    END { printf "tcp %.0f\n", n }'
elif flags=$(cat "/sys/class/net/$iface/flags" 2>/dev/null) && [ $((flags & 8)) -eq 0 ]; then
  stats="/sys/class/net/$iface/statistics"
  echo link $(( $(cat "$stats/rx_bytes") + $(cat "$stats/tx_bytes") ))
else
  echo none
fi
exit 0
"""


@dataclass(frozen=True)
class Sample:
    """What one progress sample saw: the log's size and the bytes the head exchanged with
    its workers (None: not known)."""

    log_size: int | None
    worker_bytes: int | None


def sample_command(log_path: str, interface: str, workers: Sequence[str]) -> list[str]:
    """The sample's argv; ``workers`` are the rpc-servers' ``address:port`` (IPv4, from the
    validated inventory), the destinations of the head's connections that count."""
    matches: list[str] = []
    for endpoint in workers:
        matches += [*(["or"] if matches else []), "dst", endpoint]
    ss_filter = ["(", *matches, ")"] if matches else []
    return ["sh", "-c", SAMPLE_SCRIPT, "clusterctl", log_path, interface, *ss_filter]


def parse_sample(stdout: str) -> Sample:
    """SAMPLE_SCRIPT's output; a field it could not read is None."""
    lines = stdout.splitlines()
    log_size = _count(lines[0]) if lines else None
    how, _, count = (lines[1] if len(lines) > 1 else "").partition(" ")
    return Sample(log_size, _count(count) if how in ("tcp", "link") else None)


def _count(text: str) -> int | None:
    return int(text) if re.fullmatch(r"[0-9]+", text.strip()) else None


class ProgressClock:
    """When progress was last seen; fed samples and chunks with the time they came."""

    def __init__(self, start: float, link_threshold: int = LINK_PROGRESS_BYTES) -> None:
        self.start = start
        self.last_progress = start
        self.link_threshold = link_threshold
        self._log_size: int | None = None
        self._link_mark: int | None = None

    def _moved(self, at: float) -> None:
        self.last_progress = max(self.last_progress, at)

    def sample(self, at: float, sample: Sample) -> bool:
        """Take one sample seen at ``at``; True when it shows progress."""
        moved = False
        if sample.log_size is not None:
            if self._log_size is not None and sample.log_size > self._log_size:
                moved = True
            self._log_size = sample.log_size  # a smaller size is a new log: a new baseline
        if sample.worker_bytes is not None:
            if self._link_mark is None or sample.worker_bytes < self._link_mark:
                self._link_mark = sample.worker_bytes  # fewer: a connection closed
            elif sample.worker_bytes - self._link_mark >= self.link_threshold:
                self._link_mark = sample.worker_bytes
                moved = True
        if moved:
            self._moved(at)
        return moved

    def chunk(self, at: float) -> None:
        """A streamed request received data."""
        self._moved(at)

    def stalled_for(self, now: float) -> float:
        return now - self.last_progress


@dataclass(frozen=True)
class Limits:
    stall_s: float
    total_s: float


class Expiry(StrEnum):
    STALL = "stall"
    TIMEOUT = "timeout"


class Expired(Exception):
    """The watchdog fired: no progress for the stall limit, or the total limit passed."""

    def __init__(self, kind: Expiry, seconds: float, limit: float) -> None:
        super().__init__(f"{kind.value} after {seconds:.1f}s (limit {limit:g}s)")
        self.kind = kind
        self.seconds = seconds
        self.limit = limit


def judge(clock: ProgressClock, now: float, limits: Limits) -> Expired | None:
    """The verdict at ``now``: a stall first (it names the cause), then the total time."""
    stalled = clock.stalled_for(now)
    if stalled > limits.stall_s:
        return Expired(Expiry.STALL, stalled, limits.stall_s)
    if now - clock.start > limits.total_s:
        return Expired(Expiry.TIMEOUT, now - clock.start, limits.total_s)
    return None


class Watchdog(Generic[T]):
    """Runs a caller's ``step`` until it returns a result, under the progress watchdog.

    ``sample`` reads one ``Sample`` (from the head); ``step`` is called every ``step_s`` and
    returns None to go on, a result to finish, or raises (a crash, a fatal log line), which
    ends the watch with that exception. ``Expired`` ends it on a stall or a timeout.
    Every task it starts is cancelled and awaited before ``watch`` returns or raises.
    """

    def __init__(
        self,
        limits: Limits,
        sample: Callable[[], Awaitable[Sample]],
        *,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        sample_s: float = SAMPLE_S,
        check_s: float = CHECK_S,
    ) -> None:
        self.limits = limits
        self.now = now
        self.clock = ProgressClock(now())
        self._sample = sample
        self._sleep = sleep
        self.sample_s = sample_s
        self.check_s = check_s
        self._watching = False

    def chunk(self) -> None:
        self.clock.chunk(self.now())

    async def _sampler(self) -> None:
        while self._watching:
            sample = await self._sample()
            self.clock.sample(self.now(), sample)
            await self._sleep(self.sample_s)

    async def _stepper(self, step: Callable[[], Awaitable[T | None]], step_s: float) -> T:
        while True:
            result = await step()
            if result is not None:
                return result
            await self._sleep(step_s)

    async def _checker(self) -> None:
        while self._watching:
            expired = judge(self.clock, self.now(), self.limits)
            if expired is not None:
                raise expired
            await self._sleep(self.check_s)

    async def watch(self, step: Callable[[], Awaitable[T | None]], step_s: float = 0.5) -> T:
        self._watching = True
        stepper = asyncio.ensure_future(self._stepper(step, step_s))
        guards = (asyncio.ensure_future(self._checker()), asyncio.ensure_future(self._sampler()))
        try:
            await asyncio.wait((stepper, *guards), return_when=asyncio.FIRST_COMPLETED)
            if stepper.done():
                return stepper.result()  # its result, or what it raised
            # The checker (Expired) or the sampler (the head stopped answering) ended it.
            for guard in guards:
                if guard.done():
                    guard.result()
            raise AssertionError("a watchdog task ended without a result")  # pragma: no cover
        finally:
            self._watching = False
            await cancel_and_wait(stepper, *guards)
