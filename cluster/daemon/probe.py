"""Is the RPC group still serving? One probe of every part, classified.

In order, the first problem found is the answer:

1. every serving host answers a command (else ``host_unreachable``: wait for it);
2. every serving host's link interface is up (else ``link_down``: wait for it);
3. llama-server lives (else ``llama_server_exited``, with the cause from its log tail; a
   worker that died first is the cause: ``worker_died``), every rpc-server lives
   (``worker_died``) and none is stopped (``worker_stopped``: SIGSTOP, a debugger);
4. ``/health`` answers 200 (else ``unhealthy``);
5. when idle, at most every ``idle_probe_s``: a one-token completion comes back within the
   stall timeout (else ``hang``: a worker that stopped while nothing was asked).

A hang while a request is in flight is the request watch's (``RequestWatch``): the same
progress clock as loads and requests (``orchestration.watchdog``), fed by its own sampler,
judged every half second while ``/slots`` says a slot is busy (or does not answer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cluster import facts
from cluster.concurrency import cancel_and_wait
from cluster.config.models import HostConfig, Inventory, Profile
from cluster.config.resolve import serving_hosts
from cluster.daemon.models import IncidentClass
from cluster.errors import ClusterError
from cluster.llamacpp.client import LlamaClient
from cluster.orchestration import processes
from cluster.orchestration.control import RPC_SERVER
from cluster.orchestration.failures import (
    AttemptFailed,
    llama_server_failure,
    rpc_server_failure,
    worker_first,
)
from cluster.orchestration.watchdog import ProgressClock, Sample
from cluster.transport.pool import HostPool

WAIT_FOR_GATE = frozenset({IncidentClass.LINK_DOWN, IncidentClass.HOST_UNREACHABLE})


@dataclass(frozen=True)
class Problem:
    cls: IncidentClass
    evidence: str
    cause: str | None = None

    @property
    def waits_for_gate(self) -> bool:
        """Restarting cannot help until the link or the host is back."""
        return self.cls in WAIT_FOR_GATE


def _crash(failure: AttemptFailed) -> Problem:
    cls = (
        IncidentClass.WORKER_DIED
        if failure.component == RPC_SERVER
        else IncidentClass.LLAMA_SERVER_EXITED
    )
    return Problem(cls, failure.evidence, failure.failure.value)


async def _reachable(pool: HostPool, hosts: list[HostConfig]) -> Problem | None:
    answers = await pool.each(lambda t: t.run(["true"], timeout=10), [h.name for h in hosts])
    for answer in answers.values():
        if isinstance(answer, ClusterError):
            return Problem(IncidentClass.HOST_UNREACHABLE, str(answer))
    return None


async def _links(pool: HostPool, hosts: list[HostConfig]) -> Problem | None:
    for host in hosts:
        result = await pool[host.name].run(facts.link_command(host.link_interface))
        link = facts.parse_link(host.link_interface, result.exit_status, result.stdout)
        if not (link.exists and link.up):
            state = "missing" if not link.exists else "down"
            return Problem(
                IncidentClass.LINK_DOWN, f"{host.name}: {host.link_interface} is {state}"
            )
    return None


async def _components(
    pool: HostPool, head: HostConfig, rpc_hosts: list[HostConfig]
) -> Problem | None:
    dead = await llama_server_failure(pool, head)
    if dead is not None:
        return _crash(await worker_first(pool, rpc_hosts, dead))
    worker = await rpc_server_failure(pool, rpc_hosts)
    if worker is not None:
        return _crash(worker)
    for host in rpc_hosts:
        for managed in await processes.list_managed(pool[host.name], host.run_dir):
            if managed.name == RPC_SERVER and managed.state in ("T", "t"):
                return Problem(
                    IncidentClass.WORKER_STOPPED,
                    f"rpc-server on {host.name} (pid {managed.pid}) is stopped (state T)",
                )
    return None


async def probe(
    pool: HostPool,
    inventory: Inventory,
    profile: Profile,
    client: LlamaClient,
    *,
    idle_completion: bool,
) -> Problem | None:
    """One probe of the serving group; None when everything serves."""
    hosts = serving_hosts(inventory, profile)
    rpc_hosts = [inventory.hosts[name] for name in profile.rpc_hosts]
    for check in (_reachable(pool, hosts), _links(pool, hosts)):
        problem = await check
        if problem is not None:
            return problem
    problem = await _components(pool, inventory.head, rpc_hosts)
    if problem is not None:
        return problem
    health = await client.health()
    if not health.ready:
        return Problem(
            IncidentClass.UNHEALTHY,
            f"/health answered {health.status_code or 'nothing'}: {health.body[:120]}",
        )
    if idle_completion and await client.busy() is False:
        try:
            await asyncio.wait_for(
                client.completion("ping", n_predict=1), timeout=profile.stall_timeout_s
            )
        except TimeoutError:
            return Problem(
                IncidentClass.HANG,
                f"an idle one-token completion got no answer in {profile.stall_timeout_s:g}s",
            )
        except ClusterError as exc:
            return Problem(IncidentClass.UNHEALTHY, f"an idle one-token completion failed: {exc}")
    return None


class RequestWatch:
    """A hang with a request in flight: no progress (log, link, tokens) for the stall
    timeout while a slot is busy. Idle time is never a stall."""

    def __init__(
        self,
        sample: Callable[[], Awaitable[Sample]],
        busy: Callable[[], Awaitable[bool | None]],
        stall_s: float,
        *,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        sample_s: float = 0.25,
        check_s: float = 0.5,
    ) -> None:
        self._sample = sample
        self._busy = busy
        self.stall_s = stall_s
        self.now = now
        self._sleep = sleep
        self.sample_s = sample_s
        self.check_s = check_s
        self.clock = ProgressClock(now())

    async def _sampler(self) -> None:
        while True:
            self.clock.sample(self.now(), await self._sample())
            await self._sleep(self.sample_s)

    async def run(self) -> Problem:
        """Returns when a request hangs (the caller cancels it when serving ends)."""
        sampler = asyncio.ensure_future(self._sampler())
        try:
            while True:
                await self._sleep(self.check_s)
                busy = await self._busy()
                if busy is False:
                    self.clock.chunk(self.now())  # idle: nothing is late
                    continue
                stalled = self.clock.stalled_for(self.now())
                if stalled > self.stall_s:
                    state = "busy" if busy else "not answering /slots"
                    return Problem(
                        IncidentClass.HANG,
                        f"a request in flight made no progress for {stalled:.1f}s (stall "
                        f"timeout {self.stall_s:g}s; llama-server {state})",
                    )
        finally:
            await cancel_and_wait(sampler)
