"""What the health table says: every check counted, and what the gate leaves out said."""

from __future__ import annotations

from rich.console import Console

from cluster.cli import render
from cluster.orchestration.health import Check, Level

CHECKS = [
    Check("evo", "ssh", Level.OK, "3 ms", "ssh connection and a command"),
    Check("evo", "memory", Level.OK, "60.0 GiB", "MemAvailable"),
    Check("bee", "ssh", Level.OK, "4 ms", "ssh connection and a command"),
    Check("bee", "strays", Level.WARN, "1", "not started by clusterctl: llama-server pid 7"),
    Check("bee", "link", Level.FAIL, "down", "interface usb0 is down"),
]


def rendered(checks: list[Check], **options: bool) -> str:
    console = Console(record=True, width=200)
    render.health(console, checks, **options)
    return console.export_text()


def test_the_full_table_shows_and_counts_every_check() -> None:
    text = rendered(CHECKS)
    assert "3 ms" in text and "60.0 GiB" in text
    assert text.rstrip().splitlines()[-1] == "3 ok, 1 warn, 1 fail"


def test_the_gate_table_shows_problems_and_says_how_many_ok_it_left_out() -> None:
    text = rendered(CHECKS, problems_only=True)
    assert "3 ms" not in text and "60.0 GiB" not in text
    assert "interface usb0 is down" in text and "llama-server pid 7" in text
    assert text.rstrip().splitlines()[-1] == "3 ok, 1 warn, 1 fail (3 ok not shown)"


def test_nothing_is_said_hidden_when_nothing_was_ok() -> None:
    problems = [check for check in CHECKS if check.level is not Level.OK]
    assert render.health_summary(problems, problems_only=True) == "0 ok, 1 warn, 1 fail"
