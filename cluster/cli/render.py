"""Tables for people (rich). Programs use ``--json`` instead."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cluster.config.loader import Sources
from cluster.config.models import Inventory, Profile, format_split
from cluster.config.resolve import Fit, ProfileCheck
from cluster.daemon.models import DaemonStatus
from cluster.orchestration.control import ComponentStatus, DownReport
from cluster.orchestration.health import Check, Level
from cluster.orchestration.linkstats import Bottleneck
from cluster.orchestration.processes import INVALID
from cluster.report.links import LinkFigures, ServingLoad

_STYLE = {Level.OK: "green", Level.WARN: "yellow", Level.FAIL: "bold red"}


def health(console: Console, checks: list[Check], *, problems_only: bool = False) -> None:
    """The checks as a table and a count of each level. With ``problems_only`` (the health
    gate in front of ``up``) the ok rows are left out of the table, and the count says so,
    so the summary always counts every check that ran."""
    shown = [c for c in checks if c.level is not Level.OK] if problems_only else checks
    table = Table(title="health", title_justify="left")
    for column in ("host", "check", "", "value", "detail"):
        table.add_column(column, overflow="fold")
    for check in shown:
        style = _STYLE[check.level]
        table.add_row(
            check.host, check.name, f"[{style}]{check.level.value}[/]", check.value, check.detail
        )
    console.print(table)
    console.print(health_summary(checks, problems_only=problems_only))


def health_summary(checks: list[Check], *, problems_only: bool = False) -> str:
    """``19 ok, 1 warn, 2 fail``, with ``(19 ok not shown)`` when the ok rows were left out."""
    counts = {level: sum(1 for c in checks if c.level is level) for level in Level}
    line = f"{counts[Level.OK]} ok, {counts[Level.WARN]} warn, {counts[Level.FAIL]} fail"
    if problems_only and counts[Level.OK]:
        line += f" ({counts[Level.OK]} ok not shown)"
    return line


def status(console: Console, rows: list[ComponentStatus], unreachable: dict[str, str]) -> None:
    table = Table(title="status", title_justify="left")
    for column in (
        "host",
        "component",
        "pid",
        "state",
        "port",
        "profile",
        "split",
        "uptime",
        "health",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.host,
            row.component,
            str(row.pid or "-"),
            _state_word(row),
            str(row.port or "-"),
            row.profile or "-",
            row.split or "-",
            f"{row.uptime_s}s" if row.pid is not None else "-",
            row.health,
        )
    if not rows:
        console.print("nothing runs")
    else:
        console.print(table)
    for host, reason in unreachable.items():
        console.print(f"[red]{host}: unreachable: {reason}[/]")


def serving_load(console: Console, launch: tuple[int, int], load: ServingLoad | None) -> None:
    """Each worker's link during the load of the launch that serves: bytes, throughput
    against the link's measured capacity, the bottleneck, and whether the rpc-server
    cache pays; or why there is nothing to show."""
    run_id, attempt = launch
    which = f"run {run_id}, attempt {attempt}"
    if load is None:
        console.print(f"links: the serving load ({which}) is not in this state directory's record")
        return
    if not load.links:
        console.print(f"links: the serving load ({which}) recorded no worker's link")
        return
    seconds = f", {load.load_seconds:.1f} s" if load.load_seconds is not None else ""
    table = Table(title=f"links during the serving load ({which}{seconds})", title_justify="left")
    for column in ("worker", "link", "moved", "throughput", "capacity", "used", "bottleneck"):
        table.add_column(column)
    table.add_column("rpc-server cache", overflow="fold")
    for link in load.links:
        table.add_row(
            link.worker,
            link.interface + (" (shared)" if link.shared else ""),
            _size(link.bytes),
            _rate(link.throughput_bps),
            _rate(link.capacity_bps) if link.capacity_bps is not None else "not measured",
            f"{link.utilisation:.0%}" if link.utilisation is not None else "-",
            link.bottleneck.value,
            _cache_word(link),
        )
    console.print(table)
    if any(link.bottleneck in (Bottleneck.UNKNOWN, Bottleneck.STALE) for link in load.links):
        console.print("a capacity is missing or out of date: clusterctl health --throughput")


def _size(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


def _rate(bps: float) -> str:
    return f"{bps / 1e9:.3g} Gbit/s" if bps >= 1e9 else f"{bps / 1e6:.3g} Mbit/s"


def _cache_word(link: LinkFigures) -> str:
    if link.cache_pays is None or link.transfer_s is None:
        return "-"
    word = "pays" if link.cache_pays else "does not pay"
    return f"{word} (hash {link.hash_s:.1f} s vs send {link.transfer_s:.1f} s)"


def _state_word(row: ComponentStatus) -> str:
    if row.alive:
        return "running"
    return "invalid pid file" if row.state == INVALID else "dead"


# What down says it did, where the outcome's own word is not clear enough.
_DOWN_WORDS = {
    "invalid": "invalid pid file removed",
    "stale": "stale pid file removed",
    "killed-inside": "stopped by its port (it had outlived its container wrapper)",
}


def down(console: Console, report: DownReport) -> None:
    acted = [o for o in report.stopped if o.word not in ("absent",)]
    for outcome in acted:
        pid = f" pid {outcome.pid}" if outcome.pid else ""
        word = _DOWN_WORDS.get(outcome.word, outcome.word)
        console.print(f"{outcome.host}: {outcome.name}: {word}{pid}")
    if not acted and not report.unreachable:
        console.print("nothing was running")
    for host, reason in report.unreachable.items():
        console.print(f"[red]{host}: unreachable: {reason}[/]")


def config(
    console: Console,
    inventory: Inventory,
    sources: Sources,
    checks: list[ProfileCheck],
) -> None:
    console.print(f"config file : {sources.config_file}")
    console.print(f"playbooks   : {sources.playbooks_dir}")
    console.print(f"state dir   : {sources.state_dir}")
    console.print(f"cluster     : {inventory.cluster.name} (head {inventory.cluster.head})")
    hosts = Table(title="hosts", title_justify="left")
    for column in ("host", "transport", "reach", "link", "rpc", "binaries", "run dir"):
        hosts.add_column(column, overflow="fold")
    for host in inventory.hosts.values():
        reach = (
            "local"
            if host.transport == "local"
            else (
                f"{host.user + '@' if host.user else ''}{host.ssh_target or host.name}"
                + (f":{host.ssh_port}" if host.ssh_port else "")
                + (" (host key NOT checked)" if host.insecure_skip_host_key_check else "")
            )
        )
        prefix = " ".join(host.command_prefix)
        hosts.add_row(
            host.name,
            host.transport,
            reach,
            f"{host.link_interface} {host.link_address}",
            str(host.rpc_port),
            (prefix + " " if prefix else "") + host.llama_bin_dir,
            host.run_dir,
        )
    console.print(hosts)
    fitting = [(c.profile, c) for c in checks if c.fit is Fit.FITS and c.profile is not None]
    table = Table(title="profiles", title_justify="left")
    for column in ("profile", "model", "devices (split)", "ctx", "np", "fa", "dio", "timeouts"):
        table.add_column(column, overflow="fold")
    for profile, check in fitting:
        table.add_row(*_profile_row(profile, check))
    if fitting:
        console.print(table)
    others = [c for c in checks if c.fit is not Fit.FITS]
    if others:
        problems = Table(title="profiles not served by this inventory", title_justify="left")
        for column in ("profile", "", "why"):
            problems.add_column(column, overflow="fold")
        for check in others:
            word = "does not fit" if check.fit is Fit.UNFIT else "[bold red]invalid[/]"
            problems.add_row(check.name, word, check.problem)
        console.print(problems)
    unfit = sum(1 for c in others if c.fit is Fit.UNFIT)
    console.print(
        f"{len(fitting)} profile(s) fit this inventory, {unfit} written for another, "
        f"{len(others) - unfit} invalid"
    )


def _profile_row(profile: Profile, check: ProfileCheck) -> tuple[str, ...]:
    layout = ", ".join(f"{d.label}@{d.host}={d.proportion:g}" for d in check.devices)
    return (
        profile.name,
        profile.model,
        f"{layout} ({format_split(profile.tensor_split)})",
        str(profile.ctx_size),
        str(profile.parallel),
        profile.flash_attn,
        "on" if profile.direct_io else "off",
        f"load {profile.load_timeout_s:g}s stall {profile.stall_timeout_s:g}s "
        f"x{profile.retries + 1}",
    )


def daemon(console: Console, status: DaemonStatus) -> None:
    """The daemon's part of ``status``: its state, what it serves, incidents and queue."""
    import time

    desired = status.desired.profile or "nothing"
    console.print(
        f"daemon pid {status.pid}: {status.state.value}"
        + (f" ({status.state_reason})" if status.state_reason else "")
        + f"; desired: {desired}",
        markup=False,
        highlight=False,
    )
    open_incidents = [i for i in status.incidents if i.recovered is None]
    day = [i for i in status.incidents if i.started > time.time() - 86400]
    if day:
        last = day[0]
        recovered = (
            f"recovered in {last.time_to_recover_s:.1f}s" if last.recovered else "not recovered"
        )
        console.print(
            f"incidents in 24 h: {len(day)} ({len(open_incidents)} open); last: "
            f"{last.cls.value}: {last.evidence[:100]} ({recovered})",
            markup=False,
            highlight=False,
        )
    queue = [j for j in status.jobs if not j.status.finished]
    for job in queue:
        progress = job.progress
        done = f" {progress.done}/{progress.total}" if progress.total else ""
        console.print(f"job {job.id}: {job.describe} {job.status.value}{done}", markup=False)
