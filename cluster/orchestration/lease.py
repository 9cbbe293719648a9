"""One mutating controller per cluster: a lease held on the head.

``up``, ``down``, ``bench``, ``screen``, ``ceiling``, ``sweep`` and the demo change what
runs on the cluster; two of them at once (two terminals, two controller machines, a cron
job and a person) race each other's processes. Each holds the cluster's lease for as long
as it runs: a file ``cluster.lease`` in the head's run directory, written under a lock
(``flock``) on the head, so two controller machines exclude each other too. The lease
names its holder: controller host, pid, command, since when.

- A second mutating command refuses at once with one line naming the holder
  (``ClusterBusy``, exit 8).
- A holder renews the lease every ``RENEW_S`` (the file's mtime on the head's clock). A
  holder is dead when it ran on this machine and its process is gone (pid and start time),
  or, from another machine, when its lease was not renewed for ``TTL_S``; a dead holder's
  lease is taken over, and the taker says so.
- ``down`` does not refuse: it asks the holder to stop (``cluster.lease.stop``), waits for
  it to release, then takes the lease. The holder sees the request when it renews and stops
  as Ctrl-C would stop it (SIGINT to itself): a sweep, screen or ceiling records the run
  as interrupted and prints how to resume.

Read-only commands (``status``, ``logs``, ``runs``, ``show``, ``health``) never take it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from cluster.concurrency import cancel_and_wait
from cluster.config.models import Inventory
from cluster.errors import ClusterBusy, ClusterError
from cluster.transport.base import Transport
from cluster.transport.pool import HostPool

log = structlog.get_logger(__name__)

RENEW_S = 5.0
# The daemon holds the lease for its life; one-shot commands go through its API instead.
DAEMON = "clusterctl daemon"
TTL_S = 30.0
STOP_WAIT_S = 90.0

# $1 run dir, $2 operation, $3 the token the caller expects to hold the lease ("" = none).
# Prints: the verdict, the lease's age in seconds on the head's clock (-1 when there is
# none), the pending stop request (one line, maybe empty), then the lease JSON.
LEASE_SCRIPT = r"""
dir=$1; op=$2; expect=$3
mkdir -p -- "$dir" || exit 75
exec 9>"$dir/cluster.lease.lock" || exit 75
flock -w 20 9 || { echo "the lease lock on $dir is held for over 20 s" >&2; exit 75; }
f="$dir/cluster.lease"
token=$(sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' "$f" 2>/dev/null | head -n 1)
verdict=LOST
case "$op" in
  read) verdict=READ ;;
  take) if [ "$token" = "$expect" ]; then
          cat > "$f.new" && mv -f -- "$f.new" "$f" && rm -f -- "$f.stop" && verdict=TAKEN
        fi ;;
  renew) [ -n "$expect" ] && [ "$token" = "$expect" ] && touch -- "$f" && verdict=RENEWED ;;
  release) [ -n "$expect" ] && [ "$token" = "$expect" ] && rm -f -- "$f" "$f.stop" \
             && verdict=RELEASED ;;
  stop) [ -n "$expect" ] && [ "$token" = "$expect" ] && cat > "$f.stop" && verdict=ASKED ;;
esac
if [ -f "$f" ]; then age=$(( $(date +%s) - $(stat -c %Y -- "$f") )); else age=-1; fi
echo "$verdict"
echo "$age"
head -n 1 -- "$f.stop" 2>/dev/null | tr -d '\n'; echo
cat -- "$f" 2>/dev/null
exit 0
"""


@dataclass(frozen=True)
class Holder:
    """Who holds (or wants) the lease."""

    host: str
    boot_id: str
    pid: int
    start_ticks: int
    command: str
    since: float
    token: str

    @classmethod
    def me(cls, command: str) -> Holder:
        return cls(
            socket.gethostname(),
            _boot_id(),
            os.getpid(),
            _start_ticks(os.getpid()) or 0,
            command,
            time.time(),
            uuid.uuid4().hex,
        )

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"`{self.command}` (pid {self.pid} on {self.host}, since {since})"

    def on_this_machine(self) -> bool:
        return self.host == socket.gethostname() and self.boot_id == _boot_id()


@dataclass(frozen=True)
class LeaseState:
    verdict: str
    age_s: float | None
    stop_request: str
    holder: Holder | None

    def holder_alive(self) -> bool:
        """Is the holder still there? Its process, when it ran here; its renewals, else."""
        holder = self.holder
        if holder is None:
            return False
        if holder.on_this_machine():
            return _start_ticks(holder.pid) == holder.start_ticks
        return self.age_s is not None and self.age_s < TTL_S


def parse_state(stdout: str) -> LeaseState:
    """LEASE_SCRIPT's output; a lease file that is not a holder record reads as none."""
    verdict, age, stop, *rest = [*stdout.split("\n", 3), "", "", "", ""][:4]
    holder = None
    try:
        data = json.loads(rest[0]) if rest and rest[0].strip() else None
        holder = Holder(**data) if isinstance(data, dict) else None
    except (ValueError, TypeError):
        holder = None
    try:
        age_s: float | None = float(age) if float(age) >= 0 else None
    except ValueError:
        age_s = None
    return LeaseState(verdict.strip(), age_s, stop.strip(), holder)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19]) if len(fields) > 19 and fields[0] not in ("Z", "X") else None


class ClusterLease:
    """The lease file on the head, through the head's transport."""

    def __init__(self, transport: Transport, run_dir: str) -> None:
        self.transport = transport
        self.run_dir = run_dir

    async def op(self, op: str, expect: str = "", stdin: str | None = None) -> LeaseState:
        argv = ["sh", "-c", LEASE_SCRIPT, "clusterctl", self.run_dir, op, expect]
        result = await self.transport.run(argv, stdin=stdin, timeout=60)
        if result.exit_status != 0:
            problem = result.stderr.strip() or f"exit {result.exit_status}"
            raise ClusterError(f"{self.transport.name}: the cluster lease: {problem}")
        return parse_state(result.stdout)

    async def read(self) -> LeaseState:
        return await self.op("read")

    async def take(self, me: Holder, expect: str) -> LeaseState:
        return await self.op("take", expect, json.dumps(asdict(me)))


def _stop_myself(reason: str) -> None:
    """Stop this command as Ctrl-C would: runs record themselves as interrupted."""
    log.warning("stopping", reason=reason)
    os.kill(os.getpid(), signal.SIGINT)


@contextlib.asynccontextmanager
async def hold(
    pool: HostPool,
    inventory: Inventory,
    command: str,
    *,
    say: Callable[[str], None] = lambda message: None,
    take_from_jobs: bool = False,
    on_stop: Callable[[str], None] = _stop_myself,
) -> AsyncIterator[Holder]:
    """Hold the cluster's lease while the body runs; refuse (ClusterBusy) if another live
    controller holds it, or, with ``take_from_jobs`` (``down``), ask it to stop first."""
    lease = ClusterLease(pool[inventory.cluster.head], inventory.head.run_dir)
    me = Holder.me(command)
    await _acquire(lease, me, say, take_from_jobs)
    renewer = asyncio.create_task(_renew(lease, me, say, on_stop))
    try:
        yield me
    finally:
        await cancel_and_wait(renewer)
        with contextlib.suppress(ClusterError):
            await lease.op("release", me.token)


async def _acquire(
    lease: ClusterLease, me: Holder, say: Callable[[str], None], take_from_jobs: bool
) -> None:
    state = await lease.read()
    asked = False
    deadline = time.monotonic() + STOP_WAIT_S
    while True:
        holder = state.holder
        if holder is not None and state.holder_alive():
            if holder.command.startswith(DAEMON):
                raise ClusterBusy(
                    f"the daemon {holder.describe()} supervises this cluster: ask it with "
                    "`clusterctl serve`, `submit`, `jobs` (or stop the daemon first)"
                )
            if not take_from_jobs:
                raise ClusterBusy(
                    f"the cluster is busy: {holder.describe()} holds its lease on "
                    f"{lease.transport.name}; wait for it, or stop it with `clusterctl down`"
                )
            if not asked:
                say(f"asking {holder.describe()} to stop")
                await lease.op("stop", holder.token, me.describe() + "\n")
                asked = True
            if time.monotonic() > deadline:
                raise ClusterBusy(
                    f"{holder.describe()} did not stop within {STOP_WAIT_S:g}s of being "
                    "asked; stop it by hand"
                )
            await asyncio.sleep(0.5)
            state = await lease.read()
            continue
        if holder is not None:
            say(f"taking over the cluster lease of {holder.describe()}: it is no longer running")
        taken = await lease.take(me, holder.token if holder is not None else "")
        if taken.verdict == "TAKEN":
            return
        state = taken  # someone else got in between: judge the new holder


async def _renew(
    lease: ClusterLease, me: Holder, say: Callable[[str], None], on_stop: Callable[[str], None]
) -> None:
    stopped = False
    while True:
        await asyncio.sleep(RENEW_S)
        try:
            state = await lease.op("renew", me.token)
        except ClusterError as exc:
            log.warning("lease renewal failed", error=str(exc))
            continue
        if stopped:
            continue
        if state.verdict == "LOST":
            now = state.holder.describe() if state.holder else "nobody"
            say(f"lost the cluster lease (now held by {now}): stopping")
            on_stop("lease lost")
            stopped = True
        elif state.stop_request:
            say(f"{state.stop_request} asked this job to stop: stopping")
            on_stop(state.stop_request)
            stopped = True
