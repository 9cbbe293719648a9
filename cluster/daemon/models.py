"""The daemon's records, as the API returns them and the record keeps them: typed.

Desired state (what to serve), jobs (queued measurements on the served cluster) and
incidents (what went wrong while serving, and how long it took to recover) are pydantic
models with enums for every status, so the store, the API, the CLI and the dashboard read
one shape and never the same status spelled two ways.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Desired(Record):
    """What the daemon keeps serving; ``profile`` None means serve nothing."""

    profile: str | None = None
    split: list[float] | None = None
    since: float = Field(default_factory=time.time)


class ServingState(StrEnum):
    IDLE = "idle"  # nothing desired
    STARTING = "starting"
    SERVING = "serving"
    RECOVERING = "recovering"  # an incident: restarting the group, or backing off
    DEGRADED = "degraded"  # the health gate fails (link down, host missing): waiting
    JOB = "job"  # a job has the cluster; serving resumes after it
    STOPPING = "stopping"


class JobKind(StrEnum):
    BENCH = "bench"
    SCREEN = "screen"
    CEILING = "ceiling"
    SWEEP = "sweep"


class JobStatus(StrEnum):
    QUEUED = "queued"
    WAITING = "waiting"  # for its time or its window (again: a sweep stopped by the window)
    DRAINING = "draining"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


class JobRequest(Record):
    """What ``clusterctl submit`` sends: the same playbooks and options as the one-shot
    commands, and when it may run."""

    kind: JobKind
    target: str  # a profile (bench, ceiling) or a playbook name (screen, sweep)
    options: dict[str, Any] = {}
    at: float | None = None  # not before this time
    window: str | None = None  # "01:00-07:00", local time, every day
    then_apply: bool = False  # a sweep's best split written into its profile afterwards


class Progress(Record):
    done: int = 0
    total: int | None = None
    what: str = ""
    best: str | None = None
    eta_s: float | None = None
    updated: float = 0.0


class Job(Record):
    id: int
    request: JobRequest
    status: JobStatus
    created: float
    started: float | None = None
    finished: float | None = None
    run_id: int | None = None
    progress: Progress = Progress()
    message: str = ""
    applied: str | None = None  # the diff of the profile, for --then apply

    @property
    def describe(self) -> str:
        return f"{self.request.kind.value} {self.request.target}"


class IncidentClass(StrEnum):
    LLAMA_SERVER_EXITED = "llama_server_exited"
    WORKER_DIED = "worker_died"
    WORKER_STOPPED = "worker_stopped"
    HANG = "hang"
    UNHEALTHY = "unhealthy"
    LINK_DOWN = "link_down"
    HOST_UNREACHABLE = "host_unreachable"
    LAUNCH_FAILED = "launch_failed"


class Incident(Record):
    id: int = 0
    cls: IncidentClass
    evidence: str
    cause: str | None = None  # the failure class of a crash (transport_drop, signal...)
    log_tails: dict[str, str] = {}
    started: float
    recovered: float | None = None
    restarts: int = 0

    @property
    def time_to_recover_s(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.started


class Serving(Record):
    profile: str | None = None
    split: str | None = None
    endpoint: str | None = None
    since: float | None = None
    serving_key: str | None = None
    pids: dict[str, int] = {}


class DaemonStatus(Record):
    pid: int
    started: float
    state: ServingState
    state_reason: str = ""
    desired: Desired
    serving: Serving
    incidents: list[Incident]
    jobs: list[Job]
    next_restart_at: float | None = None
