"""Queued jobs on the cluster the daemon serves: bench, screen, ceiling, sweep.

Jobs run one at a time, in the order they were submitted, each once its time (``--at``)
has come and inside its window (``--window``). Before a job takes the cluster the
supervisor drains it (requests in flight finish, bounded) and stops supervising; after
the job it restores the desired serving state. A job runs the same code as the one-shot
command with the same playbooks and options, in its own run of the record:

- a sweep in a window gets the window's end as its ``until``: it starts no point that
  would not finish before the window closes, stops there and waits for the next window,
  then resumes its run where it stopped;
- ``--then apply`` writes a sweep's best split into its profile (the diff is kept in the
  job), unless no split is better than the noise;
- a daemon killed mid-job resumes the job's run when it starts again (every recorded
  point or case is kept and none is measured twice; the one in flight is measured again);
  a SIGTERM pauses the running job the same way, to be resumed by the next daemon;
- ``cancel`` removes a queued job, or stops a running one (its run is interrupted).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from cluster.config.loader import profile_path, validate
from cluster.config.models import parse_split
from cluster.daemon.context import DaemonContext, log
from cluster.daemon.models import Job, JobKind, JobStatus
from cluster.daemon.supervisor import Supervisor
from cluster.daemon.windows import eligible, window_end
from cluster.errors import ClusterError, ConfigError
from cluster.measure.bench import BenchRequest, run_bench
from cluster.measure.ceiling import CeilingRequest, run_ceiling
from cluster.measure.playbook import load_screen
from cluster.measure.records import median_of
from cluster.measure.screen import Screen
from cluster.records import RunKind
from cluster.report import apply as apply_mod
from cluster.report.points import judgement, points
from cluster.sweep.playbook import load_sweep
from cluster.sweep.runner import Sweep

IDLE_LOOK_S = 5.0


class JobProgress:
    """The measurement jobs' progress protocol (``measure.progress``), into the job."""

    def __init__(self, runner: JobRunner, job: Job, kind: RunKind, runs_before: int) -> None:
        self.runner = runner
        self.job = job
        self.kind = kind
        self.runs_before = runs_before
        self.started = time.monotonic()
        self.start_done = 0

    def _update(self, **changes: Any) -> None:
        progress = self.job.progress.model_copy(update={**changes, "updated": time.time()})
        done, total = progress.done, progress.total
        if total and done > self.start_done:
            rate = (time.monotonic() - self.started) / (done - self.start_done)
            progress = progress.model_copy(update={"eta_s": rate * (total - done)})
        self.job = self.job.model_copy(update={"progress": progress})
        self.runner.progressed(self.job)

    def begin(self, total: int | None, what: str, done: int = 0) -> None:
        if self.job.run_id is None:
            newest = self.runner.ctx.store.last_run_id(self.kind)
            if newest is not None and newest > self.runs_before:
                self.job = self.job.model_copy(update={"run_id": newest})
                self.runner.ctx.record.save_job(self.job)
        self.started, self.start_done = time.monotonic(), done
        self._update(total=total, done=done, what=what)

    def advance(self, what: str | None = None) -> None:
        self._update(done=self.job.progress.done + 1, what=what or self.job.progress.what)

    def describe(self, what: str) -> None:
        self._update(what=what)

    def say(self, message: str) -> None:
        log.info("job", job=self.job.id, message=message)
        if message.startswith("best"):
            self._update(best=message)


class JobRunner:
    def __init__(self, ctx: DaemonContext, supervisor: Supervisor) -> None:
        self.ctx = ctx
        self.supervisor = supervisor
        self.current: Job | None = None
        self._task: asyncio.Task[Job] | None = None
        self._wake = asyncio.Event()
        self._cancelled: set[int] = set()

    def wake(self) -> None:
        self._wake.set()

    def progressed(self, job: Job) -> None:
        self.current = job
        progress = job.progress
        if progress.total:
            self.ctx.metrics.job_progress.set(progress.done / progress.total)
        self.ctx.events.publish("progress", job=job.id, **progress.model_dump(mode="json"))

    def _save(self, job: Job, **changes: Any) -> Job:
        job = self.ctx.record.save_job(job.model_copy(update=changes))
        self.ctx.events.publish("job", **job.model_dump(mode="json"))
        queued = self.ctx.record.jobs(unfinished=True)
        self.ctx.metrics.queue.set(len([j for j in queued if j.status is not JobStatus.RUNNING]))
        return job

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        self.recover()
        while True:
            job, look_at = self.next_job(time.time())
            if job is not None:
                await self.execute(job)
                continue
            wait = IDLE_LOOK_S if look_at is None else max(0.0, min(look_at - time.time(), 60))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()

    def recover(self) -> None:
        """Jobs a killed daemon left running: queued again, to resume their runs."""
        for job in self.ctx.record.jobs(unfinished=True):
            if job.status in (JobStatus.RUNNING, JobStatus.DRAINING):
                log.info("resuming job", job=job.id, run=job.run_id)
                self._save(job, status=JobStatus.QUEUED, message="resumed after a restart")

    def next_job(self, now: float) -> tuple[Job | None, float | None]:
        soonest: float | None = None
        for job in sorted(self.ctx.record.jobs(unfinished=True), key=lambda j: j.id):
            ready, when = eligible(job.request.at, job.request.window, now)
            if ready:
                return job, None
            if when is not None:
                soonest = when if soonest is None else min(soonest, when)
        return None, soonest

    def cancel(self, job_id: int) -> Job:
        job = self.ctx.record.job(job_id)
        if job is None:
            raise ConfigError(f"no job {job_id}", key="JOB")
        if job.status.finished:
            return job
        if self.current is not None and self.current.id == job_id and self._task is not None:
            self._cancelled.add(job_id)
            self._task.cancel()
            return job
        return self._save(job, status=JobStatus.CANCELLED, finished=time.time())

    async def pause(self) -> None:
        """SIGTERM: stop the running job (its run is resumed by the next daemon)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # --- one job ----------------------------------------------------------------------------

    async def execute(self, job: Job) -> None:
        job = self._save(job, status=JobStatus.DRAINING)
        self.current = job
        try:
            async with self.supervisor.lend(f"job {job.id}: {job.describe}"):
                job = self._save(job, status=JobStatus.RUNNING, started=job.started or time.time())
                self.current = job
                self._task = asyncio.ensure_future(self._run(job))
                try:
                    job = await self._task
                except asyncio.CancelledError:
                    latest = self.current or job
                    if job.id in self._cancelled:
                        self._save(latest, status=JobStatus.CANCELLED, finished=time.time())
                        return
                    self._save(latest, status=JobStatus.QUEUED, message="paused: daemon stopped")
                    raise
                except ClusterError as exc:
                    job = self._save(
                        self.current or job,
                        status=JobStatus.FAILED,
                        finished=time.time(),
                        message=str(exc),
                    )
                    return
                self._save(job, finished=time.time() if job.status.finished else None)
        finally:
            self._task = None
            self.current = None
            self.ctx.metrics.job_progress.set(0)

    async def _run(self, job: Job) -> Job:
        kind = RunKind(job.request.kind.value)
        runs_before = self.ctx.store.last_run_id(kind) or 0
        progress = JobProgress(self, job, kind, runs_before)
        resume = job.run_id
        ctx, request = self.ctx, job.request
        common: dict[str, Any] = {"environ": dict(ctx.environ), "health_gate": True}

        def done(run_id: int) -> Job:
            return progress.job.model_copy(update={"status": JobStatus.DONE, "run_id": run_id})

        if request.kind is JobKind.BENCH:
            profile = ctx.profile(request.target)
            bench = validate(BenchRequest, request.options, f"job {job.id}")
            report = await run_bench(
                ctx.inventory, profile, ctx.pool, ctx.store, bench, progress, **common
            )
            self._record_rates(profile.name, report.run_id)
            return progress.job.model_copy(
                update={"status": JobStatus.DONE, "run_id": report.run_id}
            )
        if request.kind is JobKind.CEILING:
            profile = ctx.profile(request.target)
            ceiling = validate(CeilingRequest, request.options, f"job {job.id}")
            found = await run_ceiling(
                ctx.inventory,
                profile,
                ctx.pool,
                ctx.store,
                ceiling,
                progress,
                resume=resume,
                **common,
            )
            return progress.job.model_copy(
                update={"status": JobStatus.DONE, "run_id": found.run_id}
            )
        if request.kind is JobKind.SCREEN:
            book, path = load_screen(ctx.playbooks_dir, request.target)
            profiles = {c.profile: ctx.profile(c.profile) for c in book.configs}
            screened = await Screen(
                ctx.inventory, book, path, profiles, ctx.pool, ctx.store, progress, **common
            ).run(resume=resume)
            return progress.job.model_copy(
                update={"status": JobStatus.DONE, "run_id": screened.run_id}
            )
        return await self._sweep(job, progress, common)

    async def _sweep(self, job: Job, progress: JobProgress, common: dict[str, Any]) -> Job:
        ctx, request = self.ctx, job.request
        book = load_sweep(ctx.playbooks_dir, request.target)
        profile = ctx.profile(book.profile)
        until = window_end(request.window, time.time())
        report = await Sweep(
            ctx.inventory, book, profile, ctx.pool, ctx.store, progress, until=until, **common
        ).run(resume=job.run_id)
        done = progress.job.model_copy(update={"run_id": report.run_id})
        if report.stopped == "until":
            return done.model_copy(
                update={
                    "status": JobStatus.WAITING,
                    "message": f"the window closed after {report.covered} point(s): "
                    "resuming in the next window",
                }
            )
        applied = self._apply(report.run_id, book.profile) if request.then_apply else None
        return done.model_copy(update={"status": JobStatus.DONE, "applied": applied})

    def _apply(self, run_id: int, profile_name: str) -> str:
        run = self.ctx.store.run(run_id)
        best = (run.summary if run else {}).get("best")
        if run is None or not best:
            return "not applied: the sweep measured no best split"
        judged = judgement(run, points(run, self.ctx.store.results(run_id)))
        if judged.ties:
            return f"not applied: no split is better than the noise (best {best['split']})"
        path = profile_path(self.ctx.playbooks_dir, profile_name)
        text, diff = apply_mod.apply_split(path, parse_split(best["split"]))
        if not diff:
            return f"{path} already has split {best['split']}"
        apply_mod.write_applied(path, text)
        self.supervisor.wake()
        return diff

    def _record_rates(self, profile: str, run_id: int) -> None:
        for result in self.ctx.store.results(run_id):
            pp, tg = median_of(result.metrics, "pp_tps"), median_of(result.metrics, "tg_tps")
            if pp is not None:
                self.ctx.metrics.pp_tps.labels(profile).set(pp)
            if tg is not None:
                self.ctx.metrics.tg_tps.labels(profile).set(tg)
