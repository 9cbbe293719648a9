"""The ``clusterctl`` command line: its entry point ``run`` and the commands that read the
configuration and drive the cluster (``config check``, ``health``, ``up``, ``down``,
``status``, ``logs``); the measurement, sweep, demo and testbed commands live beside it
(``measure``, ``sweep``, ``extra``) and share ``cluster.cli.app``.

Data goes to stdout (tables, or exactly one JSON document with ``--json``); messages and
logs go to stderr. Every flag can also be set from the environment: the global options as
``CLUSTERCTL_<OPTION>``, a command's options as ``CLUSTERCTL_<COMMAND>_<OPTION>``.
Exit codes are fixed and documented in docs/cli.md (see ``cluster.errors``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import Annotated, Any

import typer

from cluster import errors
from cluster.cli import render
from cluster.cli.app import (
    Context,
    app,
    config_app,
    context_of,
    err,
    invocation,
    mutating,
    out,
    print_json,
    run_async,
)
from cluster.cli.boundary import guarded, verbosity
from cluster.cli.daemon import daemon_status
from cluster.config.models import parse_split
from cluster.errors import ConfigError
from cluster.orchestration import control
from cluster.orchestration.endpoint import served_endpoint
from cluster.orchestration.health import failed, gate, run_health
from cluster.orchestration.launch import Launcher
from cluster.orchestration.throughput import DEFAULT_MAX_AGE_H, Mode, plan_from
from cluster.report.links import ServingLoad, serving_load
from cluster.store import Store
from cluster.transport.pool import HostPool

# --- config -------------------------------------------------------------------------------


@config_app.command("check")
def config_check(
    ctx: typer.Context,
    profiles: Annotated[
        list[str] | None, typer.Argument(help="Profiles to check (default: all).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", envvar="CLUSTERCTL_CONFIG_CHECK_JSON")] = False,
) -> None:
    """Load hosts.toml and the profiles, check them against each other, print the result.

    A profile named on the command line must load and fit: its problem is the one error
    line (exit 2). Checking all profiles, one written for another cluster (other hosts,
    another device count) is listed with the reason and does not fail the check; a
    profile file that is itself wrong does (exit 2, one line per such file).
    """
    from cluster.config.resolve import Fit, check_profiles

    inventory, sources = context_of(ctx).load()
    names = profiles or sorted(p.stem for p in sources.playbooks_dir.glob("*.toml"))
    checks = check_profiles(inventory, sources.playbooks_dir, names)
    if profiles:
        for check in checks:
            if check.fit is not Fit.FITS:
                raise ConfigError(check.problem)
    if as_json:
        print_json(
            {
                "sources": {k: str(v) for k, v in vars(sources).items()},
                "inventory": inventory.model_dump(mode="json"),
                "profiles": {
                    c.name: {
                        **c.profile.model_dump(mode="json"),
                        "devices": [vars(d) for d in c.devices],
                    }
                    for c in checks
                    if c.fit is Fit.FITS and c.profile is not None
                },
                "unfit": {c.name: c.problem for c in checks if c.fit is Fit.UNFIT},
                "invalid": {c.name: c.problem for c in checks if c.fit is Fit.INVALID},
            }
        )
    else:
        render.config(out, inventory, sources, checks)
    invalid = [c for c in checks if c.fit is Fit.INVALID]
    for check in invalid:
        err.print(f"error: {check.problem}", markup=False, highlight=False)
    if invalid:
        raise typer.Exit(errors.EXIT_CONFIG)


# --- health -------------------------------------------------------------------------------


@app.command()
def health(
    ctx: typer.Context,
    profile: Annotated[
        str | None, typer.Argument(help="Also check this profile's model and memory fit.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", envvar="CLUSTERCTL_HEALTH_JSON")] = False,
    measure: Annotated[
        bool,
        typer.Option(
            "--throughput",
            envvar="CLUSTERCTL_HEALTH_THROUGHPUT",
            help="Measure the link throughput (iperf3) now, whatever the last one's age.",
        ),
    ] = False,
    quick: Annotated[
        bool,
        typer.Option(
            envvar="CLUSTERCTL_HEALTH_QUICK",
            help="Never measure the throughput; show the last measurement and its age.",
        ),
    ] = False,
    max_age_h: Annotated[
        float,
        typer.Option(
            "--throughput-max-age",
            envvar="CLUSTERCTL_HEALTH_THROUGHPUT_MAX_AGE",
            metavar="HOURS",
            help="Measure a path whose last measurement is older than this (0: every time).",
        ),
    ] = DEFAULT_MAX_AGE_H,
) -> None:
    """Is every host fit to serve? Exit 0 when nothing failed, 1 otherwise.

    The link throughput is measured only for a path never measured, or last measured more
    than --throughput-max-age hours ago, or with --throughput; otherwise the last
    measurement is shown with its age.
    """
    c = context_of(ctx)
    inventory, _ = c.load()
    chosen = c.profile(profile) if profile else None
    if measure and quick:
        raise ConfigError("--throughput measures, --quick does not: give one", key="--quick")
    mode = Mode.MEASURE if measure else Mode.SKIP if quick else Mode.WHEN_OLD
    with c.store() as store:
        try:
            plan = plan_from(store, inventory.cluster.head, mode, max_age_h)
        except ValueError as exc:
            raise ConfigError(str(exc), key="--throughput-max-age") from None

        async def go() -> list[Any]:
            async with HostPool(inventory.hosts.values()) as pool:
                return await run_health(pool, inventory, chosen, throughput=plan)

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
    c = context_of(ctx)
    inventory, sources = c.load()
    chosen = c.profile(profile)
    try:
        split_override = parse_split(split) if split is not None else None
    except ValueError as exc:
        raise ConfigError(str(exc), key="--split") from None

    async def go() -> Any:
        async with mutating(inventory) as pool:
            launcher = Launcher(
                inventory,
                chosen,
                pool,
                Store(sources.state_dir),
                split=split_override,
                environ=dict(os.environ),
                say=lambda m: err.print(m),
            )
            builds = None  # --skip-health: the launch reads every host's build itself
            if not skip_health:
                err.print(f"health gate for {chosen.name}...")
                builds = await gate(
                    pool,
                    inventory,
                    chosen,
                    show=lambda checks: render.health(err, checks, problems_only=True),
                    throughput=plan_from(launcher.store, inventory.cluster.head, Mode.SKIP),
                )
            return await launcher.up(builds=builds)

    result = run_async(go)
    reach = served_endpoint(inventory, chosen)
    if as_json:
        print_json(
            {
                **vars(result),
                "links": [link.model_dump() for link in result.links],
                "endpoint": reach.url,
                "bound": result.endpoint,
                "access": reach.access.value,
                "tunnel": reach.tunnel_command,
            }
        )
    else:
        err.print(
            f"serving {chosen.name} (split {result.split}) after {result.attempts} attempt(s), "
            f"load {result.load_seconds:.1f}s; run {result.run_id}"
        )
        out.print(reach.url, markup=False, highlight=False)
        err.print(reach.explain(), markup=False, highlight=False)
    for survivor in result.survivors:
        err.print(f"warning: a process survived SIGTERM and SIGKILL: {survivor}")


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop everything clusterctl started, on every host. Safe to repeat."""
    inventory, _ = context_of(ctx).load()

    async def go() -> control.DownReport:
        async with mutating(inventory, take_from_jobs=True) as pool:
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
    """What runs where: pids, ports, profile, split, uptime and llama-server's health, and
    each worker's link during the load of the launch that serves (from the record)."""
    c = context_of(ctx)
    inventory, _ = c.load()

    async def go() -> tuple[list[control.ComponentStatus], dict[str, str]]:
        async with HostPool(inventory.hosts.values()) as pool:
            return await control.status(pool, inventory)

    rows, unreachable = run_async(go)
    launch = control.serving_launch(rows)
    load = _serving_load(c, launch) if launch is not None else None
    daemon = daemon_status(ctx)
    if as_json:
        print_json(
            {
                "components": [vars(row) for row in rows],
                "unreachable": unreachable,
                "load": load.model_dump(mode="json") if load else None,
                "daemon": daemon.model_dump(mode="json") if daemon else None,
            }
        )
    else:
        render.status(out, rows, unreachable)
        if launch is not None:
            render.serving_load(out, launch, load)
        if daemon is not None:
            render.daemon(out, daemon)
    if unreachable:
        raise typer.Exit(errors.EXIT_TRANSPORT)


def _serving_load(c: Context, launch: tuple[int, int]) -> ServingLoad | None:
    """The serving launch's load from the record; a record that cannot be read costs the
    link figures (a warning), not the rest of ``status``."""
    try:
        with c.store() as store:
            return serving_load(store, *launch)
    except errors.StoreError as exc:
        err.print(f"warning: no link figures: {exc}", markup=False, highlight=False)
        return None


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
    inventory, _ = context_of(ctx).load()
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


# The modules whose commands the command line has besides this one's; importing one
# registers its commands on ``app``.
COMMAND_MODULES = (
    "cluster.cli.measure",
    "cluster.cli.sweep",
    "cluster.cli.extra",
    "cluster.cli.provision",
    "cluster.cli.daemon",
)


def _main() -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    app()


def run() -> None:
    """Entry point (``clusterctl``, ``python -m cluster``): every command behind the one
    error boundary, so a user sees one line and a documented exit code, never a traceback
    (unless ``-v`` asks for an internal error's)."""
    sys.exit(guarded(_main, lambda: verbosity(invocation.verbose, os.environ)))
