"""The daemon on the command line: ``daemon`` (and ``daemon install``), ``serve``,
``submit``, ``jobs``, ``cancel``. docs/daemon.md describes the lifecycle and the API."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cluster.cli.app import app, context_of, err, out, print_json
from cluster.daemon.client import DaemonClient
from cluster.daemon.models import DaemonStatus, Job, JobKind, JobRequest
from cluster.daemon.windows import Window, parse_at
from cluster.errors import ConfigError
from cluster.transport.pool import HostPool

daemon_app = typer.Typer(
    invoke_without_command=True, help="Keep a profile serving and run queued jobs (foreground)."
)
app.add_typer(daemon_app, name="daemon")


def client_for(ctx: typer.Context) -> DaemonClient:
    inventory, sources = context_of(ctx).load()
    configured = inventory.daemon.socket
    path = Path(configured).expanduser() if configured else sources.state_dir / "daemon.sock"
    return DaemonClient(path)


def daemon_status(ctx: typer.Context) -> DaemonStatus | None:
    """The daemon's status when one answers on its socket (for ``status``), else None."""
    client = client_for(ctx)
    try:
        return client.status() if client.answers() else None
    finally:
        client.close()


@daemon_app.callback()
def daemon(ctx: typer.Context) -> None:
    """Run the daemon in the foreground (for systemd: `clusterctl daemon install`)."""
    if ctx.invoked_subcommand is not None:
        return
    from cluster.daemon.context import DaemonContext
    from cluster.daemon.service import Daemon

    c = context_of(ctx)
    inventory, sources = c.load()
    token = None
    if inventory.daemon.token_env is not None:
        token = os.environ.get(inventory.daemon.token_env)
        if not token:
            raise ConfigError(
                f"names {inventory.daemon.token_env}, which is unset or empty",
                file=str(sources.config_file),
                key="daemon.token_env",
            )

    async def go() -> None:
        async with HostPool(inventory.hosts.values()) as pool:
            context = DaemonContext(
                inventory, sources.playbooks_dir, sources.state_dir, c.store(), pool, os.environ
            )
            await Daemon(context, token).run()

    asyncio.run(go())


@daemon_app.command("install")
def install(
    ctx: typer.Context,
    env_file: Annotated[
        Path | None, typer.Option(help="Environment file for keys (EnvironmentFile=).")
    ] = None,
) -> None:
    """Write a systemd user unit that runs this daemon; print how to start it."""
    from cluster.daemon.unit import unit_path, unit_text

    _, sources = context_of(ctx).load()
    path = unit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(unit_text(sources.config_file.resolve(), sources.state_dir.resolve(), env_file))
    out.print(f"wrote {path}")
    if shutil.which("systemd-analyze"):
        check = subprocess.run(
            ["systemd-analyze", "--user", "verify", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        problems = (check.stdout + check.stderr).strip()
        err.print(f"systemd-analyze verify: {problems or 'ok'}", markup=False)
    out.print(
        "start it: systemctl --user daemon-reload && systemctl --user enable --now clusterctl"
    )
    out.print("keep it running after you log out: loginctl enable-linger")


@app.command()
def serve(
    ctx: typer.Context,
    profile: Annotated[str | None, typer.Argument(help="Profile to keep serving.")] = None,
    split: Annotated[str | None, typer.Option(help="Tensor split override, e.g. 1.2/0.8.")] = None,
    stop: Annotated[bool, typer.Option("--stop", help="Serve nothing (stop serving).")] = False,
) -> None:
    """Tell the daemon what to keep serving (its desired state)."""
    if (profile is None) == (not stop):
        raise ConfigError("name a profile to serve, or --stop")
    client = client_for(ctx)
    desired = client.set_desired(None if stop else profile, split)
    what = desired.profile or "nothing"
    out.print(f"desired: {what}" + (f" (split {split})" if split else ""))


def _options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ConfigError(f"{pair!r} is not KEY=VALUE", key="--option")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except ValueError:
            options[key.replace("-", "_")] = value
    return options


@app.command()
def submit(
    ctx: typer.Context,
    kind: Annotated[JobKind, typer.Argument(help="bench, screen, ceiling or sweep.")],
    target: Annotated[str, typer.Argument(help="A profile (bench, ceiling) or a playbook.")],
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="A job option, as the command's: -o tokens=4096."),
    ] = None,
    at: Annotated[str | None, typer.Option(help="Not before: 02:00 or 2026-12-01T02:00.")] = None,
    window: Annotated[str | None, typer.Option(help="Run only in 01:00-07:00, daily.")] = None,
    then: Annotated[
        str | None, typer.Option(help="'apply': write a sweep's best split afterwards.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Queue a bench, screen, ceiling or sweep on the daemon's cluster."""
    if then not in (None, "apply"):
        raise ConfigError(f"--then {then!r}: the only step is 'apply'", key="--then")
    if then and kind is not JobKind.SWEEP:
        raise ConfigError("--then apply is for sweeps", key="--then")
    try:
        when = parse_at(at, time.time()) if at else None
        if window is not None:
            Window.parse(window)
    except ValueError as exc:
        raise ConfigError(str(exc), key="--at" if at else "--window") from None
    request = JobRequest(
        kind=kind,
        target=target,
        options=_options(option or []),
        at=when,
        window=window,
        then_apply=then == "apply",
    )
    job = client_for(ctx).submit(request)
    if as_json:
        print_json(job.model_dump(mode="json"))
    else:
        out.print(f"job {job.id}: {job.describe} {job.status.value}")


def _job_line(job: Job) -> str:
    progress = job.progress
    parts = [f"{job.id:>4}  {job.status.value:<9} {job.describe}"]
    if job.request.window:
        parts.append(f"window {job.request.window}")
    if job.run_id:
        parts.append(f"run {job.run_id}")
    if progress.total:
        eta = f", eta {progress.eta_s:.0f}s" if progress.eta_s else ""
        parts.append(f"{progress.done}/{progress.total}{eta} {progress.what}")
    if job.message:
        parts.append(job.message.splitlines()[0][:120])
    return "  ".join(parts)


@app.command()
def jobs(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The daemon's jobs: queued, running (with progress) and done, newest first."""
    listed = client_for(ctx).jobs()
    if as_json:
        print_json([job.model_dump(mode="json") for job in listed])
        return
    for job in listed:
        out.print(_job_line(job), markup=False, highlight=False)
    if not listed:
        out.print("no jobs")


@app.command()
def cancel(ctx: typer.Context, job: Annotated[int, typer.Argument(help="Job id.")]) -> None:
    """Cancel a queued job, or stop a running one (its run stays, interrupted)."""
    cancelled = client_for(ctx).cancel(job)
    out.print(f"job {cancelled.id}: {cancelled.status.value}")
