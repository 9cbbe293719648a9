"""The ``demo`` and ``testbed`` commands: the embedded default and the namespace testbed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from cluster import demo as demo_mod
from cluster.cli import render
from cluster.cli.main import app, err, out, run_async, testbed_app
from cluster.config.loader import resolve_sources
from cluster.config.models import format_split
from cluster.errors import EXIT_CHECK_FAILED, ClusterError
from cluster.llamacpp.client import LlamaClient
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
        bool, typer.Option(envvar="CLUSTERCTL_DEMO_KEEP", help="Leave it serving.")
    ] = False,
) -> None:
    """The main job on the embedded default: health, up, a completion, status, down."""
    inventory, profile = demo_mod.prepare(lambda message: err.print(message))
    hosts_file, _ = demo_mod.demo_config()
    sources = resolve_sources(inventory, hosts_file)

    async def go() -> int:
        async with HostPool(inventory.hosts.values()) as pool:
            err.print("[bold]1. health[/]")
            checks = await run_health(pool, inventory, profile, measure_throughput=False)
            render.health(out, checks)
            if failed(checks):
                return EXIT_CHECK_FAILED
            err.print(f"[bold]2. up {profile.name}[/] (split {format_split(profile.tensor_split)})")
            launcher = Launcher(
                inventory, profile, pool, Store(sources.state_dir), say=lambda m: err.print(m)
            )
            result = await launcher.up()
            out.print(
                f"serving at {result.endpoint} after {result.attempts} attempt(s), "
                f"load {result.load_seconds:.2f}s"
            )
            try:
                err.print("[bold]3. a completion[/]")
                async with LlamaClient(result.endpoint) as client:
                    start = time.monotonic()
                    answer = await client.completion("The cluster", n_predict=16, ignore_eos=True)
                    timings = answer.get("timings", {})
                    took = time.monotonic() - start
                    out.print(
                        f"{timings.get('predicted_n', '?')} tokens in {took:.2f}s: "
                        f"prompt {timings.get('prompt_per_second', 0):.1f} tok/s, "
                        f"generation {timings.get('predicted_per_second', 0):.1f} tok/s"
                    )
                err.print("[bold]4. status[/]")
                rows, unreachable = await control.status(pool, inventory)
                render.status(out, rows, unreachable)
            finally:
                if not keep:
                    err.print("[bold]5. down[/]")
                    render.down(out, await control.down(pool, inventory))
        return 0

    code = run_async(go)
    if code:
        raise typer.Exit(code)


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
    from cluster.testbed.bed import TestbedSpec, create
    from cluster.testbed.builds import GENERATIONS, ensure_build
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
