"""The measurement commands: ``bench``, ``screen``, ``ceiling``, ``runs`` and ``show``.

Long jobs draw a progress bar with an ETA on stderr; results go to stdout as a table,
``--json`` or (``show``) ``--markdown``. Every case is in the store the moment it ends, so
``show RUN`` works during a job, after Ctrl-C, and after the controller was killed.

Exit codes: 0 when everything measured passed, 1 when a case failed (the results are
recorded), 2 for bad input, 5 when the cluster could not be served at all, 130 on Ctrl-C.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from cluster.cli.app import (
    app,
    context_of,
    err,
    mutating,
    out,
    print_json,
    refuse_if_running,
    run_async,
)
from cluster.cli.progress import BarProgress
from cluster.config.loader import describe_validation_error, validate
from cluster.config.models import parse_split
from cluster.errors import EXIT_CHECK_FAILED, ConfigError
from cluster.measure.bench import BenchRequest, run_bench
from cluster.measure.ceiling import CeilingRequest, run_ceiling
from cluster.measure.playbook import ScreenPlaybook, load_screen
from cluster.measure.records import median_of
from cluster.measure.screen import Screen
from cluster.records import RunKind
from cluster.report import tables
from cluster.store import Run, Store

ModelT = TypeVar("ModelT", bound=BaseModel)


@app.command()
def bench(
    ctx: typer.Context,
    profile: Annotated[str, typer.Argument(help="Profile name (playbooks/NAME.toml).")],
    shape: Annotated[str, typer.Option(envvar="CLUSTERCTL_BENCH_SHAPE")] = "random",
    tokens: Annotated[
        int, typer.Option(envvar="CLUSTERCTL_BENCH_TOKENS", help="Prompt tokens.")
    ] = 512,
    gen: Annotated[
        int, typer.Option(envvar="CLUSTERCTL_BENCH_GEN", help="Generated tokens.")
    ] = 128,
    repeat: Annotated[int, typer.Option(envvar="CLUSTERCTL_BENCH_REPEAT")] = 5,
    warmup: Annotated[int, typer.Option(envvar="CLUSTERCTL_BENCH_WARMUP")] = 1,
    concurrency: Annotated[int, typer.Option(envvar="CLUSTERCTL_BENCH_CONCURRENCY")] = 1,
    split: Annotated[str | None, typer.Option(envvar="CLUSTERCTL_BENCH_SPLIT")] = None,
    skip_health: Annotated[bool, typer.Option(envvar="CLUSTERCTL_BENCH_SKIP_HEALTH")] = False,
    as_json: Annotated[bool, typer.Option("--json", envvar="CLUSTERCTL_BENCH_JSON")] = False,
) -> None:
    """Prompt and generation throughput, TTFT and ITL for one shape and size."""
    c = context_of(ctx)
    inventory, _ = c.load()
    chosen = c.profile(profile)
    request = _options(
        BenchRequest,
        shape=shape,
        tokens=tokens,
        gen=gen,
        repeat=repeat,
        warmup=warmup,
        concurrency=concurrency,
    )
    try:
        split_override = parse_split(split) if split is not None else None
    except ValueError as exc:
        raise ConfigError(str(exc), key="--split") from None
    progress = BarProgress()

    async def go() -> Any:
        with progress.shown(), c.store() as store:
            async with mutating(inventory) as pool:
                report = await run_bench(
                    inventory,
                    chosen,
                    pool,
                    store,
                    request,
                    progress,
                    split=split_override,
                    environ=dict(os.environ),
                    health_gate=not skip_health,
                )
            return report, store.run(report.run_id), store.results(report.run_id)

    report, run, results = run_async(go)
    _print_results(run, results, as_json)
    metrics = report.outcome.metrics
    if not as_json and report.outcome.failure is None:
        err.print(
            f"run {report.run_id}: pp {median_of(metrics, 'pp_tps') or 0:.1f} tok/s, "
            f"tg {median_of(metrics, 'tg_tps') or 0:.1f} tok/s (server medians)"
        )
        tg = median_of(metrics, "tg_tps")
        if report.traffic is not None and tg is not None:
            err.print(f"generation reads {report.traffic.utilisation_text(tg)}")
    if report.outcome.failure is not None:
        raise typer.Exit(EXIT_CHECK_FAILED)


@app.command()
def screen(
    ctx: typer.Context,
    playbook: Annotated[
        str | None,
        typer.Argument(help="Screen playbook: a name in playbooks/screens/ or a .toml path."),
    ] = None,
    resume: Annotated[
        int | None, typer.Option(envvar="CLUSTERCTL_SCREEN_RESUME", help="Run to continue.")
    ] = None,
    skip_health: Annotated[bool, typer.Option(envvar="CLUSTERCTL_SCREEN_SKIP_HEALTH")] = False,
    as_json: Annotated[bool, typer.Option("--json", envvar="CLUSTERCTL_SCREEN_JSON")] = False,
) -> None:
    """Run a stability screen: configurations x shapes x targets x attempts."""
    c = context_of(ctx)
    inventory, sources = c.load()
    store = c.store()
    if resume is not None:
        book, path = _recorded_screen(store, resume)
    elif playbook is not None:
        book, path = load_screen(sources.playbooks_dir, playbook)
    else:
        raise ConfigError("name a screen playbook, or --resume RUN")
    profiles = {config.profile: c.profile(config.profile) for config in book.configs}
    progress = BarProgress()

    async def go() -> Any:
        with progress.shown():
            async with mutating(inventory) as pool:
                job = Screen(
                    inventory,
                    book,
                    path,
                    profiles,
                    pool,
                    store,
                    progress,
                    environ=dict(os.environ),
                    health_gate=not skip_health,
                )
                if resume is not None:
                    _check_unchanged(store, resume, job.run_config())
                return await job.run(resume=resume)

    try:
        report = run_async(go)
    except typer.Exit:
        err.print(f"resume with: clusterctl screen --resume {store.last_run_id(RunKind.SCREEN)}")
        raise
    _print_results(store.run(report.run_id), store.results(report.run_id), as_json)
    store.close()
    if report.failed:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _recorded_screen(store: Store, run_id: int) -> tuple[ScreenPlaybook, Any]:
    from pathlib import Path

    run = store.run(run_id)
    if run is None or run.kind != "screen":
        raise ConfigError(f"run {run_id} is not a screen", key="--resume")
    refuse_if_running(run)
    book = validate(ScreenPlaybook, run.config["screen"], f"run {run_id}")
    return book, Path(run.config["playbook_path"])


def _check_unchanged(store: Store, run_id: int, now: dict[str, Any]) -> None:
    run = store.run(run_id)
    assert run is not None
    for name, profile in now["profiles"].items():
        if run.config["profiles"].get(name) != profile:
            raise ConfigError(
                f"profile {name.split('@')[0]!r} changed since run {run_id} started; "
                f"resuming would mix two setups (start a new screen instead)",
                key="--resume",
            )


@app.command()
def ceiling(
    ctx: typer.Context,
    profile: Annotated[str, typer.Argument(help="Profile name (playbooks/NAME.toml).")],
    shape: Annotated[str, typer.Option(envvar="CLUSTERCTL_CEILING_SHAPE")] = "opt",
    gen: Annotated[int, typer.Option(envvar="CLUSTERCTL_CEILING_GEN")] = 32,
    start: Annotated[int | None, typer.Option(envvar="CLUSTERCTL_CEILING_START")] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            envvar="CLUSTERCTL_CEILING_LIMIT", help="Largest target (default: slot ctx - gen)."
        ),
    ] = None,
    resolution: Annotated[int | None, typer.Option(envvar="CLUSTERCTL_CEILING_RESOLUTION")] = None,
    attempts: Annotated[int, typer.Option(envvar="CLUSTERCTL_CEILING_ATTEMPTS")] = 1,
    resume: Annotated[int | None, typer.Option(envvar="CLUSTERCTL_CEILING_RESUME")] = None,
    skip_health: Annotated[bool, typer.Option(envvar="CLUSTERCTL_CEILING_SKIP_HEALTH")] = False,
    as_json: Annotated[bool, typer.Option("--json", envvar="CLUSTERCTL_CEILING_JSON")] = False,
) -> None:
    """Find the largest prompt of a shape that passes: ladder up, then bisect."""
    c = context_of(ctx)
    inventory, _ = c.load()
    chosen = c.profile(profile)
    request = _options(
        CeilingRequest,
        shape=shape,
        gen=gen,
        start=start,
        limit=limit,
        resolution=resolution,
        attempts=attempts,
    )
    progress = BarProgress()
    if resume is not None:
        with c.store() as store:
            recorded = store.run(resume)
        if recorded is not None:
            refuse_if_running(recorded)

    async def go() -> Any:
        with progress.shown(), c.store() as store:
            async with mutating(inventory) as pool:
                return await run_ceiling(
                    inventory,
                    chosen,
                    pool,
                    store,
                    request,
                    progress,
                    environ=dict(os.environ),
                    health_gate=not skip_health,
                    resume=resume,
                )

    report = run_async(go)
    ladder = [{"target": t, "status": "pass" if ok else "fail"} for t, ok in report.ladder]
    if as_json:
        print_json(
            {
                "run": report.run_id,
                "shape": shape,
                "ceiling": report.ceiling,
                "limit": report.limit,
                "ladder": ladder,
            }
        )
    else:
        for rung in ladder:
            out.print(f"{rung['target']:>8}  {rung['status'].upper()}")
        found = "none passed" if report.ceiling is None else f"{report.ceiling} tokens"
        out.print(f"ceiling for {shape}: {found} (limit {report.limit}; run {report.run_id})")
    if report.ceiling is None:
        raise typer.Exit(EXIT_CHECK_FAILED)


@app.command()
def runs(
    ctx: typer.Context,
    kind: Annotated[RunKind | None, typer.Option(envvar="CLUSTERCTL_RUNS_KIND")] = None,
    limit: Annotated[int, typer.Option(envvar="CLUSTERCTL_RUNS_LIMIT")] = 30,
    as_json: Annotated[bool, typer.Option("--json", envvar="CLUSTERCTL_RUNS_JSON")] = False,
) -> None:
    """The recorded runs, newest first."""
    with context_of(ctx).store() as store:
        listed = store.runs(kind=kind, limit=limit)
        counts = {}
        for run in listed:
            results = store.results(run.id)
            counts[run.id] = (
                sum(1 for r in results if r.status == "pass"),
                sum(1 for r in results if r.status == "fail"),
            )
    if as_json:
        print_json(
            [
                {
                    **run.model_dump(exclude={"config"}),
                    "status": run.shown_status,
                    "pass": counts[run.id][0],
                    "fail": counts[run.id][1],
                }
                for run in listed
            ]
        )
    else:
        out.print(tables.runs_table(listed, counts))


@app.command()
def show(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(metavar="RUN", help="A run id from `runs`.")],
    as_json: Annotated[bool, typer.Option("--json", envvar="CLUSTERCTL_SHOW_JSON")] = False,
    markdown: Annotated[bool, typer.Option(envvar="CLUSTERCTL_SHOW_MARKDOWN")] = False,
    logs: Annotated[
        bool, typer.Option(envvar="CLUSTERCTL_SHOW_LOGS", help="Log tails of failed cases.")
    ] = False,
) -> None:
    """One run's results: a table, --json (everything) or --markdown (to publish)."""
    with context_of(ctx).store() as store:
        run = store.run(run_id)
        if run is None:
            raise ConfigError(f"no run {run_id} in {store.path}", key="RUN")
        results = store.results(run_id)
        attempts = store.attempts(run_id)
        events = store.events(run_id)
    if as_json:
        print_json(tables.run_document(run, results, attempts, events))
    elif markdown:
        sys.stdout.write(tables.results_markdown(run, results, attempts))
    else:
        out.print(tables.results_table(run, results))
        if logs:
            sys.stdout.write(tables.log_tails_text(results))


def _options(model: type[ModelT], **options: object) -> ModelT:
    """A job's request from its command-line options; a bad value names its option."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        key, message = describe_validation_error(exc)
        raise ConfigError(message, key=f"--{key.replace('_', '-')}") from None


def _print_results(run: Run | None, results: list[Any], as_json: bool) -> None:
    if run is None:
        return
    if as_json:
        print_json(tables.run_document(run, results, [], []))
    else:
        out.print(tables.results_table(run, results))
