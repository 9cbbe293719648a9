"""The README's demo and the testbed commands, run as a person runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import clusterctl

from cluster.daemon.client import DaemonClient
from cluster.store import Store
from cluster.testbed.network import find_leftovers

DEMO_ROOT = Path.home() / ".local" / "state" / "clusterctl" / "demo"


def _stop(pid: int) -> None:
    """SIGTERM a daemon and wait until it is gone."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture
def demo_cleanup() -> Iterator[None]:
    """What a failed (or timed out) demo left, its daemon and the components, is stopped
    after the test, so the next test starts from nothing."""
    yield
    client = DaemonClient(DEMO_ROOT / "state" / "daemon.sock")
    try:
        if client.answers():
            _stop(client.status().pid)
    finally:
        client.close()
    if (DEMO_ROOT / "hosts.toml").exists():
        clusterctl("--config", str(DEMO_ROOT / "hosts.toml"), "down", timeout=180)


@pytest.mark.slow
def test_demo_runs_the_main_job_then_the_daemon_and_leaves_nothing(
    current_bin: Path, demo_cleanup: None
) -> None:
    result = clusterctl("demo", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    steps = ("1. health", "2. up demo-tiny", "3. bench", "4. screen demo-shapes", "5. status")
    daemon_steps = ("6. daemon", "7. front door", "8. kill llama-server", "9. queued job",
                    "10. dashboard", "11. down")  # fmt: skip
    for step in (*steps, *daemon_steps):
        assert step in result.stderr
    out = result.stdout
    assert "serving at http://127.0.0.1:18080 after 1 attempt(s)" in out
    assert "reusing the running demo-tiny" in result.stderr  # the screen did not reload
    assert "1 case: 1 pass, 0 fail" in out
    assert "14 cases: 14 pass, 0 fail" in out
    # The daemon took over what the one-shot `up` started: no reload.
    daemon = re.search(r"daemon pid (\d+) serving demo-tiny at http://127.0.0.1:18080 "
                       r"\(adopted what serves, no reload\)", out)  # fmt: skip
    assert daemon, out
    front = re.search(r"front door: (\d+) tokens generated in [\d.]+ s, HTTP 200 from "
                      r"(http://127.0.0.1:(\d+))/v1/completions", out)  # fmt: skip
    assert front and int(front[1]) > 0, out
    back = re.search(r"llama-server killed; serving again ([\d.]+) s later: incident "
                     r"llama_server_exited \(signal\), 1 restart", out)  # fmt: skip
    assert back and float(back[1]) < 60, out
    job = re.search(r"job (\d+): bench demo-tiny done in [\d.]+ s: run (\d+), "
                    r"1 case: 1 pass, 0 fail, pp \d+ t/s, tg \d+ t/s", out)  # fmt: skip
    assert job, out
    assert f"dashboard: {front[2]}/ (no token: the listener is on loopback)" in out
    assert "daemon stopped (exit 0); clusterctl down stopped evo/llama-server" in out
    assert "nothing left running on evo, bee" in out
    # The bench job's run is in the demo's record, and passed.
    with Store(DEMO_ROOT / "state") as store:
        run = store.run(int(job[2]))
        assert run is not None and run.kind == "bench" and run.status == "ok"
    # Nothing is left: no daemon, no component, no socket, no listener.
    with pytest.raises(ProcessLookupError):
        os.kill(int(daemon[1]), 0)
    assert not (DEMO_ROOT / "state" / "daemon.sock").exists()
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", int(front[3])), timeout=5),
    ):
        pass
    leftovers = subprocess.run(["pgrep", "-f", "clusterctl/demo"], capture_output=True, text=True)
    assert leftovers.stdout == ""


@pytest.mark.slow
def test_demo_keep_leaves_the_daemon_serving_and_its_stop_line_stops_everything(
    current_bin: Path,
    demo_cleanup: None,
) -> None:
    result = clusterctl("demo", "--keep", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "10. dashboard" in result.stderr and "11. down" not in result.stderr
    last = result.stdout.strip().splitlines()[-1]
    stop = re.fullmatch(r"the daemon \(pid (\d+)\) keeps serving; to stop it: kill (\d+) "
                        r"\(what it serves keeps serving\), then clusterctl --config (\S+) down",
                        last)  # fmt: skip
    assert stop and stop[1] == stop[2], last
    pid, hosts_file = int(stop[1]), stop[3]
    dashboard = re.search(r"dashboard: (http://127.0.0.1:\d+/)", result.stdout)
    assert dashboard
    try:
        client = DaemonClient(DEMO_ROOT / "state" / "daemon.sock")
        status = client.status()
        client.close()
        assert status.pid == pid and status.state.value == "serving", status.state_reason
        assert httpx.get(dashboard[1], timeout=30).status_code == 200
    finally:  # the line's two commands, as a user runs them
        _stop(pid)
        down = clusterctl("--config", hosts_file, "down")
    assert down.returncode == 0, down.stderr
    assert "evo: llama-server: terminated" in down.stderr
    leftovers = subprocess.run(["pgrep", "-f", "clusterctl/demo"], capture_output=True, text=True)
    assert leftovers.stdout == ""


@pytest.mark.slow
def test_demo_whose_daemon_cannot_start_says_why_in_one_line_and_leaves_nothing(
    current_bin: Path,
    demo_cleanup: None,
) -> None:
    state = DEMO_ROOT / "state"
    state.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX) as squatter:  # something else answers on its socket
        squatter.bind(str(state / "daemon.sock"))
        squatter.listen()
        try:
            result = clusterctl("demo", timeout=300)
        finally:
            (state / "daemon.sock").unlink()
    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode == 2, result.stderr  # the daemon's own: a configuration error
    assert "6. daemon" in result.stderr and "7. front door" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: clusterctl daemon exited with 2: daemon.socket: a daemon "
                           f"already answers on {state / 'daemon.sock'}"), last  # fmt: skip
    assert "down (after the failure)" in result.stderr
    leftovers = subprocess.run(["pgrep", "-f", "clusterctl/demo"], capture_output=True, text=True)
    assert leftovers.stdout == ""


@pytest.mark.testbed
def test_testbed_commands_make_a_cluster_health_passes_and_down_removes_it(
    tmp_path: Path, current_bin: Path
) -> None:
    root = tmp_path / "tb"
    up = clusterctl("testbed", "up", "--root", str(root), "--hosts", "2")
    assert up.returncode == 0, up.stderr
    hosts_file = Path(up.stdout.strip())
    tag = json.loads((root / "testbed.json").read_text())["spec"]["tag"]
    try:
        env = {"CLUSTERCTL_CONFIG": str(hosts_file)}
        health = clusterctl("health", "testbed-tiny", "--json", "--quick", env=env)
        assert health.returncode == 0, health.stdout
    finally:
        down = clusterctl("testbed", "down", "--root", str(root))
    assert down.returncode == 0, down.stderr
    assert find_leftovers(tag).get(tag, []) == []
