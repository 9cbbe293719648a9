"""The files ``clusterctl report`` writes for a run: ``report.md``, ``report.png``,
``results.json`` and ``results.csv``; with a ``Sanitizer`` every record is sanitized before
it is rendered, and every text written is sanitized again."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cluster.report import export
from cluster.report.plots import cases_plot, sweep_plot
from cluster.report.sanitize import Sanitizer, markdown_safe
from cluster.report.sweep import sweep_markdown
from cluster.report.tables import Event, results_markdown, run_document
from cluster.store import Attempt, Result, Run


def report_files(
    run: Run,
    results: Sequence[Result],
    attempts: Sequence[Attempt],
    events: Sequence[Event],
    out_dir: Path,
    sanitizer: Sanitizer | None,
) -> list[Path]:
    """Write ``report.md``, ``report.png`` (when there is something to plot),
    ``results.json`` and ``results.csv`` into ``out_dir``; return the paths written.

    With a sanitizer, the records are sanitized first (extended to the host names the
    attempts and results name), so the Markdown, the plot's labels, the JSON and the CSV
    are all built from clean data; each text is sanitized once more as it is written.
    """
    if sanitizer is not None:
        sanitizer = sanitizer.covering(attempts, results)
        run, results, attempts, events = _sanitized(sanitizer, run, results, attempts, events)
    clean = sanitizer.text if sanitizer else (lambda s: s)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write(name: str, text: str) -> None:
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)

    markdown = sweep_markdown if run.kind == "sweep" else results_markdown
    document = clean(markdown(run, results, attempts))
    write("report.md", markdown_safe(document) if sanitizer else document)
    if results:
        plot = sweep_plot if run.kind == "sweep" else cases_plot
        written.append(plot(run, results, out_dir / "report.png", sanitizer=sanitizer))
    write("results.json", clean(export.to_json(run, results, attempts, events)) + "\n")
    write("results.csv", clean(export.to_csv(export.rows(run, results))))
    return written


def _sanitized(
    sanitizer: Sanitizer,
    run: Run,
    results: Sequence[Result],
    attempts: Sequence[Attempt],
    events: Sequence[Event],
) -> tuple[Run, list[Result], list[Attempt], list[Event]]:
    document = sanitizer.data(run_document(run, results, attempts, events))
    # The shown status needs the real controller host and pid: keep it, not the host.
    record = {**document["run"], "status": run.shown_status, "controller_pid": None}
    return (
        Run.model_validate(record),
        [Result.model_validate(result) for result in document["results"]],
        [Attempt.model_validate(attempt) for attempt in document["attempts"]],
        [(event["at"], event["kind"], event["data"]) for event in document["events"]],
    )
