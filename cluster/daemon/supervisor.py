"""Keeps the desired profile serving: the RPC group supervised as one unit.

Every ``probe_interval_s`` (or at once when woken: a new desired state, a hang seen by the
request watch, a job done) ``tick`` reconciles what is desired with what runs:

- nothing desired: stop what runs;
- the desired profile, split and build already serve (the components' ``serving_key``):
  probe them (``probe.probe``); a problem opens an incident and restarts the group;
- otherwise: adopt what runs when it matches (after the daemon's own restart), or start
  the group through the ``up`` machinery (health gate, watchdog, retries, records).

A restart is the whole group (every rpc-server, then llama-server): llama.cpp's RPC client
cannot reconnect to a worker, so a lost worker means a new llama-server too. The first
restart after an incident is immediate; every further failure doubles the wait, up to
``backoff_cap_s``, and never gives up; the count is forgotten after ``stable_s`` of
serving. A failing health gate (a link down, a host missing) is not a failure to back off
from: nothing is started, the daemon waits in ``degraded`` and tries the gate again.
Each incident is a record: class, evidence, log tails, restarts, time to recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator

from cluster.config.models import HostConfig, Profile, format_split
from cluster.config.resolve import serving_hosts
from cluster.daemon.context import DaemonContext, log
from cluster.daemon.models import Incident, IncidentClass, Serving, ServingState
from cluster.daemon.probe import Problem, RequestWatch, probe
from cluster.errors import ClusterError, LaunchError
from cluster.llamacpp.client import LlamaClient
from cluster.orchestration import processes
from cluster.orchestration.control import LLAMA_SERVER, RPC_SERVER, stop_components
from cluster.orchestration.discovery import HostBuild
from cluster.orchestration.health import gate
from cluster.orchestration.launch import Launcher
from cluster.orchestration.retry import capped_backoff


def _config_key(profile: Profile, split: list[float] | None) -> str:
    text = json.dumps([profile.model_dump(mode="json"), split], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Supervisor:
    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self.state = ServingState.IDLE
        self.reason = ""
        self.serving = Serving()
        self.launcher: Launcher | None = None
        self.client: LlamaClient | None = None
        self.incident: Incident | None = None
        self.failures = 0
        self.next_try: float | None = None
        self.stable_since: float | None = None
        self.last_idle_probe = 0.0
        self._wake = asyncio.Event()
        # Set while the desired profile serves: the front door's waiting requests go on.
        self.serving_now = asyncio.Event()
        # A tick and the lending of the cluster to a job exclude each other: a job never
        # launches while a tick is starting the group (two spawns of one component).
        self._turn = asyncio.Lock()
        self._lent_to: str | None = None
        # The profile values and split of what serves (``_config_key``): a change of the
        # desired state, or of the profile file, means a reload.
        self.config_key: str | None = None
        self.gate_needed = True
        self._watch: asyncio.Task[Problem] | None = None

    # --- state --------------------------------------------------------------------------

    def set_state(self, state: ServingState, reason: str = "") -> None:
        if (state, reason) == (self.state, self.reason):
            return
        self.state, self.reason = state, reason
        if state is ServingState.SERVING:
            self.serving_now.set()
        else:
            self.serving_now.clear()
        self.ctx.metrics.set_state(state)
        self.ctx.events.publish("state", state=state.value, reason=reason)
        log.info("state", state=state.value, reason=reason)

    def wake(self) -> None:
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile forever (cancel to stop: what serves is left serving)."""
        try:
            while True:
                try:
                    await self.tick()
                except ClusterError as exc:
                    self.set_state(ServingState.DEGRADED, str(exc))
                await self._pause()
        finally:
            self._stop_watch()
            await self._close_client()

    async def _pause(self) -> None:
        waits = [
            asyncio.ensure_future(asyncio.sleep(self.ctx.config.probe_interval_s)),
            asyncio.ensure_future(self._wake.wait()),
        ]
        watching = [self._watch] if self._watch is not None else []
        try:
            await asyncio.wait([*waits, *watching], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
            self._wake.clear()

    async def tick(self) -> None:
        async with self._turn:
            await self._tick()

    async def _tick(self) -> None:
        if self._lent_to is not None:
            self.set_state(ServingState.JOB, self._lent_to)
            return
        desired = self.ctx.record.desired()
        if desired.profile is None:
            if self.state is not ServingState.IDLE:
                await self.stop_serving()
            return
        profile = self.ctx.profile(desired.profile)
        wanted = _config_key(profile, desired.split)
        if self.state is ServingState.SERVING and self.config_key == wanted:
            # What serves was started (or adopted) for this very desired state: probe it.
            # Build identities are read again only when the group (re)starts.
            problem = await self._check(profile)
            if problem is None:
                self._forget_failures()
                return
            await self._open_incident(problem)
        launcher = Launcher(
            self.ctx.inventory,
            profile,
            self.ctx.pool,
            self.ctx.store,
            split=desired.split,
            environ=dict(self.ctx.environ),
            say=self.ctx.say,
        )
        await launcher.read_builds()
        self.config_key = wanted
        if self.incident is None and await self._adopt(launcher, profile):
            return
        await self._start(launcher, profile)

    # --- probing ----------------------------------------------------------------------------

    async def _check(self, profile: Profile) -> Problem | None:
        if self._watch is not None and self._watch.done():
            watched, self._watch = self._watch, None
            problem = None if watched.cancelled() else watched.result()
            if problem is not None:
                return problem
        assert self.client is not None
        now = time.monotonic()
        idle = now - self.last_idle_probe >= self.ctx.config.idle_probe_s
        if idle:
            self.last_idle_probe = now
        if self._watch is None:
            self._start_watch(profile)
        return await probe(
            self.ctx.pool, self.ctx.inventory, profile, self.client, idle_completion=idle
        )

    def _start_watch(self, profile: Profile) -> None:
        assert self.launcher is not None and self.client is not None
        client = self.client
        watch = RequestWatch(self.launcher.progress_sample, client.busy, profile.stall_timeout_s)
        self._watch = asyncio.ensure_future(watch.run())

    def _stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _forget_failures(self) -> None:
        stable = self.stable_since is not None and time.time() - self.stable_since
        if stable and stable >= self.ctx.config.stable_s:
            self.failures = 0

    # --- incidents --------------------------------------------------------------------------

    async def _open_incident(self, problem: Problem) -> None:
        self._stop_watch()
        tails = await self.launcher.log_tails() if self.launcher is not None else {}
        incident = self.ctx.record.add_incident(
            Incident(
                cls=problem.cls,
                evidence=problem.evidence,
                cause=problem.cause,
                log_tails=tails,
                started=time.time(),
            )
        )
        self.incident = incident
        self.failures += 1
        self.next_try = None if self.failures == 1 else time.time() + self._backoff()
        self.serving = Serving()
        self.ctx.metrics.incidents.labels(problem.cls.value).inc()
        self.ctx.events.publish("incident", **incident.model_dump(mode="json"))
        log.warning("incident", cls=problem.cls.value, evidence=problem.evidence)
        self.set_state(ServingState.RECOVERING, f"{problem.cls.value}: {problem.evidence}")
        self.gate_needed = problem.waits_for_gate or problem.cls is IncidentClass.LAUNCH_FAILED
        if problem.waits_for_gate:
            # The group cannot serve without the link or the host: stop it once, start
            # nothing until the health gate passes again.
            await stop_components(self.ctx.pool, self._serving_hosts())

    def _backoff(self) -> float:
        config = self.ctx.config
        return capped_backoff(self.failures - 2, config.backoff_base_s, config.backoff_cap_s)

    def _close_incident(self) -> None:
        incident = self.incident
        if incident is None:
            return
        recovered = incident.model_copy(update={"recovered": time.time()})
        self.ctx.record.save_incident(recovered)
        self.incident = None
        seconds = recovered.time_to_recover_s or 0.0
        self.ctx.metrics.recover_seconds.observe(seconds)
        self.ctx.events.publish("recovered", **recovered.model_dump(mode="json"))
        log.info("recovered", cls=recovered.cls.value, seconds=round(seconds, 2))

    # --- starting and adopting ----------------------------------------------------------------

    async def _start(self, launcher: Launcher, profile: Profile) -> None:
        if self.next_try is not None and time.time() < self.next_try:
            wait = self.next_try - time.time()
            self.set_state(ServingState.RECOVERING, f"next restart in {wait:.0f}s")
            return
        self._stop_watch()
        builds: dict[str, HostBuild] | None = None  # the gate's, so the launch reads none
        if self.gate_needed:
            # The first start, and after a link or host went away: the whole health gate.
            # After a crash or a hang the probe has just seen every host and link answer,
            # so the restart goes straight to the launch (its own checks still run).
            try:
                builds = await gate(self.ctx.pool, self.ctx.inventory, profile)
            except LaunchError as exc:
                self.set_state(ServingState.DEGRADED, f"waiting for the health gate: {exc}")
                return
        restarting = self.incident is not None
        self.set_state(
            ServingState.RECOVERING if restarting else ServingState.STARTING,
            f"starting {profile.name}",
        )
        if restarting and self.incident is not None:
            self.incident = self.incident.model_copy(
                update={"restarts": self.incident.restarts + 1}
            )
            self.ctx.record.save_incident(self.incident)
            self.ctx.metrics.restarts.labels(self.incident.cls.value).inc()
        try:
            result = await launcher.up(builds=builds)
        except LaunchError as exc:
            if self.incident is None:
                await self._open_incident(Problem(IncidentClass.LAUNCH_FAILED, str(exc)))
            else:
                self.failures += 1
                self.next_try = time.time() + self._backoff()
            wait = (self.next_try or time.time()) - time.time()
            self.set_state(ServingState.RECOVERING, f"{exc}; next restart in {wait:.0f}s")
            return
        self.ctx.metrics.load_seconds.observe(result.load_seconds)
        self.gate_needed = False
        await self._serve(launcher, profile, time.time())

    async def _serve(self, launcher: Launcher, profile: Profile, since: float) -> None:
        self.launcher = launcher
        self.serving = Serving(
            profile=profile.name,
            split=format_split(launcher.split),
            endpoint=f"http://{profile.bind_host}:{profile.port}",
            since=since,
            serving_key=launcher.serving_key,
            pids=await self._pids(),
        )
        await self._open_client(profile)
        self._close_incident()
        self.next_try = None
        self.stable_since = time.time()
        self.last_idle_probe = time.monotonic()
        self.set_state(ServingState.SERVING, f"{profile.name} split {self.serving.split}")
        self._start_watch(profile)

    async def _adopt(self, launcher: Launcher, profile: Profile) -> bool:
        """What runs already serves the desired profile, split and build: take it over."""
        head = self.ctx.inventory.head
        listed = await processes.list_managed(self.ctx.pool[head.name], head.run_dir)
        server = next((p for p in listed if p.name == LLAMA_SERVER and p.alive), None)
        if server is None or server.meta.get("serving_key") != launcher.serving_key:
            return False
        for name in profile.rpc_hosts:
            host = self.ctx.inventory.hosts[name]
            workers = await processes.list_managed(self.ctx.pool[name], host.run_dir)
            if not any(p.name == RPC_SERVER and p.alive for p in workers):
                return False
        self.launcher = launcher
        await self._open_client(profile)
        assert self.client is not None
        if not (await self.client.health()).ready:
            return False
        started = server.meta.get("started_at")
        await self._serve(launcher, profile, float(started) if started else time.time())
        self.ctx.events.publish("adopted", profile=profile.name, pids=self.serving.pids)
        log.info("adopted", profile=profile.name, pids=self.serving.pids)
        return True

    async def _pids(self) -> dict[str, int]:
        pids = {}
        for host in self._serving_hosts():
            for p in await processes.list_managed(self.ctx.pool[host.name], host.run_dir):
                if p.alive and p.name in (LLAMA_SERVER, RPC_SERVER):
                    pids[f"{host.name}/{p.name}"] = p.pid
        return pids

    def _serving_hosts(self) -> list[HostConfig]:
        desired = self.ctx.record.desired()
        if desired.profile is None:
            return list(self.ctx.inventory.hosts.values())
        return serving_hosts(self.ctx.inventory, self.ctx.profile(desired.profile))

    # --- the client ------------------------------------------------------------------------

    async def _open_client(self, profile: Profile) -> None:
        head = self.ctx.inventory.head
        address = await self.ctx.pool[head.name].open_tunnel(profile.bind_host, profile.port)
        url = f"http://{address[0]}:{address[1]}"
        if self.client is not None and self.client.base_url == url:
            return
        await self._close_client()
        self.client = LlamaClient(url, profile.api_key(self.ctx.environ), timeout_s=30)

    async def _close_client(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    # --- stopping and lending ----------------------------------------------------------------

    async def stop_serving(self) -> None:
        self.set_state(ServingState.STOPPING, "nothing is desired")
        self._stop_watch()
        await stop_components(self.ctx.pool, list(self.ctx.inventory.hosts.values()))
        self.serving = Serving()
        self.launcher = None
        self.config_key = None
        await self._close_client()
        self.set_state(ServingState.IDLE)

    @contextlib.asynccontextmanager
    async def lend(self, why: str) -> AsyncIterator[None]:
        """Give the cluster to a job: drain first (requests in flight finish, bounded),
        stop supervising while it runs, restore the desired serving state after it."""
        async with self._turn:
            self.set_state(ServingState.JOB, f"draining for {why}")
            deadline = time.monotonic() + self.ctx.config.drain_timeout_s
            while self.client is not None and time.monotonic() < deadline:
                if await self.client.busy() is False:
                    break
                await asyncio.sleep(0.5)
            self._lent_to = why
            self._stop_watch()
            self.set_state(ServingState.JOB, why)
        try:
            yield
        finally:
            self._lent_to = None
            self.serving = Serving()
            self.set_state(ServingState.STARTING, f"{why} done: restoring the desired state")
            self.wake()
