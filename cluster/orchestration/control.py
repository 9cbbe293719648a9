"""``down``, ``status`` and ``logs``: the components clusterctl runs, found from their hosts.

Nothing here depends on the controller's memory: every answer is read back from the pid,
log and metadata files in each host's run directory, so a new controller (or one that
crashed and came back) sees and stops exactly what an earlier one started.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass

from cluster.concurrency import together
from cluster.config.models import HostConfig, Inventory
from cluster.errors import ClusterError, ConfigError
from cluster.llamacpp.client import LlamaClient
from cluster.orchestration import processes
from cluster.transport.base import Transport
from cluster.transport.pool import HostPool

RPC_SERVER = "rpc-server"
LLAMA_SERVER = "llama-server"
COMPONENTS = (RPC_SERVER, LLAMA_SERVER)
# Stop the server that uses the rpc-servers first, so it does not log a transport drop.
STOP_ORDER = (LLAMA_SERVER, RPC_SERVER)


async def stop_components(
    pool: HostPool, hosts: Iterable[HostConfig], grace_s: int = 10
) -> list[processes.StopOutcome]:
    """Stop every managed component on the hosts, llama-server before rpc-servers."""
    hosts = list(hosts)
    outcomes: list[processes.StopOutcome] = []
    for name in STOP_ORDER:
        results = await together(
            *(processes.stop(pool[host.name], host.run_dir, name, grace_s) for host in hosts)
        )
        outcomes.extend(results)
    return outcomes


@dataclass(frozen=True)
class DownReport:
    stopped: list[processes.StopOutcome]
    unreachable: dict[str, str]

    @property
    def survivors(self) -> list[processes.StopOutcome]:
        return [outcome for outcome in self.stopped if outcome.survived]


async def down(pool: HostPool, inventory: Inventory) -> DownReport:
    """Stop everything clusterctl started on every host: llama-servers first, then the rest.

    Idempotent: a second call finds nothing to stop. Leaves no process and no pid file.
    """
    names_by_host = await pool.each(
        lambda t: processes.list_managed(t, inventory.hosts[t.name].run_dir)
    )
    unreachable = {h: str(r) for h, r in names_by_host.items() if isinstance(r, ClusterError)}
    present = {
        h: {p.name for p in r} for h, r in names_by_host.items() if not isinstance(r, ClusterError)
    }
    everything = {name for names in present.values() for name in names}
    order = [*STOP_ORDER, *sorted(everything - set(STOP_ORDER))]
    stopped: list[processes.StopOutcome] = []
    for name in order:
        hosts = [
            inventory.hosts[h]
            for h, names in present.items()
            if name in names and h not in unreachable
        ]
        results = await pool.each(_stopper(inventory, name), [host.name for host in hosts])
        for host_name, result in results.items():
            if isinstance(result, ClusterError):
                unreachable[host_name] = str(result)  # that host's result; the rest go on
            else:
                stopped.append(result)
    return DownReport(stopped, unreachable)


def _stopper(
    inventory: Inventory, name: str
) -> Callable[[Transport], Awaitable[processes.StopOutcome]]:
    def stop(transport: Transport) -> Awaitable[processes.StopOutcome]:
        return processes.stop(transport, inventory.hosts[transport.name].run_dir, name)

    return stop


@dataclass(frozen=True)
class ComponentStatus:
    host: str
    component: str
    pid: int | None  # None when its pid file is invalid (empty, truncated, garbage)
    alive: bool
    state: str  # a /proc state letter, "dead", or "invalid" for an unusable pid file
    uptime_s: int
    profile: str | None
    split: str | None
    port: int | None
    health: str  # for llama-server: ok / loading / down / "-" for others
    run_id: int | None = None  # the run and attempt of the launch that started it
    attempt: int | None = None


async def status(
    pool: HostPool, inventory: Inventory
) -> tuple[list[ComponentStatus], dict[str, str]]:
    """What runs where, from each host's run directory, with llama-server's /health."""
    listed = await pool.each(lambda t: processes.list_managed(t, inventory.hosts[t.name].run_dir))
    rows: list[ComponentStatus] = []
    errors: dict[str, str] = {}
    for host, result in listed.items():
        if isinstance(result, ClusterError):
            errors[host] = str(result)
            continue
        for process in result:
            if process.name not in COMPONENTS:
                continue
            meta = process.meta
            health = "-"
            if process.name == LLAMA_SERVER:
                health = await _health(pool, host, meta) if process.alive else "down"
            rows.append(
                ComponentStatus(
                    host=host,
                    component=process.name,
                    pid=None if process.invalid else process.pid,
                    alive=process.alive,
                    state=process.state,
                    uptime_s=process.uptime_s,
                    profile=meta.get("profile"),
                    split=meta.get("split"),
                    port=meta.get("port"),
                    health=health,
                    run_id=_number(meta.get("run_id")),
                    attempt=_number(meta.get("attempt")),
                )
            )
    return rows, errors


def _number(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def serving_launch(rows: Iterable[ComponentStatus]) -> tuple[int, int] | None:
    """The run and attempt of the launch whose llama-server runs, when its metadata says."""
    for row in rows:
        if row.component == LLAMA_SERVER and row.alive and row.run_id and row.attempt:
            return row.run_id, row.attempt
    return None


async def _health(pool: HostPool, host: str, meta: dict[str, object]) -> str:
    port = meta.get("port")
    bind = str(meta.get("bind") or "127.0.0.1")
    if not isinstance(port, int):
        return "?"
    try:
        address = await pool[host].open_tunnel(bind, port)
    except ClusterError:
        return "unreachable"
    async with LlamaClient(f"http://{address[0]}:{address[1]}") as client:
        state = await client.health()
    if state.ready:
        return "ok"
    return "loading" if state.loading else "down"


def check_component(inventory: Inventory, host: str, component: str) -> HostConfig:
    if host not in inventory.hosts:
        raise ConfigError(f"no host named {host!r} (hosts: {', '.join(inventory.hosts)})")
    if component not in COMPONENTS:
        raise ConfigError(f"no component named {component!r} (components: {', '.join(COMPONENTS)})")
    return inventory.hosts[host]


async def logs(pool: HostPool, host: HostConfig, component: str, lines: int) -> str:
    return await processes.log_tail(pool[host.name], host.run_dir, component, lines)


def follow(
    pool: HostPool, host: HostConfig, component: str, lines: int
) -> AsyncGenerator[str, None]:
    return pool[host.name].stream(processes.follow_argv(host.run_dir, component, lines))
