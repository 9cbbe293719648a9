"""The cluster as the dashboard shows it (``GET /api/cluster``): hosts, their links and
builds, the components with pids and uptime, and the health checks with their verdicts.

Reading it costs commands on every host (health gathers facts for about a second), so a
page load never reads it: ``ClusterWatch`` refreshes it in the background. The components
are read every ``COMPONENTS_S``, and at once when the daemon says something changed (a
state change, an incident, a recovery, a job's progress); health and builds every
``HEALTH_S`` and when the desired profile changes. The view is kept in memory and in
``STATE_DIR/dashboard/cluster.json``, so a restarted daemon serves the last one at once.

Everything here is read-only: health is ``run_health`` without iperf3 (each link shows its
last measurement from the record), the daemon's lease is not touched, and while a job has
the cluster health waits (its commands would perturb the measurement).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from pydantic import BaseModel, ValidationError

from cluster.config.models import Inventory
from cluster.config.resolve import serving_hosts
from cluster.daemon.context import DaemonContext, log
from cluster.daemon.events import Event
from cluster.daemon.models import ServingState
from cluster.daemon.supervisor import Supervisor
from cluster.errors import ClusterError
from cluster.orchestration import control, discovery
from cluster.orchestration.health import run_health
from cluster.orchestration.throughput import Mode, plan_from
from cluster.orchestration.verdicts import Check, Level
from cluster.store import Throughput

COMPONENTS_S = 10.0
HEALTH_S = 60.0
# Events after which what runs has changed: the components are read again at once (a
# job's progress too: a sweep reloads llama-server for every point).
CHANGES = frozenset({"state", "incident", "recovered", "adopted", "desired", "progress"})
SETTLE_S = 0.3  # events come in bursts (incident, state, state): read once after them


class HostView(BaseModel):
    name: str
    head: bool
    transport: str
    link_interface: str
    link_address: str
    rpc_port: int
    serving: bool = False  # one of the desired profile's hosts
    link: Level | None = None  # the health check of its link interface (None: not yet)
    link_detail: str = ""
    build: str | None = None  # the build identity's short digest
    build_text: str | None = None  # its one-line description
    build_problem: str = ""


class LinkView(BaseModel):
    """The path from the head to one worker over the link."""

    head: str
    worker: str
    address: str
    up: bool | None = None  # both ends up, routed over the link, answering pings
    detail: str = ""
    rtt: str | None = None
    throughput_bps: float | None = None  # the record's last iperf3 measurement
    measured_at: float | None = None


class ComponentView(BaseModel):
    host: str
    component: str
    pid: int | None
    alive: bool
    state: str
    uptime_s: int
    profile: str | None
    split: str | None
    port: int | None
    health: str


class CheckView(BaseModel):
    host: str
    name: str
    level: Level
    value: str
    detail: str


class ClusterView(BaseModel):
    name: str
    head: str
    hosts: list[HostView]
    links: list[LinkView]
    components: list[ComponentView] = []
    checks: list[CheckView] = []
    health_profile: str | None = None  # the profile health judged against
    components_at: float | None = None
    health_at: float | None = None
    health_s: float | None = None  # how long health took
    errors: dict[str, str] = {}  # what could not be read: by part or host
    note: str = ""


def initial_view(inventory: Inventory) -> ClusterView:
    """The inventory alone: what the page shows before the first refresh."""
    return ClusterView(
        name=inventory.cluster.name,
        head=inventory.head.name,
        hosts=hosts_view(inventory, {}, [], set()),
        links=links_view(inventory, [], {}),
    )


def hosts_view(
    inventory: Inventory,
    builds: Mapping[str, discovery.HostBuild],
    checks: Sequence[Check],
    serving: set[str],
) -> list[HostView]:
    link_checks = {c.host: c for c in checks if c.name == "link"}
    views = []
    for host in inventory.hosts.values():
        build = builds.get(host.name)
        link = link_checks.get(host.name)
        views.append(
            HostView(
                name=host.name,
                head=host.name == inventory.head.name,
                transport=host.transport,
                link_interface=host.link_interface,
                link_address=str(host.link_address),
                rpc_port=host.rpc_port,
                serving=host.name in serving,
                link=link.level if link else None,
                link_detail=link.detail if link else "",
                build=build.identity.short if build else None,
                build_text=build.identity.describe() if build else None,
                build_problem=build.problem if build else "",
            )
        )
    return views


def links_view(
    inventory: Inventory, checks: Sequence[Check], throughputs: Mapping[str, Throughput]
) -> list[LinkView]:
    """Each head -> worker path: up when both ends' links, the route and a ping are ok;
    the detail names the first check that is not."""
    head = inventory.head.name
    by_name = {(c.host, c.name): c for c in checks}
    views = []
    for worker in inventory.hosts.values():
        if worker.name == head:
            continue
        judged = [
            by_name.get((head, "link")),
            by_name.get((worker.name, "link")),
            by_name.get((head, f"route→{worker.name}")),
            by_name.get((head, f"rtt→{worker.name}")),
        ]
        known = [c for c in judged if c is not None]
        bad = next((c for c in known if c.level is Level.FAIL), None)
        rtt = by_name.get((head, f"rtt→{worker.name}"))
        measured = throughputs.get(worker.name)
        views.append(
            LinkView(
                head=head,
                worker=worker.name,
                address=str(worker.link_address),
                up=None if not known else bad is None,
                detail=f"{bad.host}: {bad.name}: {bad.detail}" if bad else "",
                rtt=rtt.value if rtt is not None and rtt.level is not Level.FAIL else None,
                throughput_bps=measured.bps if measured else None,
                measured_at=measured.at if measured else None,
            )
        )
    return views


def components_view(rows: Sequence[control.ComponentStatus]) -> list[ComponentView]:
    return [
        ComponentView(
            host=row.host,
            component=row.component,
            pid=row.pid,
            alive=row.alive,
            state=row.state,
            uptime_s=row.uptime_s,
            profile=row.profile,
            split=row.split,
            port=row.port,
            health=row.health,
        )
        for row in rows
    ]


class ClusterWatch:
    """Keeps ``view`` fresh in the background (``run``, a task of the daemon)."""

    def __init__(
        self,
        ctx: DaemonContext,
        supervisor: Supervisor,
        *,
        components_s: float = COMPONENTS_S,
        health_s: float = HEALTH_S,
    ) -> None:
        self.ctx = ctx
        self.supervisor = supervisor
        self.components_s = components_s
        self.health_s = health_s
        self.cache = ctx.state_dir / "dashboard" / "cluster.json"
        self._failed: dict[str, str] = {}  # by part: health, components
        self._unreachable: dict[str, str] = {}  # by host
        self.view = self._cached() or initial_view(ctx.inventory)

    def _cached(self) -> ClusterView | None:
        """The last view a daemon kept, when it is still of this inventory."""
        try:
            view = ClusterView.model_validate_json(self.cache.read_bytes())
        except (OSError, ValidationError):
            return None
        names = [host.name for host in view.hosts]
        return view if names == list(self.ctx.inventory.hosts) else None

    async def run(self) -> None:
        """Refresh forever (cancel to stop)."""
        next_health = 0.0
        with self.ctx.events.subscription() as queue:
            while True:
                if time.monotonic() >= next_health:
                    await self._guarded("health", self.refresh_health)
                    next_health = time.monotonic() + self.health_s
                await self._guarded("components", self.refresh_components)
                self._publish()
                wait = min(self.components_s, max(0.0, next_health - time.monotonic()))
                if "desired" in await _changed(queue, wait):
                    next_health = 0.0  # judge the new profile now

    async def _guarded(self, part: str, refresh: Callable[[], Awaitable[None]]) -> None:
        """One part's refresh; a failure is shown on the page and never ends the watch
        (the dashboard must not take the daemon down)."""
        self._failed.pop(part, None)
        try:
            await refresh()
        except ClusterError as exc:
            self._failed[part] = str(exc)
        except Exception as exc:  # a bug here must not stop serving: say it, go on
            log.exception("dashboard refresh failed", part=part)
            self._failed[part] = f"{type(exc).__name__}: {exc}"
        errors = {**self._failed, **self._unreachable}
        self.view = self.view.model_copy(update={"errors": errors})

    async def refresh_components(self) -> None:
        rows, self._unreachable = await control.status(self.ctx.pool, self.ctx.inventory)
        self.view = self.view.model_copy(
            update={"components": components_view(rows), "components_at": time.time()}
        )

    async def refresh_health(self) -> None:
        """Health against the desired profile (without iperf3), and every host's build;
        not while a job has the cluster."""
        if self.supervisor.state is ServingState.JOB:
            note = f"health waits while {self.supervisor.reason or 'a job'} has the cluster"
            self.view = self.view.model_copy(update={"note": note})
            return
        ctx, inventory = self.ctx, self.ctx.inventory
        name = ctx.record.desired().profile
        profile = ctx.profile(name) if name else None
        serving = {h.name for h in serving_hosts(inventory, profile)} if profile else set()
        started = time.monotonic()
        plan = plan_from(ctx.store, inventory.head.name, Mode.SKIP)
        checks = await run_health(ctx.pool, inventory, profile, throughput=plan)
        took = time.monotonic() - started
        found = await ctx.pool.each(discovery.read_build)
        builds = {h: b for h, b in found.items() if isinstance(b, discovery.HostBuild)}
        self.view = self.view.model_copy(
            update={
                "hosts": hosts_view(inventory, builds, checks, serving),
                "links": links_view(inventory, checks, plan.last),
                "checks": [CheckView(**c.as_dict()) for c in checks],
                "health_profile": name,
                "health_at": time.time(),
                "health_s": round(took, 2),
                "note": "",
            }
        )

    def _publish(self) -> None:
        self._save()
        view = self.view
        self.ctx.events.publish(
            "cluster", components_at=view.components_at, health_at=view.health_at
        )

    def _save(self) -> None:
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            partial = self.cache.with_suffix(".tmp")
            partial.write_text(self.view.model_dump_json(), encoding="utf-8")
            partial.replace(self.cache)
        except OSError as exc:
            log.warning("dashboard cache not written", path=str(self.cache), error=str(exc))


async def _changed(queue: asyncio.Queue[Event], timeout: float) -> set[str]:
    """Wait up to ``timeout`` for events that change what runs (then let their burst
    settle); their kinds. Other events (jobs, progress, the watch's own) are passed over."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = await asyncio.wait_for(queue.get(), left)
        except TimeoutError:
            return set()
        if event.kind in CHANGES:
            await asyncio.sleep(SETTLE_S)
            kinds = {event.kind}
            while not queue.empty():
                with contextlib.suppress(asyncio.QueueEmpty):
                    kinds.add(queue.get_nowait().kind)
            return kinds & CHANGES
    return set()
