"""The daemon's part of the record: desired state, jobs and incidents, in the same SQLite
file as the runs (schema v5), one JSON document of their model a row."""

from __future__ import annotations

import time

from cluster.daemon.models import Desired, Incident, Job, JobRequest, JobStatus
from cluster.store import Store


class DaemonRecord:
    def __init__(self, store: Store) -> None:
        self.store = store

    # desired state
    def desired(self) -> Desired:
        rows = self.store.query("SELECT data_json FROM daemon_desired WHERE id = 1")
        return Desired.model_validate_json(rows[0][0]) if rows else Desired(since=0.0)

    def set_desired(self, desired: Desired) -> Desired:
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO daemon_desired (id, data_json) VALUES (1, ?) "
                "ON CONFLICT(id) DO UPDATE SET data_json = excluded.data_json",
                (desired.model_dump_json(),),
            )
        return desired

    # jobs
    def add_job(self, request: JobRequest) -> Job:
        status = JobStatus.WAITING if request.at or request.window else JobStatus.QUEUED
        with self.store.transaction() as db:
            cursor = db.execute(
                "INSERT INTO daemon_jobs (status, data_json) VALUES (?, '{}')", (status.value,)
            )
            assert cursor.lastrowid is not None
            job = Job(id=cursor.lastrowid, request=request, status=status, created=time.time())
            db.execute(
                "UPDATE daemon_jobs SET data_json = ? WHERE id = ?",
                (job.model_dump_json(), job.id),
            )
        return job

    def save_job(self, job: Job) -> Job:
        with self.store.transaction() as db:
            db.execute(
                "UPDATE daemon_jobs SET status = ?, data_json = ? WHERE id = ?",
                (job.status.value, job.model_dump_json(), job.id),
            )
        return job

    def job(self, job_id: int) -> Job | None:
        rows = self.store.query("SELECT data_json FROM daemon_jobs WHERE id = ?", (job_id,))
        return Job.model_validate_json(rows[0][0]) if rows else None

    def jobs(self, *, unfinished: bool = False, limit: int = 50) -> list[Job]:
        """Newest first; ``unfinished``: the queue (queued, waiting, draining, running)."""
        finished = [s.value for s in JobStatus if s.finished]
        where = f"WHERE status NOT IN ({', '.join('?' * len(finished))})" if unfinished else ""
        rows = self.store.query(
            f"SELECT data_json FROM daemon_jobs {where} ORDER BY id DESC LIMIT ?",  # noqa: S608
            (*(finished if unfinished else ()), limit),
        )
        return [Job.model_validate_json(row[0]) for row in rows]

    # incidents
    def add_incident(self, incident: Incident) -> Incident:
        with self.store.transaction() as db:
            cursor = db.execute(
                "INSERT INTO daemon_incidents (started, data_json) VALUES (?, '{}')",
                (incident.started,),
            )
            assert cursor.lastrowid is not None
            saved = incident.model_copy(update={"id": cursor.lastrowid})
            db.execute(
                "UPDATE daemon_incidents SET data_json = ? WHERE id = ?",
                (saved.model_dump_json(), saved.id),
            )
        return saved

    def save_incident(self, incident: Incident) -> Incident:
        with self.store.transaction() as db:
            db.execute(
                "UPDATE daemon_incidents SET data_json = ? WHERE id = ?",
                (incident.model_dump_json(), incident.id),
            )
        return incident

    def incidents(self, limit: int = 50) -> list[Incident]:
        rows = self.store.query(
            "SELECT data_json FROM daemon_incidents ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [Incident.model_validate_json(row[0]) for row in rows]
