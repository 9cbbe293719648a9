"""A run as the dashboard shows it: the same content as ``clusterctl report RUN``.

``run_view`` (``GET /api/runs/{id}/view``) is pure: the record in, the report's Markdown
(``report.sweep`` for a sweep, ``report.tables`` otherwise) plus what a page draws better
than Markdown: a screen's PASS/FAIL matrix by shape and target, a ceiling's ladder, a
sweep's verdict. ``ReportFiles`` writes the report's files (report.md, report.png,
results.json, results.csv; ``report.files``) on demand into the state directory, the
folder ``clusterctl report RUN`` writes by default, and serves them; a finished run's are
written once, a running one's at most every ``RUNNING_FRESH_S``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel

from cluster.records import ResultStatus
from cluster.report.files import report_files
from cluster.report.points import best_point, current_split, points
from cluster.report.sweep import sweep_markdown, verdict
from cluster.report.tables import (
    result_rows,
    results_markdown,
    run_title,
    summary_line,
)
from cluster.store import Attempt, Result, Run, Store

FILES = {
    "report.md": "text/markdown; charset=utf-8",
    "report.png": "image/png",
    "results.json": "application/json",
    "results.csv": "text/csv; charset=utf-8",
}
RUNNING_FRESH_S = 15.0


class Cell(BaseModel):
    """One (shape, target) of a screen: PASS, or FAIL with its class, per case run."""

    words: list[str]
    passed: bool


class Matrix(BaseModel):
    """A screen's cases of one config: shapes down, prompt targets across."""

    config: str
    shapes: list[str]
    targets: list[str]
    cells: list[list[Cell | None]]  # [shape][target]


class Step(BaseModel):
    target: int
    passed: bool
    failure_class: str | None = None


class SweepView(BaseModel):
    verdict: str
    best: str | None
    current: str | None
    points: int
    passed: int


class RunView(BaseModel):
    run: Run
    title: str
    status: str  # as shown: a run left running by a dead controller reads interrupted
    summary: str
    markdown: str  # report.md
    matrices: list[Matrix] = []
    ladder: list[Step] = []
    ceiling: int | None = None
    sweep: SweepView | None = None
    files: list[str]  # what GET /api/runs/{id}/files/{name} serves


def run_view(run: Run, results: Sequence[Result], attempts: Sequence[Attempt]) -> RunView:
    if run.kind == "sweep":
        markdown = sweep_markdown(run, results, attempts)
    else:
        markdown = results_markdown(run, results, attempts)
    files = [name for name in FILES if name != "report.png" or results]
    view = RunView(
        run=run,
        title=run_title(run),
        status=run.shown_status,
        summary=summary_line(results),
        markdown=markdown,
        files=files,
    )
    if run.kind == "sweep":
        found = points(run, results, attempts)
        best = best_point(run, found)
        return view.model_copy(
            update={
                "sweep": SweepView(
                    verdict=verdict(run, found),
                    best=best.split if best else None,
                    current=current_split(run),
                    points=len(found),
                    passed=sum(1 for point in found if point.passed),
                )
            }
        )
    if run.kind == "ceiling":
        ceiling = run.summary.get("ceiling")
        return view.model_copy(
            update={
                "ladder": ladder(run, results),
                "ceiling": ceiling if isinstance(ceiling, int) else None,
            }
        )
    return view.model_copy(update={"matrices": matrices(results)})


def matrices(results: Sequence[Result]) -> list[Matrix]:
    """The cases by config, shape and target (numeric targets in order)."""
    rows = result_rows(results)
    found: list[Matrix] = []
    for config in _distinct(str(row["config"] or row["profile"] or "-") for row in rows):
        mine = [row for row in rows if str(row["config"] or row["profile"] or "-") == config]
        shapes = _distinct(str(row["shape"]) for row in mine)
        targets = sorted(_distinct(str(row["target"]) for row in mine), key=_target_order)
        cells: list[list[Cell | None]] = [[None] * len(targets) for _ in shapes]
        for row in mine:
            i, j = shapes.index(str(row["shape"])), targets.index(str(row["target"]))
            before = cells[i][j]
            words = [*(before.words if before else []), str(row["result"])]
            passed = (before.passed if before else True) and row["status"] == ResultStatus.PASS
            cells[i][j] = Cell(words=words, passed=passed)
        found.append(Matrix(config=config, shapes=shapes, targets=targets, cells=cells))
    return found


def ladder(run: Run, results: Sequence[Result]) -> list[Step]:
    """A ceiling's targets in the order it tried them, with each failure's class."""
    classes = {
        str(result.spec.get("target")): result.failure_class
        for result in results
        if result.status != ResultStatus.PASS
    }
    steps = []
    for step in run.summary.get("ladder") or []:
        if not isinstance(step, dict) or not isinstance(step.get("target"), int):
            continue
        passed = step.get("status") == ResultStatus.PASS
        failure = None if passed else classes.get(str(step["target"]))
        steps.append(Step(target=step["target"], passed=passed, failure_class=failure))
    return steps


def _distinct(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _target_order(target: str) -> tuple[int, float, str]:
    try:
        return (0, float(target), target)
    except ValueError:
        return (1, 0.0, target)


class ReportFiles:
    """The report's files of each run, written when asked for into
    ``STATE_DIR/reports/report-RUN/``; one writer at a time (matplotlib, in a thread)."""

    def __init__(self, store: Store, state_dir: Path) -> None:
        self.store = store
        self.root = state_dir / "reports"
        self._lock = asyncio.Lock()

    def folder(self, run_id: int) -> Path:
        return self.root / f"report-{run_id}"

    async def path(self, run: Run, name: str) -> Path | None:
        """The file ``name`` of the run, written first unless a fresh one is there; None
        when the report has no such file (no plot without results)."""
        if name not in FILES:
            return None
        folder = self.folder(run.id)
        async with self._lock:
            if not fresh(folder / "report.md", run, time.time()):
                # The record is read here, on the loop that owns its connection; only the
                # writing (matplotlib's drawing) goes to a thread.
                results, attempts = self.store.results(run.id), self.store.attempts(run.id)
                events = self.store.events(run.id)
                await asyncio.to_thread(report_files, run, results, attempts, events, folder, None)
        path = folder / name
        return path if path.is_file() else None


def fresh(stamp: Path, run: Run, now: float) -> bool:
    """Written after a finished run finished, or lately for a running one."""
    try:
        written = stamp.stat().st_mtime
    except OSError:
        return False
    if run.finished_at is not None:
        return written >= run.finished_at
    return now - written < RUNNING_FRESH_S
