"""Gathering the facts of every host, concurrently, over the hosts' transports.

``gather`` runs the fact commands of ``cluster.facts`` on each host and returns one
``HostFacts`` per host; a host that cannot be reached is a record with its error, not an
exception. Judging the facts is ``cluster.orchestration.health``'s job.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cluster import facts
from cluster.concurrency import together
from cluster.config.models import HostConfig, Inventory
from cluster.errors import ClusterError
from cluster.firewall import Firewall, parse_ruleset, ruleset_command
from cluster.llamacpp.identity import BuildIdentity
from cluster.orchestration import processes
from cluster.orchestration.discovery import HostBuild, read_build
from cluster.transport.base import Transport
from cluster.transport.pool import HostPool

IPERF_PORT = 5201
# Routes and pings run from the head to several workers at once, over its one ssh
# connection; OpenSSH allows 10 sessions on a connection by default (MaxSessions), and a
# launch's lease renewal may hold one more.
PATH_CONCURRENCY = 8

# Whether to measure the throughput to the workers: all, none, or those a predicate names.
Measure = bool | Callable[[str], bool]


@dataclass
class PathFacts:
    """What the head sees of the way to one worker's link address."""

    worker: str
    route: facts.Route
    rtt_ms: float | None = None
    throughput_bps: float | None = None
    throughput_note: str = ""


@dataclass
class HostFacts:
    host: HostConfig
    ssh_s: float | None = None
    error: str | None = None
    link: facts.LinkState | None = None
    memory: facts.Memory | None = None
    listeners: list[facts.Listener] = field(default_factory=list)
    servers: list[facts.ServerProcess] = field(default_factory=list)
    build: HostBuild | None = None
    has_iperf: bool = False
    managed: list[processes.ManagedProcess] = field(default_factory=list)
    # What keeps the link private: interfaces with a default route, the nftables rules,
    # and the addresses the controller reaches this host by (resolved here).
    default_routes: tuple[str, ...] = ()
    firewall: Firewall | None = None
    reached_by: tuple[str, ...] = ()
    paths: list[PathFacts] = field(default_factory=list)
    files: dict[str, int | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def our_pids(self) -> set[int]:
        """The wrappers clusterctl started here and the servers running under them."""
        wrappers = {p.pid for p in self.managed if p.alive}
        return wrappers | {s.pid for s in self.servers if s.session in wrappers}

    @property
    def reachable(self) -> bool:
        return self.error is None

    @property
    def binaries(self) -> frozenset[str]:
        return self.build.binaries if self.build else frozenset()

    @property
    def rpc_binary(self) -> str | None:
        return self.build.rpc_binary if self.build else None

    @property
    def identity(self) -> BuildIdentity:
        return self.build.identity if self.build else BuildIdentity(note="not read")


async def _gather_one(transport: Transport, want_rpc_probe: bool) -> HostFacts:
    host = transport.host
    found = HostFacts(host)
    start = time.monotonic()
    try:
        await transport.connect()
        await transport.run(["true"], check=True)
    except ClusterError as exc:
        found.error = str(exc).split(": ", 1)[-1]
        return found
    found.ssh_s = time.monotonic() - start

    async def link() -> None:
        result = await transport.run(facts.link_command(host.link_interface))
        found.link = facts.parse_link(host.link_interface, result.exit_status, result.stdout)

    async def memory() -> None:
        found.memory = facts.parse_memory((await transport.run(facts.memory_command())).stdout)

    async def listeners() -> None:
        found.listeners = facts.parse_listeners(
            (await transport.run(facts.listeners_command())).stdout
        )

    async def servers() -> None:
        found.servers = facts.parse_processes(
            (await transport.run(facts.processes_command())).stdout
        )

    async def build() -> None:
        found.build = await read_build(transport, probe_rpc=want_rpc_probe)
        tools = await transport.run(["sh", "-c", "command -v iperf3; exit 0"])
        found.has_iperf = "iperf3" in tools.stdout

    async def exposure() -> None:
        routes = await transport.run(facts.default_route_command())
        found.default_routes = facts.parse_default_routes(routes.exit_status, routes.stdout)
        rules = await transport.run(ruleset_command())
        found.firewall = parse_ruleset(rules.exit_status, rules.stdout, rules.stderr)
        found.reached_by = await _controller_addresses(host)

    async def managed() -> None:
        found.managed = await processes.list_managed(transport, host.run_dir)

    try:
        await asyncio.gather(
            link(), memory(), listeners(), servers(), build(), managed(), exposure()
        )
    except ClusterError as exc:
        found.error = f"reading facts failed: {exc}"
    return found


async def _paths_from_head(
    pool: HostPool, head: HostFacts, workers: list[HostFacts], measure_throughput: Measure
) -> None:
    """Route, round trip and (where asked, and iperf3 exists on both ends) throughput
    head -> worker."""
    transport = pool[head.name]
    sessions = asyncio.Semaphore(PATH_CONCURRENCY)

    async def reach(worker: HostFacts) -> PathFacts:
        destination = str(worker.host.link_address)
        async with sessions:
            result = await transport.run(facts.route_command(destination))
            path = PathFacts(
                worker.name,
                facts.parse_route(destination, result.exit_status, result.stdout, result.stderr),
            )
            ping = await transport.run(
                facts.ping_command(destination, head.host.link_interface), timeout=15
            )
        path.rtt_ms = facts.parse_ping(ping.stdout)
        return path

    # A route and a few pings per worker, several workers at once: a ping round takes about
    # a second, so paths no longer add up worker by worker. The iperf3 runs stay one after
    # the other: run at once they would share the head's link and each measure a fraction.
    paths = await together(*(reach(worker) for worker in workers))
    head.paths.extend(paths)
    for worker, path in zip(workers, paths, strict=True):
        wanted = (
            measure_throughput(worker.name) if callable(measure_throughput) else measure_throughput
        )
        if not wanted:
            path.throughput_note = "not measured"
        elif not (head.has_iperf and worker.has_iperf):
            path.throughput_note = "iperf3 missing on " + (
                worker.name if head.has_iperf else head.name
            )
        else:
            await _iperf(pool, head, worker, path)


async def _iperf(pool: HostPool, head: HostFacts, worker: HostFacts, path: PathFacts) -> None:
    server = pool[worker.name]
    bind = str(worker.host.link_address)
    await processes.spawn(
        server,
        worker.host.run_dir,
        "iperf3",
        facts.iperf_server_command(bind, IPERF_PORT),
        {"component": "iperf3"},
    )
    try:
        for _ in range(50):
            poll = await processes.poll_log(server, worker.host.run_dir, "iperf3", 0)
            if "listening" in poll.new_text.lower() or not poll.alive:
                break
            await asyncio.sleep(0.1)
        client = await pool[head.name].run(
            facts.iperf_client_command(bind, str(head.host.link_address), IPERF_PORT), timeout=30
        )
        path.throughput_bps = facts.parse_iperf(client.stdout)
        if path.throughput_bps is None:
            path.throughput_note = _first_error(client.stdout + client.stderr)
    finally:
        await processes.stop(server, worker.host.run_dir, "iperf3", grace_s=2)


async def _controller_addresses(host: HostConfig) -> tuple[str, ...]:
    """The addresses the controller reaches an ssh host by (its ssh_target resolved)."""
    if host.transport != "ssh":
        return ()
    target = host.ssh_target or host.name
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(target, None, type=socket.SOCK_STREAM), 5
        )
    except (OSError, TimeoutError):
        return ()
    return tuple(sorted({str(info[4][0]) for info in infos}))


def _first_error(text: str) -> str:
    match = re.search(r'"error":\s*"([^"]+)"', text)
    return match.group(1) if match else (text.strip().splitlines() or ["no output"])[-1]


async def gather(
    pool: HostPool,
    inventory: Inventory,
    names: list[str],
    *,
    model_paths: list[str] | None = None,
    measure_throughput: Measure = True,
    probe_rpc: bool = True,
) -> dict[str, HostFacts]:
    """Facts of every named host; the head also measures its path to each other host (the
    throughput to every worker, to none, or to those ``measure_throughput(worker)`` names)."""
    results = await asyncio.gather(*(_gather_one(pool[name], probe_rpc) for name in names))
    found = {f.name: f for f in results}
    head = found.get(inventory.cluster.head)
    if head is not None and head.reachable:
        workers = [f for f in results if f.name != head.name and f.reachable]
        await _paths_from_head(pool, head, workers, measure_throughput)
        if model_paths:
            sizes = await pool[head.name].run(facts.file_sizes_command(model_paths))
            head.files = facts.parse_file_sizes(sizes.stdout)
    return found
