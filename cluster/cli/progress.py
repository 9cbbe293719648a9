"""The progress bar long jobs (bench, screen, ceiling, sweep, the demo) draw on stderr."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cluster.cli.app import err


class BarProgress:
    """The jobs' Progress as a rich progress bar on stderr (with an ETA when the total is
    known); ``say`` lines print above the bar."""

    def __init__(self, console: Console = err) -> None:
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def begin(self, total: int | None, what: str, done: int = 0) -> None:
        """A new bar of ``total`` steps (None: unknown) with ``done`` of them finished before
        it started; the ETA comes from the steps advanced from here on."""
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(what, total=total, completed=done)

    def advance(self, what: str | None = None) -> None:
        if self._task is not None:
            self._bar.advance(self._task)
            if what:
                self._bar.update(self._task, description=what)

    def describe(self, what: str) -> None:
        if self._task is not None:
            self._bar.update(self._task, description=what)

    def say(self, message: str) -> None:
        self._bar.console.print(message, markup=False, highlight=False)

    @contextmanager
    def shown(self) -> Iterator[BarProgress]:
        with self._bar:
            yield self
