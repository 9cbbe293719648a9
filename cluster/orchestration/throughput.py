"""When ``health`` measures the link throughput, and what it shows when it does not.

The iperf3 run over each head -> worker link takes seconds per worker, most of a full
``health``; yet a link's speed changes when a cable, a port or a setting does, not between
two checks. So ``health`` measures a path only when it is asked to (``--throughput``) or
when the path's last measurement is older than a maximum age (``--throughput-max-age``,
default ``DEFAULT_MAX_AGE_H``), or missing. Otherwise it shows the last measurement with
its age, and ``--quick`` never measures. Each measurement is kept in the record
(``Store.record_throughput``), per head -> worker path.

A ``Plan`` is that decision for one ``health``: pure, with the time passed in, so the
decision and the age shown are unit-tested without a clock or a host.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from cluster.store import Store, Throughput

DEFAULT_MAX_AGE_H = 24.0


class Mode(StrEnum):
    MEASURE = "measure"  # --throughput: every path, now
    WHEN_OLD = "when-old"  # the default: paths never measured or measured too long ago
    SKIP = "skip"  # --quick: none; the last measurement is shown


def _nothing(_: Throughput) -> None:
    return None


@dataclass(frozen=True)
class Plan:
    """Which paths one ``health`` measures, given the last measurement of each (``last``,
    by worker) and the time ``now``; ``record`` keeps what is measured."""

    mode: Mode
    max_age_s: float
    last: Mapping[str, Throughput]
    now: float
    record: Callable[[Throughput], None] = field(default=_nothing)

    def __post_init__(self) -> None:
        if not self.max_age_s >= 0:  # also refuses nan
            raise ValueError(f"the maximum age must be >= 0 hours, not {self.max_age_s / 3600:g}")

    def age_s(self, worker: str) -> float | None:
        """Seconds since the last measurement to ``worker``; None when there is none."""
        last = self.last.get(worker)
        return None if last is None else max(0.0, self.now - last.at)

    def due(self, worker: str) -> bool:
        if self.mode is Mode.MEASURE:
            return True
        if self.mode is Mode.SKIP:
            return False
        age = self.age_s(worker)
        return age is None or age > self.max_age_s or self.max_age_s == 0

    def not_measured(self, worker: str) -> str:
        """Why the path to ``worker`` was not measured now, and how to measure it."""
        if self.mode is Mode.SKIP:
            return "not measured now (--quick)"
        return (
            f"not measured now: younger than the maximum age of {hours(self.max_age_s)} "
            "(--throughput measures now)"
        )


def plan_from(store: Store, head: str, mode: Mode, max_age_h: float = DEFAULT_MAX_AGE_H) -> Plan:
    """The plan of a ``health`` now: the record's last measurements from ``head``, and the
    record keeping what is measured. ValueError for a negative or nan maximum age."""
    return Plan(
        mode, max_age_h * 3600, store.last_throughputs(head), time.time(), store.record_throughput
    )


def hours(seconds: float) -> str:
    return "no limit" if math.isinf(seconds) else f"{seconds / 3600:g} h"


def age_text(seconds: float) -> str:
    """How long ago, for people: ``40 s ago``, ``12 min ago``, ``3.5 h ago``, ``2.0 days ago``."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"
