"""The SQLite record: migration, results written once, job runs, stale runs."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from cluster.errors import EXIT_STORE, StoreError
from cluster.orchestration.linkstats import LinkLoad
from cluster.records import AttemptOutcome, ResultStatus, RunKind, RunStatus
from cluster.schema import SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_VERSION
from cluster.store import Store, Throughput


def test_a_version_1_file_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "clusterctl.db", isolation_level=None)
    db.executescript(f"BEGIN;{SCHEMA_V1}PRAGMA user_version = 1;COMMIT;")
    db.execute(
        "INSERT INTO runs (kind, profile, status, started_at) VALUES ('launch', 'p', 'ok', 1.0)"
    )
    db.execute(
        "INSERT INTO results (run_id, key, status, created_at) VALUES (1, 'old', 'pass', 2.0)"
    )
    db.close()
    with Store(tmp_path) as store:
        version = store._db.execute("PRAGMA user_version").fetchone()[0]
        assert version == SCHEMA_VERSION == 5
        (old,) = store.results(1)
        assert (old.key, old.spec, old.log_tails, old.evidence) == ("old", {}, {}, None)
        run = store.run(1)
        assert run is not None and run.controller_pid is None and not run.stale


def test_a_version_2_file_gets_the_throughput_table(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "clusterctl.db", isolation_level=None)
    db.executescript(f"BEGIN;{SCHEMA_V1}{SCHEMA_V2}PRAGMA user_version = 2;COMMIT;")
    db.close()
    with Store(tmp_path) as store:
        assert store.last_throughputs("evo") == {}
        store.record_throughput(Throughput(head="evo", worker="bee", bps=9.4e8, at=100.0))
        assert store.last_throughputs("evo")["bee"].bps == 9.4e8


def test_a_version_3_attempt_gets_links_and_keeps_them(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "clusterctl.db", isolation_level=None)
    db.executescript(f"BEGIN;{SCHEMA_V1}{SCHEMA_V2}{SCHEMA_V3}PRAGMA user_version = 3;COMMIT;")
    db.execute(
        "INSERT INTO runs (kind, profile, status, started_at) VALUES ('launch', 'p', 'ok', 1.0)"
    )
    db.execute(
        "INSERT INTO attempts (run_id, number, started_at, outcome) VALUES (1, 1, 2.0, 'ready')"
    )
    db.close()
    link = LinkLoad(
        worker="bee", interface="tb0", rx_bytes=7 * 10**9, tx_bytes=10**8, seconds=60.0,
        capacity_bps=9.4e9, capacity_at=1.0,
    )  # fmt: skip
    with Store(tmp_path) as store:
        (old,) = store.attempts(1)
        assert old.links == []
        attempt = store.start_attempt(1, 2, "1/1", {})
        store.finish_attempt(attempt, "ready", load_seconds=60.0, links=[link])
        assert store.attempts(1)[1].links == [link]


def test_the_last_throughput_of_each_path_is_the_newest(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        for worker, bps, at in [
            ("bee", 9.0e8, 100.0),
            ("bee", 9.5e8, 300.0),
            ("bee", 8.0e8, 200.0),  # recorded later, measured earlier
            ("ant", 1.0e9, 50.0),
        ]:
            store.record_throughput(Throughput(head="evo", worker=worker, bps=bps, at=at))
        store.record_throughput(Throughput(head="bee", worker="evo", bps=1.0, at=999.0))
        last = store.last_throughputs("evo")
    assert last == {
        "bee": Throughput(head="evo", worker="bee", bps=9.5e8, at=300.0),
        "ant": Throughput(head="evo", worker="ant", bps=1.0e9, at=50.0),
    }


def test_two_stores_opening_a_new_file_migrate_it_once(tmp_path: Path) -> None:
    first, second = Store(tmp_path), Store(tmp_path)
    first.close()
    second.close()
    with Store(tmp_path) as store:
        columns = [row[1] for row in store._db.execute("PRAGMA table_info(results)")]
    assert columns.count("spec_json") == 1


def test_a_result_is_written_once_and_read_back(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        run_id = store.start_run("screen", "p", {})
        store.record_result(
            run_id,
            "c/opt/100",
            "fail",
            spec={"target": 100},
            metrics={"calibrated": 101},
            failure_class="transport_drop",
            evidence="Remote RPC server crashed",
            log_tails={"bee/rpc-server": "tail"},
        )
        with pytest.raises(sqlite3.IntegrityError):
            store.record_result(run_id, "c/opt/100", "pass", spec={})
        (result,) = store.results(run_id)
        assert result.failure_class == "transport_drop"
        assert result.metrics == {"calibrated": 101}
        assert result.log_tails == {"bee/rpc-server": "tail"}
        assert store.result_keys(run_id) == {"c/opt/100"}


def test_a_job_that_raises_leaves_its_run_failed_or_interrupted(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        with pytest.raises(RuntimeError), store.job("bench", "p", {}) as failed_run:
            raise RuntimeError("no server")
        with pytest.raises(KeyboardInterrupt), store.job("bench", "p", {}) as stopped_run:
            raise KeyboardInterrupt
        with store.job("bench", "p", {}) as finished_run:
            store.finish_run(finished_run, "ok", {"x": 1})
        run = store.run(failed_run)
        assert run is not None and (run.status, run.summary) == ("failed", {"error": "no server"})
        run = store.run(stopped_run)
        assert run is not None and run.status == "interrupted"
        run = store.run(finished_run)
        assert run is not None and (run.status, run.summary) == ("ok", {"x": 1})


def test_a_running_run_whose_controller_is_gone_shows_interrupted(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        mine = store.start_run("screen", "p", {})
        theirs = store.start_run("screen", "p", {})
        dead_pid = subprocess.Popen(["true"])
        dead_pid.wait()
        store._db.execute("UPDATE runs SET controller_pid = ? WHERE id = ?", (dead_pid.pid, theirs))
        assert store.run(mine).shown_status == "running"  # type: ignore[union-attr]
        assert store.run(theirs).shown_status == "interrupted"  # type: ignore[union-attr]
        store.resume_run(theirs)
        assert store.run(theirs).shown_status == "running"  # type: ignore[union-attr]
        assert store.next_attempt_number(theirs) == 1
        store.start_attempt(theirs, 1, "1/1", {})
        assert store.next_attempt_number(theirs) == 2


def test_a_writer_waits_for_the_lock_then_fails_naming_the_file(tmp_path: Path) -> None:
    Store(tmp_path).close()
    holder = sqlite3.connect(tmp_path / "clusterctl.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with Store(tmp_path, busy_timeout_s=0.1) as store:
            # Opening a file already at the current schema and reading it take no write lock.
            assert store.runs() == []
            with pytest.raises(StoreError) as raised:
                store.start_run("bench", "p", {})
    finally:
        holder.close()
    assert raised.value.exit_code == EXIT_STORE
    assert str(raised.value) == (
        f"{tmp_path / 'clusterctl.db'}: database is locked: another process holds it locked "
        "(waited 0.1 s); try again when that one is done"
    )
    with Store(tmp_path) as store:  # the failed transaction left nothing behind
        assert store.runs() == []
        assert store.start_run("bench", "p", {}) == 1


def test_opening_a_file_locked_by_another_process_fails_naming_it(tmp_path: Path) -> None:
    holder = sqlite3.connect(tmp_path / "clusterctl.db", isolation_level=None)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="database is locked"):
            Store(tmp_path, busy_timeout_s=0.1)
    finally:
        holder.close()


def test_a_state_directory_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError) as raised:
        Store(tmp_path / "file" / "state")
    assert str(raised.value) == (
        f"{tmp_path / 'file' / 'state'}: cannot create the state directory: "
        "a part of its path is a file, not a directory"
    )


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "clusterctl.db").write_bytes(b"\x00garbage" * 512)
    with pytest.raises(StoreError, match="file is not a database"):
        Store(tmp_path)


def test_records_carry_their_words_as_types(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        run_id = store.start_run(RunKind.LAUNCH, "p", {})
        attempt = store.start_attempt(run_id, 1, "1/1", {})
        store.finish_attempt(attempt, AttemptOutcome.READY, load_seconds=1.0)
        store.record_result(run_id, "k", ResultStatus.PRUNED, spec={})
        store.finish_run(run_id, RunStatus.OK, {})
        run = store.run(run_id)
        [loaded] = store.attempts(run_id)
        [result] = store.results(run_id)
    assert run is not None and run.kind is RunKind.LAUNCH and run.status is RunStatus.OK
    assert loaded.outcome is AttemptOutcome.READY and result.status is ResultStatus.PRUNED
    assert json.dumps([run.status, result.status]) == '["ok", "pruned"]'  # the plain words


def test_a_row_with_a_word_this_version_does_not_know_names_the_row(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        run_id = store.start_run(RunKind.BENCH, "p", {})
        store.finish_run(run_id, RunStatus.OK, {})
    with sqlite3.connect(tmp_path / "clusterctl.db") as db:
        db.execute("UPDATE runs SET status = 'paused' WHERE id = ?", (run_id,))
    with Store(tmp_path) as store, pytest.raises(StoreError) as raised:
        store.run(run_id)
    assert f"run {run_id}: status:" in str(raised.value) and "'paused'" in str(raised.value)
