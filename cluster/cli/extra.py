"""The ``demo`` and ``testbed`` commands: the embedded default and the namespace testbed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cluster.cli import render
from cluster.cli.app import app, err, mutating, out, run_async, testbed_app
from cluster.config.models import format_split
from cluster.errors import EXIT_CHECK_FAILED, ClusterError
from cluster.orchestration import control
from cluster.orchestration.health import failed, run_health
from cluster.orchestration.launch import Launcher
from cluster.store import Store
from cluster.transport.pool import HostPool

# One testbed per machine by default; root works in /tmp like the namespaces it makes.
DEFAULT_TESTBED_ROOT = Path("/tmp/clusterctl-testbed")  # noqa: S108


@app.command()
def demo(
    keep: Annotated[
        bool,
        typer.Option(
            envvar="CLUSTERCTL_DEMO_KEEP", help="Leave the daemon running, serving the demo."
        ),
    ] = False,
) -> None:
    """The main job on the embedded default: health, up, bench, a screen, status; then the
    daemon: a completion through its front door, a crash it recovers from, a queued bench,
    its dashboard, and down (docs/demo.md)."""
    from rich.markup import escape

    from cluster import demo as demo_mod
    from cluster.cli.progress import BarProgress
    from cluster.demo_daemon import DaemonAct
    from cluster.measure.bench import BenchRequest, run_bench
    from cluster.measure.playbook import load_screen
    from cluster.measure.screen import Screen
    from cluster.report import tables

    setup = demo_mod.prepare(lambda message: err.print(message))
    inventory, profile, hosts_file = setup.inventory, setup.profile, setup.hosts_file
    screen_book, screen_path = load_screen(setup.playbooks_dir, demo_mod.DEMO_SCREEN)

    async def go() -> int:
        async with mutating(inventory) as pool:
            err.print("[bold]1. health[/]")
            checks = await run_health(pool, inventory, profile, measure_throughput=False)
            render.health(out, checks)
            if failed(checks):
                return EXIT_CHECK_FAILED
            err.print(f"[bold]2. up {profile.name}[/] (split {format_split(profile.tensor_split)})")
            store = Store(setup.state_dir)
            launcher = Launcher(inventory, profile, pool, store, say=lambda m: err.print(m))
            passed = False
            try:
                result = await launcher.up()
                out.print(
                    f"serving at {result.endpoint} after {result.attempts} attempt(s), "
                    f"load {result.load_seconds:.2f}s"
                )
                err.print("[bold]3. bench[/] (random prompt of 256 tokens, 64 generated)")
                progress = BarProgress()
                with progress.shown():
                    bench = await run_bench(
                        inventory,
                        profile,
                        pool,
                        store,
                        BenchRequest(tokens=256, gen=64, repeat=3),
                        progress,
                        health_gate=False,
                    )
                run = store.run(bench.run_id)
                assert run is not None
                out.print(tables.results_table(run, store.results(bench.run_id)))
                err.print(f"[bold]4. screen {screen_book.name}[/] ({screen_book.description})")
                with progress.shown():
                    screen = await Screen(
                        inventory,
                        screen_book,
                        screen_path,
                        {profile.name: profile},
                        pool,
                        store,
                        progress,
                        health_gate=False,
                    ).run()
                run = store.run(screen.run_id)
                assert run is not None
                out.print(tables.results_table(run, store.results(screen.run_id)))
                err.print("[bold]5. status[/]")
                rows, unreachable = await control.status(pool, inventory)
                render.status(out, rows, unreachable)
                err.print(
                    f"recorded as runs {bench.run_id} and {screen.run_id}; to publish the "
                    f"screen: clusterctl --config {hosts_file} show {screen.run_id} --markdown"
                )
                passed = not screen.failed and bench.outcome.failure is None
            finally:
                if not passed:  # what serves is the daemon's to adopt only after a pass
                    err.print("[bold]down[/] (the demo stops here)")
                    render.down(out, await control.down(pool, inventory))
        return 0 if passed else EXIT_CHECK_FAILED

    code = run_async(go)
    if code:
        raise typer.Exit(code)
    # The lease is released: the daemon takes the cluster over from here.
    DaemonAct(
        setup,
        step=lambda title: err.print(f"[bold]{escape(title)}[/]", highlight=False),
        say=lambda line: out.print(line, markup=False, highlight=False),
    ).run(keep=keep)


@testbed_app.command("up")
def testbed_up(
    root: Annotated[
        Path,
        typer.Option(envvar="CLUSTERCTL_TESTBED_ROOT", help="Working directory of the testbed."),
    ] = DEFAULT_TESTBED_ROOT,
    hosts: Annotated[
        int, typer.Option(envvar="CLUSTERCTL_TESTBED_HOSTS", help="How many hosts.")
    ] = 2,
    rate: Annotated[
        str, typer.Option(envvar="CLUSTERCTL_TESTBED_RATE", help="tc rate of the direct link.")
    ] = "1gbit",
    legacy: Annotated[
        list[str] | None,
        typer.Option(envvar="CLUSTERCTL_TESTBED_LEGACY", help="Hosts that get the legacy build."),
    ] = None,
) -> None:
    """Create network-namespace hosts with sshd, a rate-limited link, and a hosts.toml."""
    from cluster.builds.local import GENERATIONS, ensure_build
    from cluster.testbed.bed import TestbedSpec, create
    from cluster.testbed.models import TINY, cached_model

    say = lambda message: err.print(message)  # noqa: E731
    current = ensure_build(GENERATIONS["current"], say=say)
    old = ensure_build(GENERATIONS["legacy"], say=say) if legacy else None
    model = cached_model(TINY)[0]
    bed = create(TestbedSpec(n_hosts=hosts, root=root, link_rate=rate))
    bin_dirs = {name: str(old if old and name in (legacy or []) else current) for name in bed.names}
    hosts_file = bed.write_inventory(root / "hosts.toml", bin_dirs)
    playbooks = root / "playbooks"
    playbooks.mkdir(exist_ok=True)
    # json.dumps writes strings and string lists the way TOML reads them.
    profile = {
        "description": "tiny model split over every testbed host",
        "model": str(model),
        "rpc_hosts": list(bed.names),
        "tensor_split": "/".join("1" for _ in bed.names),
        "ctx_size": 2048,
        "parallel": 2,
        "port": 18080,
        "stall_timeout_s": 20,
        "load_timeout_s": 120,
    }
    (playbooks / "testbed-tiny.toml").write_text(
        "".join(f"{key} = {json.dumps(value)}\n" for key, value in profile.items())
    )
    out.print(str(hosts_file))
    err.print(f"testbed {bed.tag}: hosts {', '.join(bed.names)}; try:")
    err.print(f"  CLUSTERCTL_CONFIG={hosts_file} clusterctl health testbed-tiny")
    err.print(f"  CLUSTERCTL_CONFIG={hosts_file} clusterctl up testbed-tiny")
    err.print(f"  clusterctl testbed down --root {root}")


@testbed_app.command("down")
def testbed_down(
    root: Annotated[Path, typer.Option(envvar="CLUSTERCTL_TESTBED_ROOT")] = DEFAULT_TESTBED_ROOT,
) -> None:
    """Stop what runs on the testbed and remove every namespace, interface and process."""
    from cluster.config.loader import load_inventory
    from cluster.testbed.bed import Testbed

    hosts_file = root / "hosts.toml"
    if hosts_file.is_file():
        inventory = load_inventory(hosts_file)

        async def stop() -> None:
            async with HostPool(inventory.hosts.values()) as pool:
                await control.down(pool, inventory)

        try:
            run_async(stop)
        except ClusterError as exc:
            err.print(f"warning: could not stop components cleanly: {exc}")
    Testbed.load(root).destroy()
    err.print(f"testbed at {root} removed")
