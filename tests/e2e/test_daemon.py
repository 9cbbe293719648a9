"""The daemon on the real testbed (sshd, namespaces, llama.cpp): it keeps a profile
serving through crashes, hangs and a link going down, adopts what runs after its own
death, and runs queued jobs without losing a point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import Cluster, DaemonProcess, llama_processes

from cluster.daemon.models import DaemonStatus, IncidentClass, JobKind, JobRequest, JobStatus

pytestmark = pytest.mark.testbed

STALL = 5


@pytest.fixture
def daemon(cluster: Cluster, tiny_model: Path) -> Iterator[DaemonProcess]:
    cluster.write_profile("tiny", tiny_model, ctx_size=8192, parallel=1, stall_timeout_s=STALL)
    with cluster.hosts_file.open("a") as hosts:
        hosts.write("\n[daemon]\nprobe_interval_s = 1\nidle_probe_s = 5\nbackoff_base_s = 1\n")
    started = DaemonProcess(cluster)
    started.start()
    yield started
    started.stop()
    started.client.close()


def serve(daemon: DaemonProcess) -> DaemonStatus:
    daemon.client.set_desired("tiny")
    return daemon.serving()


def test_a_killed_llama_server_is_brought_back_and_recorded(
    cluster: Cluster, daemon: DaemonProcess
) -> None:
    before = serve(daemon)
    killed_at = time.time()
    os.kill(cluster.component_pid("evo", "llama-server"), signal.SIGKILL)
    after = daemon.until(
        lambda s: s.state.value == "serving" and s.serving.pids != before.serving.pids,
        "serving again",
    )
    [incident] = after.incidents
    assert incident.cls is IncidentClass.LLAMA_SERVER_EXITED and incident.cause == "signal"
    assert incident.recovered is not None and incident.started >= killed_at
    assert "evo/llama-server" in incident.log_tails
    ok = cluster.run("bench", "tiny", "--tokens", "64", "--gen", "4")
    assert ok.returncode == 8 and "the daemon `clusterctl daemon`" in ok.stderr  # one owner


def test_a_killed_worker_restarts_the_whole_group(cluster: Cluster, daemon: DaemonProcess) -> None:
    before = serve(daemon)
    os.kill(cluster.component_pid("bee", "rpc-server"), signal.SIGKILL)
    after = daemon.until(
        lambda s: s.state.value == "serving" and s.serving.pids != before.serving.pids,
        "the group restarted",
    )
    assert after.incidents[0].cls is IncidentClass.WORKER_DIED
    # every component is new: the group restarts as one unit
    assert set(after.serving.pids.values()).isdisjoint(before.serving.pids.values())


def test_a_worker_stopped_mid_request_is_a_hang_and_the_group_restarts(
    cluster: Cluster, daemon: DaemonProcess
) -> None:
    serve(daemon)
    request = subprocess.Popen(  # a long generation through the head's own loopback
        cluster.bed.netns_argv(
            "evo",
            ["curl", "-s", "-m", "120", "http://127.0.0.1:18080/completion", "-d",
             '{"prompt": "hello", "n_predict": 4000, "ignore_eos": true}'],
        ),
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(1.5)  # the request is generating
        os.kill(cluster.component_pid("bee", "rpc-server"), signal.SIGSTOP)
        stopped_at = time.time()
        after = daemon.until(lambda s: bool(s.incidents), "an incident", timeout=60)
    finally:
        request.kill()
        request.wait()
    incident = after.incidents[0]
    assert incident.cls in (IncidentClass.HANG, IncidentClass.WORKER_STOPPED), incident
    assert incident.started - stopped_at < STALL + 3
    daemon.serving()


def test_link_down_degrades_without_a_crash_loop_then_serves_again(
    cluster: Cluster, daemon: DaemonProcess
) -> None:
    serve(daemon)
    cluster.bed.link_down("bee")
    try:
        degraded = daemon.until(lambda s: s.state.value == "degraded", "degraded", 60)
        assert "health gate" in degraded.state_reason
        time.sleep(8)  # eight probe intervals: nothing may be started meanwhile
        still = daemon.status()
        assert still is not None and still.state.value == "degraded"
        with cluster.store() as store:
            launches = store.runs(kind="launch", limit=50)
        assert [r for r in launches if r.started_at > degraded.incidents[0].started] == []
        assert llama_processes(cluster.bed) == []  # stopped once, nothing started again
    finally:
        cluster.bed.link_up("bee")
    back = daemon.serving(timeout=120)
    assert back.incidents[0].cls is IncidentClass.LINK_DOWN
    assert back.incidents[0].recovered is not None


def test_a_new_daemon_adopts_what_serves_without_a_reload(
    cluster: Cluster, daemon: DaemonProcess
) -> None:
    first = serve(daemon)
    daemon.kill(signal.SIGKILL)
    with cluster.store() as store:
        launches_before = len(store.runs(kind="launch", limit=100))
    daemon.start()
    adopted = daemon.serving()
    assert adopted.serving.pids == first.serving.pids
    with cluster.store() as store:
        assert len(store.runs(kind="launch", limit=100)) == launches_before  # no reload


def write_sweep(cluster: Cluster, name: str = "night") -> None:
    folder = cluster.playbooks / "sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.toml").write_text(
        'profile = "tiny"\nrange = { start = "0.6/1.4", stop = "1.4/0.6", step = 0.2 }\n'
        '[measure]\nshape = "random"\ntokens = 128\ngen = 32\nrepeat = 2\nwarmup = 0\n'
    )


def test_a_sweep_waits_for_a_request_then_runs_and_serving_is_restored(
    cluster: Cluster, daemon: DaemonProcess
) -> None:
    serve(daemon)
    write_sweep(cluster)
    answer: dict[str, object] = {}
    request = subprocess.Popen(
        cluster.bed.netns_argv(
            "evo",
            ["curl", "-s", "-m", "120", "http://127.0.0.1:18080/completion", "-d",
             '{"prompt": "hello", "n_predict": 400, "ignore_eos": true}'],
        ),
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    time.sleep(0.5)
    job = daemon.client.submit(JobRequest(kind=JobKind.SWEEP, target="night"))
    out, _ = request.communicate(timeout=120)
    answer = json.loads(out)
    assert answer["tokens_predicted"] == 400  # the request in flight finished
    done = daemon.until(
        lambda s: any(j.id == job.id and j.status.finished for j in s.jobs), "the sweep done", 600
    )
    finished = next(j for j in done.jobs if j.id == job.id)
    assert finished.status is JobStatus.DONE, finished.message
    restored = daemon.serving()
    assert restored.serving.split == "1/1"
    report = cluster.run("report", str(finished.run_id), "--out", str(cluster.root / "report"))
    assert report.returncode == 0 and (cluster.root / "report" / "report.md").is_file()


def test_a_daemon_killed_mid_sweep_resumes_it_exactly_once(
    cluster: Cluster, daemon: DaemonProcess
) -> None:
    serve(daemon)
    write_sweep(cluster)
    job = daemon.client.submit(JobRequest(kind=JobKind.SWEEP, target="night"))
    cluster.wait_for_run(
        "sweep",
        daemon.process,  # type: ignore[arg-type]
        lambda store, run: len(store.results(run)) >= 2,
        "two points recorded",
        timeout=300,
    )
    daemon.kill(signal.SIGKILL)
    with cluster.store() as store:
        run_id = store.last_run_id("sweep")
        assert run_id is not None
        before = {r.spec["split"]: r.model_dump() for r in store.results(run_id)}
    daemon.start()
    done = daemon.until(
        lambda s: any(j.id == job.id and j.status.finished for j in s.jobs), "resumed sweep", 600
    )
    assert next(j for j in done.jobs if j.id == job.id).status is JobStatus.DONE
    with cluster.store() as store:
        splits = [r.spec["split"] for r in store.results(run_id)]
        after = {r.spec["split"]: r.model_dump() for r in store.results(run_id)}
    assert len(splits) == len(set(splits)) == 5  # no point lost, none measured twice
    assert all(after[split] == point for split, point in before.items())


def test_a_queued_job_is_cancelled(cluster: Cluster, daemon: DaemonProcess) -> None:
    job = daemon.client.submit(JobRequest(kind=JobKind.BENCH, target="tiny", at=time.time() + 3600))
    assert job.status is JobStatus.WAITING
    assert daemon.client.cancel(job.id).status is JobStatus.CANCELLED
    jobs = cluster.run("jobs")
    assert f"{job.id:>4}  cancelled bench tiny" in jobs.stdout


def test_tcp_without_the_token_is_refused(cluster: Cluster, tiny_model: Path) -> None:
    cluster.write_profile("tiny", tiny_model)
    with cluster.hosts_file.open("a") as hosts:
        hosts.write('\n[daemon]\nlisten = "127.0.0.1:18765"\ntoken_env = "TB_DAEMON_TOKEN"\n')
    token = os.urandom(8).hex()
    process = subprocess.Popen(
        cluster.argv("daemon"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **cluster.env(), "TB_DAEMON_TOKEN": token},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                refused = httpx.get("http://127.0.0.1:18765/api/status", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        assert refused.status_code == 401
        allowed = httpx.get(
            "http://127.0.0.1:18765/api/status",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert allowed.status_code == 200 and allowed.json()["state"] == "idle"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
