"""What the store records, as types: runs, attempts, results, link throughputs, and the
words of their kinds and statuses.

The words are ``StrEnum``s: stored and shown as their plain words (the database,
``--json`` and the reports keep the same text) and compared as values; a row with a word
this version does not know is refused when it is read (``Store`` names the row) instead of
being carried around as a typo.
"""

from __future__ import annotations

import os
import socket
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cluster.orchestration.linkstats import LinkLoad


class RunKind(StrEnum):
    """What a run is: a launch (``up``) or one of the measuring jobs."""

    LAUNCH = "launch"
    BENCH = "bench"
    SCREEN = "screen"
    CEILING = "ceiling"
    SWEEP = "sweep"


class RunStatus(StrEnum):
    """How a run stands. ``interrupted`` is also shown for a run left ``running`` by a
    controller on this machine that no longer exists (``Run.shown_status``)."""

    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class AttemptOutcome(StrEnum):
    """How one load of the cluster ended (``loading`` while it goes on)."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class ResultStatus(StrEnum):
    """One measured case or sweep point: passed, failed, or pruned (it could not fit, so
    it was never loaded)."""

    PASS = "pass"  # noqa: S105 - a result's status, not a password
    FAIL = "fail"
    PRUNED = "pruned"


class Run(BaseModel):
    id: int
    kind: RunKind
    profile: str | None
    status: RunStatus
    started_at: float
    finished_at: float | None
    config: dict[str, Any]
    summary: dict[str, Any]
    controller_pid: int | None = None
    controller_host: str | None = None

    @property
    def stale(self) -> bool:
        """Left ``running`` by a controller on this machine that no longer exists."""
        if self.status is not RunStatus.RUNNING or self.controller_pid is None:
            return False
        if self.controller_host != socket.gethostname():
            return False  # another machine's controller: we cannot tell
        return not _pid_alive(self.controller_pid)

    @property
    def shown_status(self) -> RunStatus:
        return RunStatus.INTERRUPTED if self.stale else self.status


class Result(BaseModel):
    id: int
    run_id: int
    key: str
    status: ResultStatus
    failure_class: str | None
    evidence: str | None
    spec: dict[str, Any]
    metrics: dict[str, Any]
    log_tails: dict[str, str]
    created_at: float


class Attempt(BaseModel):
    id: int
    run_id: int
    number: int
    started_at: float
    finished_at: float | None
    outcome: AttemptOutcome
    failure_class: str | None
    evidence: str | None
    load_seconds: float | None
    split: str | None
    builds: dict[str, Any]
    log_tails: dict[str, str]
    links: list[LinkLoad] = []  # each worker's link during the load (schema v4)


class Throughput(BaseModel):
    """One iperf3 measurement of the link from ``head`` to ``worker``, at ``at`` (epoch s)."""

    head: str
    worker: str
    bps: float
    at: float


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped) is gone for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
