"""The progress bar of long jobs: a resumed job's bar counts what was done before it."""

from __future__ import annotations

import io

from rich.console import Console

from cluster.cli.progress import BarProgress


def drawn(total: int | None, done: int, steps: int) -> str:
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    progress = BarProgress(console)
    with progress.shown():
        progress.begin(total, "sweep night", done=done)
        for index in range(steps):
            progress.advance(f"split {index}")
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def test_a_resumed_bar_ends_at_the_total() -> None:
    """Three points recorded before the resume, one measured now: 4/4, not 1/4."""
    output = drawn(4, done=3, steps=1)
    assert "4/4" in output and "1/4" not in output


def test_a_fresh_bar_counts_from_zero() -> None:
    assert "2/4" in drawn(4, done=0, steps=2)


def test_an_open_ended_bar_counts_the_recorded_steps_too() -> None:
    assert "5/?" in drawn(None, done=3, steps=2)
