"""The sweep commands: ``sweep``, ``report`` and ``compare``.

``sweep PLAYBOOK`` runs a tensor-split sweep; ``sweep --resume RUN`` continues one that
stopped (Ctrl-C, ``--until``, a crash, a killed controller) after its last recorded
point. ``report RUN`` writes Markdown, a PNG plot, JSON and CSV for any run (sweeps,
screens, benches); ``--sanitize`` strips addresses, host names and paths for publishing;
``--apply`` writes a sweep's best split into its profile, showing the change first.
``compare RUN_A RUN_B`` shows two runs side by side.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cluster.cli.app import (
    Context,
    app,
    context_of,
    err,
    held,
    out,
    print_json,
    refuse_if_running,
    run_async,
)
from cluster.cli.progress import BarProgress
from cluster.config.loader import profile_path, validate
from cluster.config.models import parse_split
from cluster.errors import EXIT_INTERRUPTED, ConfigError
from cluster.records import RunKind
from cluster.report import apply as apply_mod
from cluster.report import compare as compare_mod
from cluster.report.files import report_files
from cluster.report.noise import Judgement
from cluster.report.points import judgement, points
from cluster.report.sanitize import Sanitizer
from cluster.store import Result, Run, Store
from cluster.sweep.playbook import SweepPlaybook, deadline, load_sweep
from cluster.sweep.runner import Sweep
from cluster.transport.pool import HostPool


@app.command()
def sweep(
    ctx: typer.Context,
    playbook: Annotated[
        str | None,
        typer.Argument(help="Sweep playbook: a name in playbooks/sweeps/ or a .toml path."),
    ] = None,
    resume: Annotated[
        int | None, typer.Option(envvar="CLUSTERCTL_SWEEP_RESUME", help="Run to continue.")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            envvar="CLUSTERCTL_SWEEP_UNTIL", help="Stop by a time (07:00) or after (6h, 90m)."
        ),
    ] = None,
    apply: Annotated[
        bool, typer.Option(envvar="CLUSTERCTL_SWEEP_APPLY", help="Write the best split back.")
    ] = False,
    skip_health: Annotated[bool, typer.Option(envvar="CLUSTERCTL_SWEEP_SKIP_HEALTH")] = False,
    as_json: Annotated[bool, typer.Option("--json", envvar="CLUSTERCTL_SWEEP_JSON")] = False,
) -> None:
    """Find the best tensor split: load, measure and record each split; resumable."""
    c = context_of(ctx)
    inventory, sources = c.load()
    store = c.store()
    if resume is not None:
        book = _recorded_sweep(store, resume)
    elif playbook is not None:
        book = load_sweep(sources.playbooks_dir, playbook)
    else:
        raise ConfigError("name a sweep playbook, or --resume RUN")
    profile = c.profile(book.profile)
    try:
        stop_by = deadline(until, time.time()) if until else None
    except ValueError as exc:
        raise ConfigError(str(exc), key="--until") from None
    progress = BarProgress()
    job = Sweep(
        inventory,
        book,
        profile,
        HostPool(inventory.hosts.values()),
        store,
        progress,
        environ=dict(os.environ),
        health_gate=not skip_health,
        until=stop_by,
    )
    if resume is not None:
        _check_unchanged(store, resume, job.run_config())

    async def go() -> Any:
        with progress.shown():
            async with job.pool, held(job.pool, job.inventory):
                return await job.run(resume=resume)

    try:
        report = run_async(go)
    except typer.Exit as stop:
        if stop.exit_code == EXIT_INTERRUPTED:
            run_id = resume or store.last_run_id(RunKind.SWEEP)
            err.print("stopped; every finished point is recorded. Resume with:")
            err.print(f"  clusterctl sweep --resume {run_id}")
        raise
    run = store.run(report.run_id)
    assert run is not None
    judged = _judged(run, store.results(run.id))
    if as_json:
        print_json(
            {
                "run": run.model_dump(),
                "summary": run.summary,
                "settled": judged.settled,
                "within_noise": [tie.point.split for tie in judged.ties],
            }
        )
    else:
        _say_outcome(run, judged)
    if report.stopped == "until":
        err.print(
            f"stopped by --until after {report.covered} point(s); continue with: "
            f"clusterctl sweep --resume {report.run_id}"
        )
    if apply:
        _apply(c, run, judged)


def _judged(run: Run, results: list[Result]) -> Judgement:
    """Whether the run's best split beats the others by more than the noise."""
    return judgement(run, points(run, results))


def _say_outcome(run: Run, judged: Judgement) -> None:
    summary = run.summary
    best, baseline = summary.get("best"), summary.get("baseline") or {}
    out.print(
        f"sweep run {run.id}: {summary.get('covered')} point(s) "
        f"({summary.get('pass')} measured, {summary.get('fail')} failed, "
        f"{summary.get('pruned')} pruned), stopped: {summary.get('stopped')}"
    )
    if best and judged.ties:
        within = ", ".join(tie.point.split for tie in judged.ties)
        out.print(
            f"no split is better than the noise: {best['split']} scored highest "
            f"(objective {best['objective']:.2f}), but {within} "
            f"{'is' if len(judged.ties) == 1 else 'are'} within the noise of it"
        )
    elif best:
        line = f"best split {best['split']}: objective {best['objective']:.2f}"
        if baseline.get("objective"):
            gain = (best["objective"] / baseline["objective"] - 1) * 100
            line += f" ({gain:+.1f}% against the profile's {baseline['split']})"
        out.print(line)
    err.print(f"report: clusterctl report {run.id}")


def _recorded_sweep(store: Store, run_id: int) -> SweepPlaybook:
    run = store.run(run_id)
    if run is None or run.kind != "sweep":
        raise ConfigError(f"run {run_id} is not a sweep", key="--resume")
    refuse_if_running(run)
    return validate(SweepPlaybook, run.config["sweep"], f"run {run_id}")


def _check_unchanged(store: Store, run_id: int, now: dict[str, Any]) -> None:
    run = store.run(run_id)
    assert run is not None
    if run.config.get("profile") != now["profile"]:
        raise ConfigError(
            f"profile {now['profile']['name']!r} changed since run {run_id} started; resuming "
            "would mix two setups (start a new sweep instead)",
            key="--resume",
        )


def _apply(c: Context, run: Run, judged: Judgement) -> None:
    best = (run.summary or {}).get("best")
    if not best:
        raise ConfigError(f"run {run.id} has no measured best split to apply")
    if judged.ties:
        err.print(
            f"warning: no split is better than the noise; applying the highest, {best['split']}, "
            "as asked (report RUN says which splits are within its noise)"
        )
    _, sources = c.load()
    path = profile_path(sources.playbooks_dir, run.profile or "")
    new_text, diff = apply_mod.apply_split(path, parse_split(best["split"]))
    if not diff:
        err.print(f"{path} already has split {best['split']}")
        return
    sys.stdout.write(diff)
    apply_mod.write_applied(path, new_text)
    err.print(f"wrote split {best['split']} to {path}")


def default_report_dir(c: Context, run_id: int) -> Path:
    """Where ``report RUN`` writes without ``--out``: beside the record it is made from."""
    _, sources = c.load()
    return sources.state_dir / "reports" / f"report-{run_id}"


@app.command()
def report(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(metavar="RUN", help="A run id from `runs`.")],
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            envvar="CLUSTERCTL_REPORT_OUT",
            help="Default: reports/report-RUN/ in the state directory.",
        ),
    ] = None,
    sanitize: Annotated[
        bool,
        typer.Option(envvar="CLUSTERCTL_REPORT_SANITIZE", help="Strip addresses, names, paths."),
    ] = False,
    apply: Annotated[
        bool, typer.Option(envvar="CLUSTERCTL_REPORT_APPLY", help="Write the best split back.")
    ] = False,
) -> None:
    """Write a run's report: report.md, report.png, results.json, results.csv.

    They go to ``--out``, or by default to ``reports/report-RUN/`` in the state directory
    (never into whatever directory the command runs in); stderr says where.
    """
    c = context_of(ctx)
    with c.store() as store:
        run = store.run(run_id)
        if run is None:
            raise ConfigError(f"no run {run_id} in {store.path}", key="RUN")
        results, attempts = store.results(run_id), store.attempts(run_id)
        events = store.events(run_id)
    target = (out_dir or default_report_dir(c, run_id)).expanduser()
    sanitizer = Sanitizer.for_run(run) if sanitize else None
    try:
        written = report_files(run, results, attempts, events, target, sanitizer)
    except OSError as exc:
        where = exc.filename or target
        raise ConfigError(
            f"cannot write the report: {exc.strerror or exc}", file=str(where), key="--out"
        ) from None
    for path in written:
        out.print(str(path), markup=False, highlight=False)
    err.print(f"report of run {run_id} written to {target}", markup=False, highlight=False)
    if apply:
        if run.kind != "sweep":
            raise ConfigError(f"run {run_id} is a {run.kind}, not a sweep", key="--apply")
        _apply(c, run, _judged(run, results))


@app.command()
def compare(
    ctx: typer.Context,
    run_a: Annotated[int, typer.Argument(metavar="RUN_A")],
    run_b: Annotated[int, typer.Argument(metavar="RUN_B")],
    markdown: Annotated[bool, typer.Option(envvar="CLUSTERCTL_COMPARE_MARKDOWN")] = False,
) -> None:
    """Two runs side by side: each point or case, and what differs in their setup."""
    with context_of(ctx).store() as store:
        loaded = []
        for run_id in (run_a, run_b):
            run = store.run(run_id)
            if run is None:
                raise ConfigError(f"no run {run_id} in {store.path}", key="RUN")
            loaded.append((run, store.results(run_id), store.attempts(run_id)))
    (ra, rsa, aa), (rb, rsb, ab) = loaded
    comparison = compare_mod.compare(ra, rsa, aa, rb, rsb, ab)
    if markdown:
        sys.stdout.write(compare_mod.comparison_markdown(comparison))
    else:
        out.print(compare_mod.comparison_table(comparison))
