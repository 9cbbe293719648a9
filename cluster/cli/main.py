"""The ``clusterctl`` command line.

Data goes to stdout (tables, or exactly one JSON document with ``--json``); messages and
logs go to stderr. Every flag can also be set from the environment: the global options as
``CLUSTERCTL_<OPTION>``, a command's options as ``CLUSTERCTL_<COMMAND>_<OPTION>``.
Exit codes are fixed and documented in docs/cli.md (see ``cluster.errors``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from cluster import errors
from cluster.cli import render
from cluster.config.loader import (
    Sources,
    find_config_file,
    load_inventory,
    load_profile,
    resolve_sources,
)
from cluster.config.models import Inventory, Profile, parse_split
from cluster.errors import ClusterError, ConfigError
from cluster.logging import configure_logging
from cluster.orchestration import control
from cluster.orchestration.health import failed, gate, run_health
from cluster.orchestration.launch import Launcher
from cluster.store import Store
from cluster.transport.pool import HostPool

T = TypeVar("T")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Run llama.cpp across a small cluster with its RPC backend.",
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(no_args_is_help=True, help="Check and show the configuration.")
testbed_app = typer.Typer(
    no_args_is_help=True, help="A real N-host testbed of network namespaces (root)."
)
app.add_typer(config_app, name="config")
app.add_typer(testbed_app, name="testbed")

# Piped or logged output gets wide tables instead of rich's 80-column default.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160)


@dataclass
class Context:
    config_flag: Path | None
    playbooks_flag: Path | None
    state_dir_flag: Path | None
    _inventory: Inventory | None = None
    _sources: Sources | None = None
    _extra: dict[str, Any] = field(default_factory=dict)

    def load(self) -> tuple[Inventory, Sources]:
        if self._inventory is None or self._sources is None:
            path = find_config_file(self.config_flag, os.environ, Path.cwd(), Path.home())
            self._inventory = load_inventory(path)
            self._sources = resolve_sources(
                self._inventory,
                path,
                playbooks_flag=self.playbooks_flag,
                state_dir_flag=self.state_dir_flag,
            )
        return self._inventory, self._sources

    def store(self) -> Store:
        """The record in the resolved state directory."""
        _, sources = self.load()
        return Store(sources.state_dir)

    def profile(self, name: str) -> Profile:
        _, sources = self.load()
        return load_profile(sources.playbooks_dir, name)


def _ctx(ctx: typer.Context) -> Context:
    assert isinstance(ctx.obj, Context)
    return ctx.obj


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; Ctrl-C becomes the documented exit code."""
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(errors.EXIT_INTERRUPTED) from None


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-C", envvar="CLUSTERCTL_CONFIG", help="hosts.toml to use."),
    ] = None,
    playbooks: Annotated[
        Path | None,
        typer.Option(envvar="CLUSTERCTL_PLAYBOOKS", help="Directory of profiles and playbooks."),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(envvar="CLUSTERCTL_STATE_DIR", help="Where the record (SQLite) lives."),
    ] = None,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            envvar="CLUSTERCTL_VERBOSE",
            help="More logs on stderr (-v, -vv).",
        ),
    ] = 0,
    log_json: Annotated[
        bool, typer.Option(envvar="CLUSTERCTL_LOG_JSON", help="Logs as JSON lines.")
    ] = False,
) -> None:
    configure_logging(verbose, log_json)
    ctx.obj = Context(config, playbooks, state_dir)


# --- config -------------------------------------------------------------------------------


@config_app.command("check")
def config_check(
    ctx: typer.Context,
    profiles: Annotated[
        list[str] | None, typer.Argument(help="Profiles to check (default: all).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", envvar="CLUSTERCTL_CONFIG_CHECK_JSON")] = False,
) -> None:
    """Load hosts.toml and the profiles, check them against each other, print the result."""
    from cluster.config.resolve import devices_for

    c = _ctx(ctx)
    inventory, sources = c.load()
    names = profiles or sorted(p.stem for p in sources.playbooks_dir.glob("*.toml"))
    resolved = []
    for name in names:
        profile = c.profile(name)
        devices = devices_for(inventory, profile)
        resolved.append((profile, devices))
    if as_json:
        print_json(
            {
                "sources": {k: str(v) for k, v in vars(sources).items()},
                "inventory": inventory.model_dump(mode="json"),
                "profiles": {
                    p.name: {**p.model_dump(mode="json"), "devices": [vars(d) for d in devices]}
                    for p, devices in resolved
                },
            }
        )
        return
    render.config(out, inventory, sources, resolved)


# --- health -------------------------------------------------------------------------------


@app.command()
def health(
    ctx: typer.Context,
    profile: Annotated[
        str | None, typer.Argument(help="Also check this profile's model and memory fit.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", envvar="CLUSTERCTL_HEALTH_JSON")] = False,
    quick: Annotated[
        bool,
        typer.Option(envvar="CLUSTERCTL_HEALTH_QUICK", help="Skip the iperf3 throughput test."),
    ] = False,
) -> None:
    """Is every host fit to serve? Exit 0 when nothing failed, 1 otherwise."""
    c = _ctx(ctx)
    inventory, _ = c.load()
    chosen = c.profile(profile) if profile else None

    async def go() -> list[Any]:
        async with HostPool(inventory.hosts.values()) as pool:
            return await run_health(pool, inventory, chosen, measure_throughput=not quick)

    checks = run_async(go)
    if as_json:
        print_json({"ok": not failed(checks), "checks": [check.as_dict() for check in checks]})
    else:
        render.health(out, checks)
    if failed(checks):
        raise typer.Exit(errors.EXIT_CHECK_FAILED)


# --- up / down / status / logs ----------------------------------------------------------------


@app.command()
def up(
    ctx: typer.Context,
    profile: Annotated[str, typer.Argument(help="Profile name (playbooks/NAME.toml).")],
    split: Annotated[
        str | None,
        typer.Option(envvar="CLUSTERCTL_UP_SPLIT", help="Tensor split override, e.g. 1.2/0.8."),
    ] = None,
    skip_health: Annotated[
        bool,
        typer.Option(envvar="CLUSTERCTL_UP_SKIP_HEALTH", help="Do not run the health gate first."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", envvar="CLUSTERCTL_UP_JSON")] = False,
) -> None:
    """Bring a profile to serving: health gate, rpc-servers, llama-server, watchdog, retries."""
    c = _ctx(ctx)
    inventory, sources = c.load()
    chosen = c.profile(profile)
    try:
        split_override = parse_split(split) if split is not None else None
    except ValueError as exc:
        raise ConfigError(str(exc), key="--split") from None

    async def go() -> Any:
        async with HostPool(inventory.hosts.values()) as pool:
            launcher = Launcher(
                inventory,
                chosen,
                pool,
                Store(sources.state_dir),
                split=split_override,
                environ=dict(os.environ),
                say=lambda m: err.print(m),
            )
            if not skip_health:
                err.print(f"health gate for {chosen.name}...")
                await gate(pool, inventory, chosen, show=lambda checks: render.health(err, checks))
            return await launcher.up()

    result = run_async(go)
    if as_json:
        print_json(vars(result))
    else:
        err.print(
            f"serving {chosen.name} (split {result.split}) after {result.attempts} attempt(s), "
            f"load {result.load_seconds:.1f}s; run {result.run_id}"
        )
        out.print(result.endpoint)
        if chosen.bind_host in ("127.0.0.1", "localhost") and inventory.head.transport == "ssh":
            target = inventory.head.ssh_target or inventory.head.name
            err.print(
                f"llama-server listens on the head's loopback; reach it with: "
                f"ssh -L {chosen.port}:127.0.0.1:{chosen.port} {target}"
            )
    for survivor in result.survivors:
        err.print(f"warning: a process survived SIGTERM and SIGKILL: {survivor}")


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop everything clusterctl started, on every host. Safe to repeat."""
    inventory, _ = _ctx(ctx).load()

    async def go() -> control.DownReport:
        async with HostPool(inventory.hosts.values()) as pool:
            return await control.down(pool, inventory)

    report = run_async(go)
    render.down(err, report)
    if report.unreachable:
        raise typer.Exit(errors.EXIT_TRANSPORT)
    if report.survivors:
        raise typer.Exit(errors.EXIT_REMOTE)


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", envvar="CLUSTERCTL_STATUS_JSON")] = False,
) -> None:
    """What runs where: pids, ports, profile, split, uptime and llama-server's health."""
    inventory, _ = _ctx(ctx).load()

    async def go() -> tuple[list[control.ComponentStatus], dict[str, str]]:
        async with HostPool(inventory.hosts.values()) as pool:
            return await control.status(pool, inventory)

    rows, unreachable = run_async(go)
    if as_json:
        print_json({"components": [vars(row) for row in rows], "unreachable": unreachable})
    else:
        render.status(out, rows, unreachable)
    if unreachable:
        raise typer.Exit(errors.EXIT_TRANSPORT)


@app.command()
def logs(
    ctx: typer.Context,
    host: Annotated[str, typer.Argument(help="Host name from hosts.toml.")],
    component: Annotated[str, typer.Argument(help="llama-server or rpc-server.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", envvar="CLUSTERCTL_LOGS_FOLLOW")
    ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", envvar="CLUSTERCTL_LOGS_LINES")] = 100,
) -> None:
    """Print a component's log on a host (and follow it with -f)."""
    inventory, _ = _ctx(ctx).load()
    target = control.check_component(inventory, host, component)

    async def go() -> None:
        async with HostPool([target]) as pool:
            if follow:
                stream = control.follow(pool, target, component, lines)
                async with contextlib.aclosing(stream) as followed:
                    async for line in followed:
                        sys.stdout.write(line + "\n")
                        sys.stdout.flush()
            else:
                sys.stdout.write(await control.logs(pool, target, component, lines))

    run_async(go)


def run() -> None:
    """Entry point: one clear line and the documented exit code for every known error."""
    from cluster.cli import extra, measure, sweep  # noqa: F401  (register their commands)

    try:
        app()
    except ClusterError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(exc.exit_code)
