"""A profile serving for a measurement job, and one watched request against it.

A bench, screen or ceiling needs the cluster up with a given profile (possibly with
overrides such as ctx size and slots), an HTTP client to its llama-server, and a way to
tell, while a request runs, whether it progresses, hangs, or a component died.

``Serving.start`` reuses a llama-server that already serves exactly this profile and split
(its ``serving_key`` matches and ``/health`` is 200), so a user who ran ``up`` does not pay
a reload; otherwise it launches through the ``up`` machinery (watchdog, retries) and
records the attempts in the job's run.

``Serving.request`` streams one completion under a watchdog: progress is a stream chunk,
new llama-server log output (prompt processing logs each batch) or link traffic. No
progress for the stall limit is a hang; the whole request beyond its limit is a timeout; a
component that exits is classified from its exit status and log tail. A failure is an
``AttemptFailed`` with its class, like a failed launch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cluster.concurrency import cancel_and_wait
from cluster.config.models import Inventory, Profile
from cluster.llamacpp.client import LlamaClient
from cluster.llamacpp.logs import FailureClass, match_signature
from cluster.measure.request import RequestFailed, RequestSample, stream_completion
from cluster.orchestration import processes, watchdog
from cluster.orchestration.control import LLAMA_SERVER
from cluster.orchestration.discovery import HostBuild
from cluster.orchestration.failures import (
    AttemptFailed,
    llama_server_failure,
    rpc_server_failure,
    worker_first,
)
from cluster.orchestration.health import gate
from cluster.orchestration.launch import Launcher, LaunchResult
from cluster.store import Store
from cluster.transport.pool import HostPool

POLL_S = 0.5
# After a request breaks, how long a dying component gets to show as dead.
DEATH_GRACE_S = 5.0


@dataclass(frozen=True)
class RequestLimits:
    """How long a request may go without progress, and in all."""

    stall_s: float
    total_s: float


@dataclass(frozen=True)
class ServerInfo:
    """What the serving llama-server says about itself (``/props``)."""

    slots: int
    slot_ctx: int
    build_info: str


class Serving:
    """One profile brought to serving for a job whose run records the launches."""

    def __init__(
        self,
        inventory: Inventory,
        profile: Profile,
        pool: HostPool,
        store: Store,
        run_id: int,
        *,
        split: list[float] | None = None,
        environ: Mapping[str, str] | None = None,
        say: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.inventory = inventory
        self.profile = profile
        self.pool = pool
        self.store = store
        self.run_id = run_id
        self.say = say
        self.environ = dict(environ or {})
        self.launcher = Launcher(
            inventory, profile, pool, store, split=split, environ=self.environ, say=say
        )
        self.head = inventory.head
        self.rpc_hosts = self.launcher.rpc_hosts
        self.reused = False
        self.loads: list[LaunchResult] = []
        self._client: LlamaClient | None = None
        self.info: ServerInfo | None = None

    @property
    def client(self) -> LlamaClient:
        if self._client is None:
            raise RuntimeError("Serving.start() first")
        return self._client

    async def _connect(self) -> None:
        if self._client is None:
            address = await self.pool[self.head.name].open_tunnel(
                self.profile.bind_host, self.profile.port
            )
            self._client = LlamaClient(
                f"http://{address[0]}:{address[1]}",
                self.launcher.api_key,
                timeout_s=None,
            )
        props = await self.client.props()
        settings = props.get("default_generation_settings", {})
        self.info = ServerInfo(
            slots=int(props.get("total_slots", 1)),
            slot_ctx=int(settings.get("n_ctx", 0)) if isinstance(settings, dict) else 0,
            build_info=str(props.get("build_info", "")),
        )

    async def _already_serving(self) -> bool:
        listed = await processes.list_managed(self.pool[self.head.name], self.head.run_dir)
        await self.launcher.read_builds()
        key = self.launcher.serving_key
        if not any(
            p.name == LLAMA_SERVER and p.alive and p.meta.get("serving_key") == key for p in listed
        ):
            return False
        if await rpc_server_failure(self.pool, self.rpc_hosts) is not None:
            return False
        await self._connect()
        return (await self.client.health()).ready

    async def start(self, *, reuse: bool = True, health_gate: bool = True) -> None:
        """Serve the profile: reuse a matching running server, or launch (gate first)."""
        if reuse and await self._already_serving():
            self.reused = True
            self.say(f"reusing the running {self.profile.name} (split {self.split_text})")
            self.store.event(self.run_id, "reused_server", serving_key=self.launcher.serving_key)
            return
        # The builds were read moments ago (by the reuse check, then the gate): the launch
        # does not read them again.
        builds: Mapping[str, HostBuild] = dict(self.launcher.host_builds)
        if health_gate:
            self.say(f"health gate for {self.profile.name}...")
            builds = await gate(self.pool, self.inventory, self.profile)
        await self.restart(builds)

    async def restart(self, builds: Mapping[str, HostBuild] | None = None) -> LaunchResult:
        """Stop every component and bring the profile up again (with the launch retries);
        ``builds`` read by this command just before need not be read again."""
        result = await self.launcher.up(self.run_id, builds=builds)
        self.loads.append(result)
        await self._connect()
        return result

    async def reload(self, split: list[float]) -> LaunchResult:
        """Serve another split: llama-server alone is restarted while the rpc-servers keep
        running (their tensor caches spare resending unchanged weights)."""
        self.launcher = Launcher(
            self.inventory,
            self.profile,
            self.pool,
            self.store,
            split=split,
            environ=self.environ,
            say=self.say,
        )
        result = await self.launcher.up(self.run_id, keep_rpc=True)
        self.loads.append(result)
        await self._connect()
        return result

    @property
    def split_text(self) -> str:
        return "/".join(f"{part:g}" for part in self.launcher.split)

    async def failure(self) -> AttemptFailed | None:
        """A component that is gone, classified: a dead rpc-server is the cause when
        llama-server died of losing it; otherwise llama-server's own log, then each
        rpc-server's."""
        dead = await llama_server_failure(self.pool, self.head)
        if dead is not None:
            return await worker_first(self.pool, self.rpc_hosts, dead)
        return await rpc_server_failure(self.pool, self.rpc_hosts)

    async def log_tails(self) -> dict[str, str]:
        return await self.launcher.log_tails()

    async def request(self, payload: Mapping[str, Any], limits: RequestLimits) -> RequestSample:
        """Stream one completion under the progress watchdog (``orchestration.watchdog``,
        the same one a load runs under: tokens, log growth or link traffic are progress);
        raise AttemptFailed when it fails."""
        bounds = watchdog.Limits(limits.stall_s, limits.total_s)
        dog: watchdog.Watchdog[RequestSample] = watchdog.Watchdog(
            bounds, self.launcher.progress_sample
        )
        task = asyncio.create_task(
            stream_completion(self.client.http, payload, on_progress=dog.chunk)
        )

        async def step() -> RequestSample | None:
            if task.done():
                return await self._outcome(task)
            dead = await self.failure()
            if dead is not None:
                raise dead
            return None

        try:
            return await dog.watch(step, POLL_S)
        except watchdog.Expired as expired:
            if expired.kind is watchdog.Expiry.TIMEOUT:
                raise AttemptFailed(
                    FailureClass.TIMEOUT, f"request took over {limits.total_s:g}s", LLAMA_SERVER
                ) from None
            raise AttemptFailed(
                FailureClass.HANG,
                f"no tokens, log output or link traffic for {expired.seconds:.1f}s "
                f"(stall limit {limits.stall_s:g}s)",
                LLAMA_SERVER,
            ) from None
        finally:
            await cancel_and_wait(task)

    async def _outcome(self, task: asyncio.Task[RequestSample]) -> RequestSample:
        try:
            return task.result()
        except RequestFailed as failed:
            # A broken stream is usually a component dying: give it a moment to show.
            deadline = time.monotonic() + (DEATH_GRACE_S if failed.kind != "http_status" else 0)
            while True:
                dead = await self.failure()
                if dead is not None:
                    raise dead from failed
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(POLL_S)
            # The server lives on: its answer names the cause (e.g. the context is full).
            known = match_signature(failed.message)
            cls = known.cls if known is not None else FailureClass.HTTP_ERROR
            raise AttemptFailed(cls, str(failed), LLAMA_SERVER) from failed

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
