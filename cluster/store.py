"""The record: every launch, attempt and (later) measurement, in SQLite.

One file, ``clusterctl.db`` in the state directory, in WAL mode, written as things happen
and committed at once, so a controller killed at any moment loses nothing it recorded.

- ``runs``: one job (a launch now; a bench, screen or sweep later) with its resolved config;
- ``attempts``: one load of the cluster inside a run, with its failure class and log tails,
  and what each worker's link carried during it (``links``: ``linkstats.LinkLoad``);
- ``results``: one measured point or case inside a run, keyed so it is written once: what
  was asked (``spec``), what was measured (``metrics``), and for a failure its class,
  evidence line and the log tails of every component;
- ``events``: a time line of what happened, for reports and post-mortems;
- ``throughput``: each link throughput ``health`` measured from the head to a worker, so a
  later ``health`` can show the last one with its age instead of measuring again.

The schema version lives in ``PRAGMA user_version``; ``migrate`` brings an older file up,
one step per version (``cluster.schema``), each in its own transaction.

A run records the controller's pid and host, so a run left ``running`` by a controller
that was killed can be told from one still going (``Run.stale``).

The record is shared by every controller on this machine. A writer waits up to
``BUSY_TIMEOUT_S`` for another's write lock; opening a file already at the current schema
takes no write lock, so reading the record never waits for a writer. What sqlite3 and the
file system raise (a state directory that cannot be created, a database locked past the
timeout, a file that is not a database) becomes a ``StoreError`` naming the directory or
the file; a result written twice stays ``sqlite3.IntegrityError``, a bug of the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from cluster.errors import StoreError
from cluster.orchestration.linkstats import LinkLoad
from cluster.records import (
    Attempt,
    AttemptOutcome,
    Result,
    ResultStatus,
    Run,
    RunKind,
    RunStatus,
    Throughput,
)
from cluster.schema import MIGRATIONS, SCHEMA_VERSION
from cluster.secrets import redact_record

# The record types are importable from here too, as they always were.
__all__ = ["Attempt", "Result", "Run", "Store", "StoreError", "Throughput"]

R = TypeVar("R", bound=BaseModel)

# A write transaction lasts milliseconds; waiting this long for one means something else
# holds the database (a sqlite3 shell in a transaction, a hung process).
BUSY_TIMEOUT_S = 30.0


class Store:
    """The SQLite record in a state directory."""

    def __init__(self, state_dir: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = state_dir / "clusterctl.db"
        self.busy_timeout_s = busy_timeout_s
        try:
            # Owner only: log tails and configs recorded here can hold paths and environment.
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(
                str(state_dir), f"cannot create the state directory: {_reason(exc)}"
            ) from None
        with self._mapped():
            fresh = not self.path.exists()
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=busy_timeout_s)
            if fresh:
                self.path.touch(mode=0o600)
                self.path.chmod(0o600)
        try:
            with self._mapped():
                self._db.row_factory = sqlite3.Row
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self.migrate()
        except BaseException:
            self._db.close()
            raise

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        """sqlite3's errors about the file (locked, read-only, full, not a database, cannot
        be opened) as a StoreError naming it; a caller's mistakes (a result written twice,
        a bad statement) pass as they are."""
        try:
            yield
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.DatabaseError as exc:
            raise StoreError(str(self.path), self._explain(exc)) from None

    def _explain(self, exc: sqlite3.DatabaseError) -> str:
        message = str(exc)
        if "locked" in message or "busy" in message:
            return (
                f"{message}: another process holds it locked (waited "
                f"{self.busy_timeout_s:g} s); try again when that one is done"
            )
        if "unable to open" in message or "readonly" in message:
            where = self.path.parent
            return f"{message}: is the state directory {where} writable by this user?"
        return message

    def _record(self, model: type[R], row: sqlite3.Row) -> R:
        """A row as its record; a row the code cannot read (a status word it does not know,
        written by another version) is a StoreError naming the row and the field."""
        try:
            return model.model_validate(_decoded(row))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"])
            raise StoreError(
                str(self.path),
                f"{model.__name__.lower()} {row['id']}: {field}: {error['msg']} "
                f"(got {error.get('input')!r}); was it written by another clusterctl version?",
            ) from None

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._mapped():
            return self._db.execute(sql, params).fetchall()

    def migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION. A file already there is left alone without a
        write lock. Otherwise the version is read again inside the write lock, so two
        controllers opening a new file at once migrate it once; each step is one
        transaction, so a crash mid-migration leaves the previous version."""
        if self._read("PRAGMA user_version")[0][0] >= SCHEMA_VERSION:
            return
        while True:
            with self._tx() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version >= SCHEMA_VERSION:
                    return
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {version + 1}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._mapped():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Rows of a read, for the record's other tables (``cluster.daemon.records``)."""
        return self._read(sql, params)

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT), with errors mapped."""
        return self._tx()

    # runs
    def start_run(self, kind: RunKind, profile: str | None, config: dict[str, Any]) -> int:
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO runs (kind, profile, status, started_at, config_json, "
                "controller_pid, controller_host) VALUES (?, ?, 'running', ?, ?, ?, ?)",
                (
                    kind,
                    profile,
                    time.time(),
                    json.dumps(redact_record(config), default=str),
                    os.getpid(),
                    socket.gethostname(),
                ),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    @contextmanager
    def job(
        self,
        kind: RunKind,
        profile: str | None,
        config: dict[str, Any],
        resume: int | None = None,
    ) -> Iterator[int]:
        """A run for a job: new, or ``resume`` marked running again. A job that ends by
        an exception without finishing its run leaves it ``interrupted`` (Ctrl-C) or
        ``failed`` (an error), with the error's line in the summary."""
        if resume is None:
            run_id = self.start_run(kind, profile, config)
        else:
            self.resume_run(resume)
            run_id = resume
        try:
            yield run_id
        except BaseException as exc:
            run = self.run(run_id)
            if run is not None and run.status is RunStatus.RUNNING:
                interrupted = isinstance(exc, KeyboardInterrupt | asyncio.CancelledError)
                self.finish_run(
                    run_id,
                    RunStatus.INTERRUPTED if interrupted else RunStatus.FAILED,
                    {**run.summary, "error": str(exc) or type(exc).__name__},
                )
            raise

    def resume_run(self, run_id: int) -> None:
        """Mark a run running again, owned by this controller."""
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET status = 'running', finished_at = NULL, controller_pid = ?, "
                "controller_host = ? WHERE id = ?",
                (os.getpid(), socket.gethostname(), run_id),
            )

    def finish_run(self, run_id: int, status: RunStatus, summary: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET status = ?, finished_at = ?, summary_json = ? WHERE id = ?",
                (status, time.time(), json.dumps(summary, default=str), run_id),
            )

    def update_summary(self, run_id: int, summary: dict[str, Any]) -> None:
        """Replace a running job's summary (what it has found so far)."""
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET summary_json = ? WHERE id = ?",
                (json.dumps(summary, default=str), run_id),
            )

    def run(self, run_id: int) -> Run | None:
        rows = self._read("SELECT * FROM runs WHERE id = ?", (run_id,))
        return self._record(Run, rows[0]) if rows else None

    def last_run_id(self, kind: RunKind) -> int | None:
        """The newest run of a kind, for pointing a user at it."""
        rows = self._read("SELECT id FROM runs WHERE kind = ? ORDER BY id DESC LIMIT 1", (kind,))
        return int(rows[0][0]) if rows else None

    def runs(self, kind: RunKind | None = None, limit: int = 50) -> list[Run]:
        if kind is None:
            rows = self._read("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._read(
                "SELECT * FROM runs WHERE kind = ? ORDER BY id DESC LIMIT ?", (kind, limit)
            )
        return [self._record(Run, row) for row in rows]

    # attempts
    def start_attempt(self, run_id: int, number: int, split: str, builds: dict[str, Any]) -> int:
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO attempts (run_id, number, started_at, outcome, split, builds_json) "
                "VALUES (?, ?, ?, 'loading', ?, ?)",
                (run_id, number, time.time(), split, json.dumps(builds)),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def finish_attempt(
        self,
        attempt_id: int,
        outcome: AttemptOutcome,
        *,
        load_seconds: float | None = None,
        failure_class: str | None = None,
        evidence: str | None = None,
        log_tails: dict[str, str] | None = None,
        builds: dict[str, Any] | None = None,
        links: Sequence[LinkLoad] = (),
    ) -> None:
        """Close an attempt; ``builds`` replaces what start_attempt knew when given."""
        with self._tx() as db:
            db.execute(
                "UPDATE attempts SET outcome = ?, finished_at = ?, load_seconds = ?, "
                "failure_class = ?, evidence = ?, log_tails_json = ?, "
                "builds_json = COALESCE(?, builds_json), links_json = ? WHERE id = ?",
                (
                    outcome,
                    time.time(),
                    load_seconds,
                    failure_class,
                    evidence,
                    json.dumps(log_tails or {}),
                    json.dumps(builds) if builds is not None else None,
                    json.dumps([link.model_dump() for link in links]),
                    attempt_id,
                ),
            )

    def next_attempt_number(self, run_id: int) -> int:
        rows = self._read(
            "SELECT COALESCE(MAX(number), 0) FROM attempts WHERE run_id = ?", (run_id,)
        )
        return int(rows[0][0]) + 1

    def attempts(self, run_id: int) -> list[Attempt]:
        rows = self._read("SELECT * FROM attempts WHERE run_id = ? ORDER BY number", (run_id,))
        return [self._record(Attempt, row) for row in rows]

    # results
    def record_result(
        self,
        run_id: int,
        key: str,
        status: ResultStatus,
        *,
        spec: dict[str, Any],
        metrics: dict[str, Any] | None = None,
        failure_class: str | None = None,
        evidence: str | None = None,
        log_tails: dict[str, str] | None = None,
    ) -> None:
        """Write one result, once: a second result under the same key is an error."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO results (run_id, key, status, failure_class, evidence, spec_json, "
                "metrics_json, log_tails_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    key,
                    status,
                    failure_class,
                    evidence,
                    json.dumps(spec, default=str),
                    json.dumps(metrics or {}, default=str),
                    json.dumps(log_tails or {}),
                    time.time(),
                ),
            )

    def results(self, run_id: int) -> list[Result]:
        rows = self._read("SELECT * FROM results WHERE run_id = ? ORDER BY id", (run_id,))
        return [self._record(Result, row) for row in rows]

    def result(self, run_id: int, key: str) -> Result | None:
        rows = self._read("SELECT * FROM results WHERE run_id = ? AND key = ?", (run_id, key))
        return self._record(Result, rows[0]) if rows else None

    def result_keys(self, run_id: int) -> set[str]:
        rows = self._read("SELECT key FROM results WHERE run_id = ?", (run_id,))
        return {row[0] for row in rows}

    # events
    def event(self, run_id: int | None, kind: str, **data: Any) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO events (run_id, at, kind, data_json) VALUES (?, ?, ?, ?)",
                (run_id, time.time(), kind, json.dumps(redact_record(data), default=str)),
            )

    def events(self, run_id: int) -> list[tuple[float, str, dict[str, Any]]]:
        rows = self._read(
            "SELECT at, kind, data_json FROM events WHERE run_id = ? ORDER BY id", (run_id,)
        )
        return [(row["at"], row["kind"], json.loads(row["data_json"])) for row in rows]

    # link throughput
    def record_throughput(self, measured: Throughput) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO throughput (head, worker, bps, at) VALUES (?, ?, ?, ?)",
                (measured.head, measured.worker, measured.bps, measured.at),
            )

    def last_throughputs(self, head: str) -> dict[str, Throughput]:
        """The newest measurement from ``head`` to each worker it was measured to."""
        # With one MAX(), SQLite takes the bare columns from the row holding the maximum.
        rows = self._read(
            "SELECT head, worker, bps, MAX(at) AS at FROM throughput WHERE head = ? "
            "GROUP BY worker",
            (head,),
        )
        return {row["worker"]: Throughput.model_validate(dict(row)) for row in rows}


def _decoded(row: sqlite3.Row) -> dict[str, Any]:
    """A row as a record's fields: each ``NAME_json`` column decoded into ``NAME``."""
    return {
        key.removesuffix("_json"): json.loads(row[key]) if key.endswith("_json") else row[key]
        for key in row.keys()  # noqa: SIM118 - a Row is not a mapping
    }


def _reason(exc: OSError) -> str:
    if isinstance(exc, FileExistsError):
        return "it exists and is not a directory"
    if isinstance(exc, NotADirectoryError):
        return "a part of its path is a file, not a directory"
    return exc.strerror or str(exc)
