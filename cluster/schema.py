"""The record's schema: the SQL of each version, and the migrations between them.

``cluster.store`` applies them: a file at ``PRAGMA user_version`` i is brought to i + 1 by
``MIGRATIONS[i]``, one transaction per step, until it is at ``SCHEMA_VERSION``. A step only
adds (tables, columns with defaults, indexes), so an older controller's rows stay readable.
"""

from __future__ import annotations

SCHEMA_V1 = """
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
SCHEMA_V2 = """
ALTER TABLE results ADD COLUMN spec_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE results ADD COLUMN evidence TEXT;
ALTER TABLE results ADD COLUMN log_tails_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE runs ADD COLUMN controller_pid INTEGER;
ALTER TABLE runs ADD COLUMN controller_host TEXT;
"""
# Version 3: the link throughput health measured from the head to each worker, kept so a
# later health shows it (with its age) instead of measuring again (orchestration/throughput).
SCHEMA_V3 = """
CREATE TABLE IF NOT EXISTS throughput (
    id INTEGER PRIMARY KEY,
    head TEXT NOT NULL,
    worker TEXT NOT NULL,
    bps REAL NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS throughput_path ON throughput (head, worker, at);
"""
# Version 4: what each worker's link carried during a load, against its capacity
# (orchestration/linkstats: a list of LinkLoad records per attempt).
SCHEMA_V4 = """
ALTER TABLE attempts ADD COLUMN links_json TEXT NOT NULL DEFAULT '[]';
"""
# Version 5: the daemon's desired state, its jobs and its incidents (cluster/daemon), one
# JSON document of their pydantic model a row.
SCHEMA_V5 = """
CREATE TABLE IF NOT EXISTS daemon_desired (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    data_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS daemon_jobs (
    id INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    data_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS daemon_incidents (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    data_json TEXT NOT NULL
);
"""
# Index i brings a file from version i to version i + 1.
MIGRATIONS = (SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5)
SCHEMA_VERSION = len(MIGRATIONS)
