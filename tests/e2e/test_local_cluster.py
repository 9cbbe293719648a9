"""A hang on a local cluster, whose "link" is loopback (the embedded default, one GPU box).

The controller's own ``/health`` polls cross loopback too; when the watchdog counted the
link interface's bytes, they kept a hung load alive forever (seen on the GPU machine with a
20 s stall timeout). Progress now counts only the head's sockets to its rpc-servers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dashboard_support import free_port

from cluster.store import Store

STALL_S = 20.0


def _inventory(root: Path, bin_dir: Path) -> str:
    hosts = [f'[cluster]\nhead = "evo"\n[controller]\nstate_dir = "{root / "state"}"\n']
    for name, address in (("evo", "127.0.0.2"), ("bee", "127.0.0.3")):
        hosts.append(
            f'[hosts.{name}]\ntransport = "local"\nlink_address = "{address}"\n'
            f'link_interface = "lo"\nrpc_port = {free_port(address)}\n'
            f'llama_bin_dir = "{bin_dir}"\nrun_dir = "{root / "run" / name}"\n'
        )
    return "\n".join(hosts)


def _worker_pid(run_dir: Path) -> int:
    """The rpc-server itself, the child of the wrapper shell its pid file names."""
    leader = int((run_dir / "rpc-server.pid").read_text().split()[0])
    return int(Path(f"/proc/{leader}/task/{leader}/children").read_text().split()[0])


def _wait_for(condition: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        time.sleep(0.05)


def test_a_hang_on_a_loopback_link_is_detected(
    tmp_path: Path, current_bin: Path, slow_model: Path
) -> None:
    (tmp_path / "hosts.toml").write_text(_inventory(tmp_path, current_bin))
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "slow.toml").write_text(
        f'model = "{slow_model}"\nrpc_hosts = ["evo", "bee"]\ntensor_split = "1/1"\n'
        f"ctx_size = 2048\nport = {free_port('127.0.0.1')}\nstall_timeout_s = {STALL_S}\n"
        "load_timeout_s = 300\nretries = 0\n"
    )
    env = {**os.environ, "CLUSTERCTL_CONFIG": str(tmp_path / "hosts.toml")}
    env["CLUSTERCTL_PLAYBOOKS"] = str(tmp_path / "playbooks")
    command = [sys.executable, "-m", "cluster"]
    log = tmp_path / "run" / "evo" / "llama-server.log"
    up = subprocess.Popen(
        [*command, "up", "slow", "--skip-health"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for("the load", lambda: log.exists() and "load_tensors" in log.read_text(), 120)
        os.kill(_worker_pid(tmp_path / "run" / "bee"), signal.SIGSTOP)
        stopped = time.time()
        _, stderr = up.communicate(timeout=STALL_S * 4)
    finally:
        up.kill()
        subprocess.run([*command, "down"], env=env, capture_output=True, timeout=120)
    assert up.returncode != 0
    assert "hang: no load progress" in stderr, stderr
    with Store(tmp_path / "state") as store:
        [run] = store.runs("launch")
        [attempt] = store.attempts(run.id)
    assert attempt.finished_at is not None
    latency = attempt.finished_at - stopped
    print(f"hang on loopback detected {latency:.1f}s after SIGSTOP (stall {STALL_S:g}s)")
    assert attempt.failure_class == "hang"
    assert STALL_S <= latency <= STALL_S + 5
