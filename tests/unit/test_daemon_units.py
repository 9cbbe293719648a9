"""The daemon's pure parts: windows and times, its records, the request watch on a fake
clock, the systemd unit."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from dateutil import tz
from test_watchdog import FakeTime

from cluster.daemon.models import (
    Desired,
    Incident,
    IncidentClass,
    JobKind,
    JobRequest,
    JobStatus,
)
from cluster.daemon.probe import RequestWatch
from cluster.daemon.records import DaemonRecord
from cluster.daemon.unit import unit_text
from cluster.daemon.windows import Window, eligible, parse_at, window_end
from cluster.orchestration.watchdog import Sample
from cluster.store import Store


def at(text: str) -> float:
    """A local time today (2026-11-30) as a timestamp."""
    return datetime.fromisoformat(f"2026-11-30T{text}").replace(tzinfo=tz.tzlocal()).timestamp()


def test_windows_contain_their_hours_and_cross_midnight() -> None:
    night = Window.parse("01:00-07:00")
    assert night.contains(at("03:00")) and not night.contains(at("08:00"))
    assert night.current_or_next(at("08:00")) == (at("01:00") + 86400, at("07:00") + 86400)
    late = Window.parse("23:00-05:00")
    assert late.contains(at("23:30")) and late.contains(at("04:59"))
    assert not late.contains(at("05:00"))
    assert late.current_or_next(at("04:00")) == (at("23:00") - 86400, at("05:00"))
    for bad in ("1-7", "01:00", "25:00-07:00", "07:00-07:00"):
        with pytest.raises(ValueError):
            Window.parse(bad)


def test_jobs_wait_for_their_time_and_their_window() -> None:
    assert eligible(None, None, at("12:00")) == (True, None)
    assert eligible(at("13:00"), None, at("12:00")) == (False, at("13:00"))
    assert eligible(None, "01:00-07:00", at("12:00")) == (False, at("01:00") + 86400)
    assert eligible(None, "01:00-07:00", at("02:00")) == (True, None)
    assert window_end("01:00-07:00", at("02:00")) == at("07:00")
    assert window_end(None, at("02:00")) is None
    assert parse_at("13:00", at("12:00")) == at("13:00")
    assert parse_at("11:00", at("12:00")) == at("11:00") + 86400  # the next 11:00
    assert parse_at("2026-12-01T02:00", at("12:00")) == at("02:00") + 86400
    with pytest.raises(ValueError, match="is not a time"):
        parse_at("soon", at("12:00"))


def test_the_record_keeps_desired_state_jobs_and_incidents(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        record = DaemonRecord(store)
        assert record.desired().profile is None
        record.set_desired(Desired(profile="minimax-q8", split=[1.2, 0.8]))
        assert record.desired().split == [1.2, 0.8]
        first = record.add_job(JobRequest(kind=JobKind.BENCH, target="minimax-q8"))
        later = record.add_job(
            JobRequest(kind=JobKind.SWEEP, target="night", window="01:00-07:00", then_apply=True)
        )
        assert (first.status, later.status) == (JobStatus.QUEUED, JobStatus.WAITING)
        record.save_job(first.model_copy(update={"status": JobStatus.DONE}))
        assert [j.id for j in record.jobs(unfinished=True)] == [later.id]
        assert [j.id for j in record.jobs()] == [later.id, first.id]
        incident = record.add_incident(
            Incident(cls=IncidentClass.WORKER_DIED, evidence="bee gone", started=100.0)
        )
        record.save_incident(incident.model_copy(update={"recovered": 112.5}))
        [kept] = record.incidents()
        assert kept.time_to_recover_s == 12.5 and kept.id == incident.id


def watch(time_: FakeTime, busy_until: float, progress_until: float) -> RequestWatch:
    async def sample() -> Sample:
        moved = min(time_.t, progress_until)
        return Sample(log_size=100, worker_bytes=int(moved * 1_000_000))

    async def busy() -> bool | None:
        return time_.t < busy_until

    return RequestWatch(sample, busy, 5.0, now=time_.now, sleep=time_.sleep)


def test_a_busy_server_without_progress_is_a_hang_within_a_second_of_the_stall() -> None:
    clock = FakeTime()
    problem = clock.run(watch(clock, busy_until=1e9, progress_until=20).run())
    assert problem.cls is IncidentClass.HANG
    assert 25 < clock.t <= 25.8 and "no progress for 5." in problem.evidence


def test_idle_time_is_never_a_stall() -> None:
    clock = FakeTime()

    async def run_for(seconds: float) -> None:
        task = asyncio.ensure_future(watch(clock, busy_until=0, progress_until=0).run())
        while clock.t < seconds:
            await clock.sleep(1)
        assert not task.done()
        task.cancel()

    clock.run(run_for(120))  # two idle minutes, no request: nothing reported
    assert clock.t >= 120


def test_the_systemd_unit(tmp_path: Path) -> None:
    text = unit_text(tmp_path / "hosts.toml", tmp_path / "state", tmp_path / "keys.env")
    assert f"--config {tmp_path}/hosts.toml --state-dir {tmp_path}/state daemon" in text
    assert "KillSignal=SIGTERM" in text and f"EnvironmentFile=-{tmp_path}/keys.env" in text
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze here")
    unit = tmp_path / "clusterctl.service"
    unit.write_text(text)
    check = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    complaints = [
        line
        for line in (check.stdout + check.stderr).splitlines()
        if "clusterctl.service" in line and "Documentation" not in line
    ]
    assert complaints == [], check.stderr
