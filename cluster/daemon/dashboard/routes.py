"""The dashboard's routes, added to the daemon's app by ``mount``.

- ``GET /``: the page (``static/index.html``); ``GET /ui/...``: its script and style, all
  shipped in the package (no CDN, no build step), under a Content-Security-Policy that
  allows nothing but this origin;
- ``GET /api/cluster``: hosts, links, builds, components and health (``snapshot``),
  as the background watch last read them: a page load runs nothing on the hosts;
- ``GET /api/queue``: the jobs, the running one with its live progress;
- ``GET /api/runs/{id}/view``: a run as ``report`` renders it (``results``);
- ``GET /api/runs/{id}/files/{name}``: report.md, report.png, results.json, results.csv,
  written on demand into ``STATE_DIR/reports/report-ID/``.

The page builds only relative URLs and never a token: over TCP the browser authenticates
the way the daemon's ``TokenGuard`` accepts (its login cookie).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from cluster.daemon.context import DaemonContext
from cluster.daemon.dashboard.results import FILES, ReportFiles, RunView, run_view
from cluster.daemon.dashboard.snapshot import ClusterView, ClusterWatch
from cluster.daemon.jobs import JobRunner
from cluster.daemon.models import Job
from cluster.daemon.supervisor import Supervisor

# Nothing but this origin: no inline script, no CDN, no frames; images may be data: URLs
# (the page's icon).
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def static_dir() -> Path:
    return Path(str(resources.files("cluster.daemon.dashboard") / "static"))


class Assets(StaticFiles):
    """The page's script and style, revalidated on every load (their ETag makes that a
    304): after an upgrade of the daemon the browser never mixes an old script with a new
    page."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mount(app: FastAPI, ctx: DaemonContext, supervisor: Supervisor, jobs: JobRunner) -> None:
    """Add the page, its assets and its JSON routes to the daemon's app; the background
    watch is ``app.state.dashboard`` (the daemon runs it: ``watch_of``)."""
    watch = ClusterWatch(ctx, supervisor)
    reports = ReportFiles(ctx.store, ctx.state_dir)
    app.state.dashboard = watch
    page = (static_dir() / "index.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    app.mount("/ui", Assets(directory=static_dir()), name="ui")

    @app.get("/api/cluster")
    async def cluster() -> ClusterView:
        """Hosts, links, builds, components and health as last read in the background."""
        return watch.view

    @app.get("/api/queue")
    async def queue(limit: int = 50) -> list[Job]:
        """The jobs, newest first; the running one with its progress as it is now."""
        running = jobs.current
        listed = ctx.record.jobs(limit=limit)
        return [running if running and job.id == running.id else job for job in listed]

    @app.get("/api/runs/{run_id}/view")
    async def view(run_id: int) -> RunView:
        """The run as ``clusterctl report`` renders it, with its matrix or ladder."""
        run = ctx.store.run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        store = ctx.store
        return run_view(run, store.results(run_id), store.attempts(run_id))

    @app.get("/api/runs/{run_id}/files/{name}", response_class=FileResponse)
    async def report_file(run_id: int, name: str) -> FileResponse:
        """One of the report's files, written first when missing or stale."""
        if name not in FILES:
            raise HTTPException(404, f"no report file {name!r} (files: {', '.join(FILES)})")
        run = ctx.store.run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        path = await reports.path(run, name)
        if path is None:
            raise HTTPException(404, f"run {run_id} has no {name} (nothing to plot)")
        return FileResponse(path, media_type=FILES[name], headers={"Cache-Control": "no-cache"})


def watch_of(app: FastAPI) -> ClusterWatch:
    """The background watch ``mount`` made for this app."""
    watch = getattr(app.state, "dashboard", None)
    if not isinstance(watch, ClusterWatch):
        raise TypeError("the dashboard is not mounted on this app")
    return watch
