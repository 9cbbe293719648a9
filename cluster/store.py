"""The record: every launch, attempt and (later) measurement, in SQLite.

One file, ``clusterctl.db`` in the state directory, in WAL mode, written as things happen
and committed at once, so a controller killed at any moment loses nothing it recorded.

- ``runs``: one job (a launch now; a bench, screen or sweep later) with its resolved config;
- ``attempts``: one load of the cluster inside a run, with its failure class and log tails;
- ``results``: one measured point or case inside a run, keyed so it is written once;
- ``events``: a time line of what happened, for reports and post-mortems.

The schema version lives in ``PRAGMA user_version``; ``migrate`` brings an older file up.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    profile TEXT,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    config_json TEXT NOT NULL DEFAULT '{}',
    summary_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    number INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT NOT NULL,
    failure_class TEXT,
    evidence TEXT,
    load_seconds REAL,
    split TEXT,
    builds_json TEXT NOT NULL DEFAULT '{}',
    log_tails_json TEXT NOT NULL DEFAULT '{}',
    UNIQUE (run_id, number)
);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    status TEXT NOT NULL,
    failure_class TEXT,
    metrics_json TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    UNIQUE (run_id, key)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    run_id INTEGER REFERENCES runs(id),
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    data_json TEXT NOT NULL DEFAULT '{}'
);
"""


class Run(BaseModel):
    id: int
    kind: str
    profile: str | None
    status: str
    started_at: float
    finished_at: float | None
    config: dict[str, Any]
    summary: dict[str, Any]


class Attempt(BaseModel):
    id: int
    run_id: int
    number: int
    started_at: float
    finished_at: float | None
    outcome: str
    failure_class: str | None
    evidence: str | None
    load_seconds: float | None
    split: str | None
    builds: dict[str, Any]
    log_tails: dict[str, str]


class Store:
    """The SQLite record in a state directory."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "clusterctl.db"
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self.migrate()

    def migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            # One script, one transaction: a crash mid-migration leaves the old version.
            self._db.executescript(
                f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};COMMIT;"
            )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # runs
    def start_run(self, kind: str, profile: str | None, config: dict[str, Any]) -> int:
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO runs (kind, profile, status, started_at, config_json) "
                "VALUES (?, ?, 'running', ?, ?)",
                (kind, profile, time.time(), json.dumps(config, default=str)),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET status = ?, finished_at = ?, summary_json = ? WHERE id = ?",
                (status, time.time(), json.dumps(summary, default=str), run_id),
            )

    def run(self, run_id: int) -> Run | None:
        row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _run(row) if row else None

    def runs(self, kind: str | None = None, limit: int = 50) -> list[Run]:
        if kind is None:
            rows = self._db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._db.execute(
                "SELECT * FROM runs WHERE kind = ? ORDER BY id DESC LIMIT ?", (kind, limit)
            )
        return [_run(row) for row in rows]

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
        outcome: str,
        *,
        load_seconds: float | None = None,
        failure_class: str | None = None,
        evidence: str | None = None,
        log_tails: dict[str, str] | None = None,
        builds: dict[str, Any] | None = None,
    ) -> None:
        """Close an attempt; ``builds`` replaces what start_attempt knew when given."""
        with self._tx() as db:
            db.execute(
                "UPDATE attempts SET outcome = ?, finished_at = ?, load_seconds = ?, "
                "failure_class = ?, evidence = ?, log_tails_json = ?, "
                "builds_json = COALESCE(?, builds_json) WHERE id = ?",
                (
                    outcome,
                    time.time(),
                    load_seconds,
                    failure_class,
                    evidence,
                    json.dumps(log_tails or {}),
                    json.dumps(builds) if builds is not None else None,
                    attempt_id,
                ),
            )

    def attempts(self, run_id: int) -> list[Attempt]:
        rows = self._db.execute(
            "SELECT * FROM attempts WHERE run_id = ? ORDER BY number", (run_id,)
        )
        return [_attempt(row) for row in rows]

    # events
    def event(self, run_id: int | None, kind: str, **data: Any) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO events (run_id, at, kind, data_json) VALUES (?, ?, ?, ?)",
                (run_id, time.time(), kind, json.dumps(data, default=str)),
            )

    def events(self, run_id: int) -> list[tuple[float, str, dict[str, Any]]]:
        rows = self._db.execute(
            "SELECT at, kind, data_json FROM events WHERE run_id = ? ORDER BY id", (run_id,)
        )
        return [(row["at"], row["kind"], json.loads(row["data_json"])) for row in rows]


def _run(row: sqlite3.Row) -> Run:
    return Run(
        id=row["id"],
        kind=row["kind"],
        profile=row["profile"],
        status=row["status"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        config=json.loads(row["config_json"]),
        summary=json.loads(row["summary_json"]),
    )


def _attempt(row: sqlite3.Row) -> Attempt:
    return Attempt(
        id=row["id"],
        run_id=row["run_id"],
        number=row["number"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        outcome=row["outcome"],
        failure_class=row["failure_class"],
        evidence=row["evidence"],
        load_seconds=row["load_seconds"],
        split=row["split"],
        builds=json.loads(row["builds_json"]),
        log_tails=json.loads(row["log_tails_json"]),
    )
