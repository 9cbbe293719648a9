"""The daemon's local HTTP API (FastAPI, served by uvicorn): JSON for status, desired
state, jobs, runs and incidents, server-sent events, and Prometheus metrics.

It listens on a Unix socket (its file permissions, owner only, are the authentication)
and optionally on TCP, where every request must carry ``Authorization: Bearer TOKEN``
(``auth.TokenGuard``, compared in constant time); ``/v1`` is the front door
(``frontdoor``), with keys of its own. The records are the daemon's pydantic models
(``daemon.models``) and the store's (``store.Run``, ``Result``), so the schema, the
validation and the documentation are one thing.
"""

from __future__ import annotations

import os
import time

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from cluster.config.models import parse_split
from cluster.daemon import frontdoor
from cluster.daemon.context import DaemonContext
from cluster.daemon.dashboard import routes as dashboard
from cluster.daemon.jobs import JobRunner
from cluster.daemon.models import DaemonStatus, Desired, Incident, Job, JobRequest
from cluster.daemon.supervisor import Supervisor
from cluster.daemon.usage import RequestRecord
from cluster.daemon.windows import Window
from cluster.errors import ClusterError
from cluster.store import Result, Run


class DesiredRequest(BaseModel):
    profile: str | None
    split: str | None = None


class RunDetail(BaseModel):
    run: Run
    results: list[Result]


def build_app(ctx: DaemonContext, supervisor: Supervisor, jobs: JobRunner) -> FastAPI:
    # Every route is async: it runs on the daemon's event loop, the thread that owns the
    # record's SQLite connection (a sync route would run in a thread pool).
    app = FastAPI(title="clusterctl daemon", version="1")
    started = time.time()

    def status() -> DaemonStatus:
        record = ctx.record
        running = jobs.current
        listed = [running if running and j.id == running.id else j for j in record.jobs(limit=20)]
        return DaemonStatus(
            pid=os.getpid(),
            started=started,
            state=supervisor.state,
            state_reason=supervisor.reason,
            desired=record.desired(),
            serving=supervisor.serving,
            incidents=record.incidents(limit=20),
            jobs=listed,
            next_restart_at=supervisor.next_try,
        )

    @app.get("/api/status")
    async def get_status() -> DaemonStatus:
        return status()

    @app.get("/api/desired")
    async def get_desired() -> Desired:
        return ctx.record.desired()

    @app.put("/api/desired")
    async def put_desired(body: DesiredRequest) -> Desired:
        split = None
        if body.profile is not None:
            try:
                profile = ctx.profile(body.profile)
                split = parse_split(body.split) if body.split else None
                if split is not None and len(split) != len(profile.tensor_split):
                    raise ValueError(
                        f"split {body.split} has {len(split)} entries, the profile "
                        f"{len(profile.tensor_split)}"
                    )
            except (ClusterError, ValueError) as exc:
                raise HTTPException(400, str(exc)) from None
        desired = ctx.record.set_desired(Desired(profile=body.profile, split=split))
        ctx.events.publish("desired", **desired.model_dump(mode="json"))
        supervisor.wake()
        return desired

    @app.get("/api/jobs")
    async def get_jobs(limit: int = 50) -> list[Job]:
        return ctx.record.jobs(limit=limit)

    @app.post("/api/jobs", status_code=201)
    async def post_job(request: JobRequest) -> Job:
        try:
            if request.window is not None:
                Window.parse(request.window)
            _check_target(ctx, request)
        except (ClusterError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from None
        job = ctx.record.add_job(request)
        ctx.events.publish("job", **job.model_dump(mode="json"))
        jobs.wake()
        return job

    @app.post("/api/jobs/{job_id}/cancel")
    async def cancel_job(job_id: int) -> Job:
        try:
            return jobs.cancel(job_id)
        except ClusterError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.get("/api/runs")
    async def get_runs(limit: int = 50) -> list[Run]:
        return ctx.store.runs(limit=limit)

    @app.get("/api/runs/{run_id}")
    async def get_run(run_id: int) -> RunDetail:
        run = ctx.store.run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        return RunDetail(run=run, results=ctx.store.results(run_id))

    @app.get("/api/incidents")
    async def get_incidents(limit: int = 50) -> list[Incident]:
        return ctx.record.incidents(limit=limit)

    @app.get("/api/events")
    async def events() -> StreamingResponse:
        return StreamingResponse(ctx.events.stream(), media_type="text/event-stream")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(ctx.metrics.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/api/requests")
    async def requests(limit: int = 200) -> list[RequestRecord]:
        """What the front door saw of the latest requests (tokens, TTFT, tok/s)."""
        return ctx.usage.recent(limit)

    frontdoor.mount(app, ctx, supervisor)
    dashboard.mount(app, ctx, supervisor, jobs)
    return app


def _check_target(ctx: DaemonContext, request: JobRequest) -> None:
    """The job's profile or playbook exists and its options are valid, before it queues."""
    from cluster.config.loader import validate
    from cluster.daemon.models import JobKind
    from cluster.measure.bench import BenchRequest
    from cluster.measure.ceiling import CeilingRequest
    from cluster.measure.playbook import load_screen
    from cluster.sweep.playbook import load_sweep

    if request.kind is JobKind.BENCH:
        ctx.profile(request.target)
        validate(BenchRequest, request.options, "options")
    elif request.kind is JobKind.CEILING:
        ctx.profile(request.target)
        validate(CeilingRequest, request.options, "options")
    elif request.kind is JobKind.SCREEN:
        load_screen(ctx.playbooks_dir, request.target)
    else:
        ctx.profile(load_sweep(ctx.playbooks_dir, request.target).profile)
