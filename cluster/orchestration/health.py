"""Is every host fit to serve? Judging gathered facts into ok / warn / fail checks.

``evaluate`` is pure: facts (and optionally a profile and model knowledge) in, a list of
``Check`` out, each with a measured value and a one-line explanation. ``run_health``
gathers the facts and evaluates them. The CLI exits 0 when no check failed, 1 otherwise.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

from cluster.config.models import Inventory, Profile
from cluster.config.resolve import devices_for, serving_hosts
from cluster.errors import LaunchError
from cluster.facts import is_wildcard_or_public
from cluster.llamacpp import identity
from cluster.orchestration import isolation, verdicts
from cluster.orchestration.discovery import HostBuild
from cluster.orchestration.hostfacts import HostFacts, PathFacts, gather
from cluster.orchestration.modelcheck import ModelReport, model_shard_paths, read_model_report
from cluster.orchestration.throughput import Plan, age_text
from cluster.orchestration.verdicts import Check as Check
from cluster.orchestration.verdicts import Level as Level
from cluster.store import Throughput
from cluster.transport.pool import HostPool

GIB = 1024**3


_ok, _warn, _fail = verdicts.ok, verdicts.warn, verdicts.fail


def _holds(interface_address: str, wanted: str) -> bool:
    """Is wanted configured by this interface address? (loopback holds all of 127/8)"""
    network = ipaddress.ip_interface(interface_address).network
    if network.is_loopback:
        return ipaddress.ip_address(wanted) in network
    return interface_address.split("/")[0] == wanted


def _link_checks(f: HostFacts) -> list[Check]:
    host = f.host
    link = f.link
    want = str(host.link_address)
    if link is None or not link.exists:
        return [_fail(f.name, "link", "missing", f"interface {host.link_interface} does not exist")]
    if not link.up:
        return [_fail(f.name, "link", "down", f"interface {host.link_interface} is down")]
    if not any(_holds(address, want) for address in link.addresses):
        have = ", ".join(link.addresses) or "no IPv4 address"
        return [
            _fail(f.name, "link", "no address", f"{host.link_interface} has {have}, not {want}")
        ]
    return [_ok(f.name, "link", "up", f"{host.link_interface} up with {want}")]


def _path_checks(head: HostFacts, found: dict[str, HostFacts], plan: Plan | None) -> list[Check]:
    checks = []
    for path in head.paths:
        worker = found[path.worker].host
        label = f"route→{path.worker}"
        want = head.host.link_interface
        route = path.route
        if route.error:
            checks.append(
                _fail(head.name, label, "none", f"no route to {route.destination}: {route.error}")
            )
        elif route.device != want:
            via = f" via {route.via}" if route.via else ""
            checks.append(
                _fail(
                    head.name,
                    label,
                    route.device or "?",
                    f"traffic to {path.worker}'s link address {route.destination} leaves by "
                    f"{route.device}{via}, not the link {want}",
                )
            )
        else:
            checks.append(
                _ok(head.name, label, route.device, f"{route.destination} routes over {want}")
            )
        rtt_label = f"rtt→{path.worker}"
        if path.rtt_ms is None:
            checks.append(
                _fail(head.name, rtt_label, "lost", f"no ping reply from {worker.link_address}")
            )
        else:
            checks.append(
                _ok(head.name, rtt_label, f"{path.rtt_ms:.2f} ms", "link round trip (ping)")
            )
        checks.append(_throughput_check(head.name, path, plan))
    return checks


def _gbits(bps: float) -> str:
    return f"{bps / 1e9:.2f} Gbit/s"


def _throughput_check(head: str, path: PathFacts, plan: Plan | None) -> Check:
    """Measured now; else the last measurement with its age (``plan``), or why there is none."""
    label = f"throughput→{path.worker}"
    if path.throughput_bps is not None:
        return _ok(head, label, _gbits(path.throughput_bps), "iperf3 over the link, measured now")
    note = path.throughput_note or "not measured"
    last = plan.last.get(path.worker) if plan is not None else None
    if plan is None:
        return _warn(head, label, "-", note)
    if last is None:
        if plan.due(path.worker):  # it was to be measured and could not be
            return _warn(head, label, "-", note)
        return _warn(head, label, "-", "never measured (--throughput measures it)")
    age = age_text(plan.now - last.at)
    if plan.due(path.worker):
        return _warn(head, label, "-", f"{note}; last {_gbits(last.bps)} measured {age}")
    detail = f"iperf3 over the link, measured {age}; {plan.not_measured(path.worker)}"
    return _ok(head, label, _gbits(last.bps), detail)


def _build_checks(found: dict[str, HostFacts], rpc_hosts: set[str], head: str) -> list[Check]:
    """Binaries each role needs, and one build on every host (``identity.compare``)."""
    checks = []
    reachable = {f.name: f for f in found.values() if f.reachable}
    agreement, why = identity.compare({name: f.identity for name, f in reachable.items()})
    for f in reachable.values():
        need = ["llama-server"] if f.name == head else []
        missing = [b for b in need if b not in f.binaries]
        if f.name in rpc_hosts and f.rpc_binary is None:
            missing.append("rpc-server or ggml-rpc-server")
        if missing:
            checks.append(
                _fail(
                    f.name,
                    "binaries",
                    "missing",
                    f"{', '.join(missing)} not found in {f.host.llama_bin_dir}",
                )
            )
        else:
            present = ", ".join(sorted(f.binaries)) or "none needed"
            checks.append(_ok(f.name, "binaries", "present", present))
        checks.append(_build_check(f, agreement, why))
        version = f.build.version if f.build else None
        if version is not None and not version.readable:
            checks.append(
                _warn(
                    f.name,
                    "version",
                    "unreadable",
                    f"llama-server --version printed no version line: {version.raw!r}",
                )
            )
    return checks


def _build_check(f: HostFacts, agreement: identity.Agreement, why: str) -> Check:
    mine = f.identity
    value = mine.short + (f" rpc {mine.rpc_protocol}" if mine.rpc_protocol else "")
    if agreement is identity.Agreement.INCOMPATIBLE:
        return _fail(f.name, "build", value, why)
    if agreement is identity.Agreement.DIFFER:
        return _warn(f.name, "build", value, why)
    if not mine.known:
        note = mine.note or "its files could not be read"
        return _warn(f.name, "build", value, f"build not identified: {note}")
    if agreement is identity.Agreement.UNKNOWN:
        return _warn(f.name, "build", value, why)
    detail = "same build on every host" + (f" ({mine.version})" if mine.version else "")
    return _ok(f.name, "build", value, detail)


def _memory_check(f: HostFacts) -> Check:
    memory = f.memory
    if memory is None:
        return _warn(f.name, "memory", "?", "could not read /proc/meminfo")
    value = f"{memory.available / GIB:.1f} GiB"
    gpu_notes = []
    for card, info in sorted(memory.gpus.items()):
        for kind in ("vram", "gtt"):
            if f"{kind}_total" in info:
                free = info[f"{kind}_total"] - info.get(f"{kind}_used", 0)
                gpu_notes.append(f"{card} {kind.upper()} {free / GIB:.1f} GiB free")
    detail = "MemAvailable" + (f"; {', '.join(gpu_notes)}" if gpu_notes else "")
    if f.host.memory_budget_gib is not None:
        detail += f"; budget {f.host.memory_budget_gib:g} GiB"
    return _ok(f.name, "memory", value, detail)


def _port_checks(f: HostFacts, wanted: list[tuple[str, int, str]]) -> list[Check]:
    ours = f.our_pids
    checks = []
    for address, port, what in wanted:
        if what == "rpc-server" and is_wildcard_or_public(address):
            checks.append(
                _fail(
                    f.name,
                    f"port {port}",
                    address,
                    "rpc-server may only bind a private link address",
                )
            )
            continue
        clashes = [lst for lst in f.listeners if lst.port == port and lst.covers(address)]
        foreign = [lst for lst in clashes if not set(lst.pids) & ours]
        if foreign:
            pids = ", ".join(str(pid) for lst in foreign for pid in lst.pids) or "unknown pid"
            checks.append(
                _fail(
                    f.name,
                    f"port {port}",
                    "taken",
                    f"{address}:{port} for {what} is taken "
                    f"({foreign[0].address}:{port}, pid {pids})",
                )
            )
        elif clashes:
            checks.append(
                _ok(f.name, f"port {port}", "ours", f"{address}:{port} held by our {what}")
            )
        else:
            checks.append(_ok(f.name, f"port {port}", "free", f"{address}:{port} free for {what}"))
    return checks


def _stray_check(f: HostFacts, managed_pids: set[int]) -> Check:
    strays = [(s.pid, s.comm) for s in f.servers if s.pid not in managed_pids]
    if strays:
        listing = ", ".join(f"{comm} pid {pid}" for pid, comm in strays)
        return _warn(f.name, "strays", str(len(strays)), f"not started by clusterctl: {listing}")
    return _ok(f.name, "strays", "0", "no stray llama-server or rpc-server")


def _model_checks(report: ModelReport, head: str) -> list[Check]:
    checks = []
    if report.missing:
        checks.append(
            _fail(
                head, "model", "missing", f"shard(s) not on the head: {', '.join(report.missing)}"
            )
        )
    else:
        total = sum(report.sizes.values())
        checks.append(
            _ok(head, "model", f"{total / GIB:.2f} GiB", f"{len(report.sizes)} shard(s) present")
        )
    if report.error:
        checks.append(_warn(head, "fit", "?", report.error))
    for line in report.fit:
        level = Level.OK if line.fits else Level.FAIL
        have = f"{line.available / GIB:.2f}" if line.available is not None else "?"
        checks.append(
            Check(line.host, "fit", level, f"{line.needed / GIB:.2f}/{have} GiB", line.reason)
        )
    return checks


def evaluate(
    inventory: Inventory,
    found: dict[str, HostFacts],
    profile: Profile | None = None,
    model: ModelReport | None = None,
    throughput: Plan | None = None,
) -> list[Check]:
    """Turn gathered facts into checks; pure, so every verdict is unit-testable. With a
    ``throughput`` plan, a path not measured now shows its last measurement and its age."""
    head = inventory.cluster.head
    rpc_hosts = set(profile.rpc_hosts) if profile else set(found) - {head}
    checks: list[Check] = []
    managed_pids = {pid for f in found.values() for pid in f.our_pids}
    for f in found.values():
        if not f.reachable:
            checks.append(_fail(f.name, "ssh", "unreachable", f.error or "unreachable"))
            continue
        how = "local" if f.host.transport == "local" else "ssh"
        checks.append(
            _ok(f.name, "ssh", f"{(f.ssh_s or 0) * 1000:.0f} ms", f"{how} connection and a command")
        )
        checks.extend(_link_checks(f))
        checks.append(_memory_check(f))
        wanted = []
        if f.name in rpc_hosts:
            wanted.append((str(f.host.link_address), f.host.rpc_port, "rpc-server"))
        if profile is not None and f.name == head:
            wanted.append((profile.bind_host, profile.port, "llama-server"))
        checks.extend(_port_checks(f, wanted))
        checks.extend(isolation.checks(f, rpc_host=f.name in rpc_hosts))
        if profile is not None and f.name == head and profile.exposed:
            checks.append(isolation.exposed_server(f.name, profile.bind_host, profile.port))
        checks.append(_stray_check(f, managed_pids))
    checks.extend(_build_checks(found, rpc_hosts, head))
    if head in found and found[head].reachable:
        checks.extend(_path_checks(found[head], found, throughput))
    if model is not None:
        checks.extend(_model_checks(model, head))
    order = {name: index for index, name in enumerate(found)}
    return sorted(checks, key=lambda c: order.get(c.host, len(order)))


def failed(checks: list[Check]) -> bool:
    return any(check.level is Level.FAIL for check in checks)


async def run_health(
    pool: HostPool,
    inventory: Inventory,
    profile: Profile | None = None,
    *,
    measure_throughput: bool = True,
    throughput: Plan | None = None,
) -> list[Check]:
    """Gather facts from the hosts that matter (all, or the profile's) and judge them.

    With a ``throughput`` plan, the paths it says are due are measured (instead of all or
    none, as ``measure_throughput`` says) and each measurement is given to its ``record``.
    """
    _, checks = await _examine(
        pool, inventory, profile, measure_throughput=measure_throughput, throughput=throughput
    )
    return checks


async def _examine(
    pool: HostPool,
    inventory: Inventory,
    profile: Profile | None,
    *,
    measure_throughput: bool,
    throughput: Plan | None,
) -> tuple[dict[str, HostFacts], list[Check]]:
    """``run_health``, with the facts its checks were judged from."""
    if profile is not None:
        devices_for(inventory, profile)  # a split that does not match the cluster is a ConfigError
        names = [host.name for host in serving_hosts(inventory, profile)]
        shard_paths = model_shard_paths(profile.model)
    else:
        names = list(inventory.hosts)
        shard_paths = None
    found = await gather(
        pool,
        inventory,
        names,
        model_paths=shard_paths,
        measure_throughput=throughput.due if throughput is not None else measure_throughput,
    )
    head = found.get(inventory.cluster.head)
    if throughput is not None and head is not None:
        for path in head.paths:
            if path.throughput_bps is not None:
                measured = Throughput(
                    head=head.name, worker=path.worker, bps=path.throughput_bps, at=time.time()
                )
                throughput.record(measured)
    model = None
    if profile is not None and found[inventory.cluster.head].reachable:
        model = await read_model_report(pool, inventory, profile, found)
    return found, evaluate(inventory, found, profile, model, throughput)


async def gate(
    pool: HostPool,
    inventory: Inventory,
    profile: Profile,
    show: Callable[[list[Check]], None] = lambda checks: None,
    throughput: Plan | None = None,
) -> dict[str, HostBuild]:
    """The health gate in front of a launch: raise LaunchError naming every failed check.

    ``show`` gets every check (the CLI shows those that are not ok, and counts the rest)
    before the error is raised. The gate measures no throughput; with a ``throughput``
    plan (``Mode.SKIP``) it shows the last measurements. Returns the build it read on each
    serving host, for the launch that follows (``Launcher.up(builds=...)``), so one gated
    ``up`` reads each host's build once.
    """
    found, checks = await _examine(
        pool, inventory, profile, measure_throughput=False, throughput=throughput
    )
    if failed(checks):
        show(checks)
        problems = "; ".join(
            f"{check.host}: {check.name}: {check.detail}"
            for check in checks
            if check.level is Level.FAIL
        )
        raise LaunchError(f"health gate failed: {problems} (fix it, or pass --skip-health)")
    return {name: f.build for name, f in found.items() if f.build is not None}
