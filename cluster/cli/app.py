"""What every command module of the command line shares: the typer apps, the two consoles,
the global options and the per-invocation ``Context``, and the helpers to run a job and
print JSON.

Command modules (``main``, ``measure``, ``sweep``, ``extra``) import from here and never
from each other's entry point; ``cluster.cli.main.run`` imports them all once, inside the
error boundary, so that registering a command can not fail outside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from cluster import errors
from cluster.config.loader import (
    Sources,
    find_config_file,
    load_inventory,
    load_profile,
    resolve_sources,
)
from cluster.config.models import Inventory, Profile
from cluster.errors import ClusterBusy
from cluster.logging import configure_logging
from cluster.orchestration import lease
from cluster.records import RunStatus
from cluster.store import Run, Store
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
class Invocation:
    """What the error boundary needs to know about this process's command line once the
    command's own context is gone: how verbose the user asked it to be."""

    verbose: int | None = None


# Set by the global options callback; read by ``cluster.cli.main.run``.
invocation = Invocation()


@dataclass
class Context:
    """One command's view of the configuration: loaded on first use, then kept."""

    config_flag: Path | None
    playbooks_flag: Path | None
    state_dir_flag: Path | None
    _inventory: Inventory | None = None
    _sources: Sources | None = None

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


def context_of(ctx: typer.Context) -> Context:
    """The ``Context`` the global options callback put on typer's context."""
    assert isinstance(ctx.obj, Context)
    return ctx.obj


def _dump_tasks() -> None:
    """SIGUSR1: every asyncio task's stack on stderr (what is a job waiting for?)."""
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


async def _with_task_dump(make: Callable[[], Awaitable[T]]) -> T:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    try:
        return await make()
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; Ctrl-C becomes the documented exit code; SIGUSR1 prints every
    task's stack on stderr, for a job that seems stuck."""
    try:
        return asyncio.run(_with_task_dump(make))
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(errors.EXIT_INTERRUPTED) from None


def held(
    pool: HostPool, inventory: Inventory, *, take_from_jobs: bool = False
) -> contextlib.AbstractAsyncContextManager[lease.Holder]:
    """The cluster's lease, held for this command (``orchestration.lease``): a second
    mutating command refuses at once naming the holder; ``down`` asks a running job to
    stop instead (``take_from_jobs``)."""
    return lease.hold(
        pool,
        inventory,
        " ".join(["clusterctl", *sys.argv[1:]])[:200],
        say=lambda message: err.print(message, markup=False, highlight=False),
        take_from_jobs=take_from_jobs,
    )


@contextlib.asynccontextmanager
async def mutating(
    inventory: Inventory, *, take_from_jobs: bool = False
) -> AsyncIterator[HostPool]:
    """The hosts, with the cluster's lease held (``held``) while the body runs."""
    async with (
        HostPool(inventory.hosts.values()) as pool,
        held(pool, inventory, take_from_jobs=take_from_jobs),
    ):
        yield pool


def refuse_if_running(run: Run) -> None:
    """``--resume RUN`` of a run that a live controller on this machine is still running
    is refused (another machine's controller is kept out by the cluster's lease)."""
    if (
        run.status is RunStatus.RUNNING
        and run.controller_host == socket.gethostname()
        and run.controller_pid is not None
        and not run.stale
    ):
        raise ClusterBusy(
            f"run {run.id} is still being run by pid {run.controller_pid} on "
            f"{run.controller_host}; stop it (Ctrl-C there, or `clusterctl down`) to resume it"
        )


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
            help="More logs on stderr (-v, -vv); -v also shows the traceback of an internal error.",
        ),
    ] = 0,
    log_json: Annotated[
        bool, typer.Option(envvar="CLUSTERCTL_LOG_JSON", help="Logs as JSON lines.")
    ] = False,
) -> None:
    invocation.verbose = verbose
    configure_logging(verbose, log_json)
    ctx.obj = Context(config, playbooks, state_dir)
