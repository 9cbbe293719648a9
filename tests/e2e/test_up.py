"""clusterctl up / status / logs / down on the real testbed, with injected hangs and crashes."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import Cluster, llama_processes

from cluster.config.loader import load_inventory, load_profile
from cluster.config.resolve import devices_for
from cluster.llamacpp.gguf_info import estimate_devices, read_model_info
from cluster.llamacpp.logs import LoadProgress
from cluster.orchestration.linkstats import Bottleneck
from cluster.testbed.bed import TestbedSpec, create

pytestmark = pytest.mark.testbed

COMPLETION = (
    "import json, sys, urllib.request\n"
    "body = json.dumps({'prompt': 'the cluster', 'n_predict': 8, 'ignore_eos': True}).encode()\n"
    "req = urllib.request.Request(sys.argv[1] + '/completion', body, {'Content-Type': 'application/json'})\n"
    "print(urllib.request.urlopen(req, timeout=60).read().decode())\n"
)


def complete_on_head(cluster: Cluster, endpoint: str) -> dict[str, object]:
    """A completion asked from the head itself (llama-server listens on its loopback)."""
    result = cluster.bed.exec(
        cluster.bed.head,
        [sys.executable, "-c", COMPLETION, endpoint],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def model_buffers(cluster: Cluster) -> dict[str, float]:
    progress = LoadProgress()
    progress.feed(cluster.log("evo", "llama-server"))
    return progress.model_buffers


def assert_down_leaves_nothing(cluster: Cluster) -> None:
    result = cluster.run("down")
    assert result.returncode == 0, result.stderr
    assert llama_processes(cluster.bed) == []
    for name in cluster.bed.names:
        assert list(cluster.run_dir(name).glob("*.pid")) == []
    again = cluster.run("down")
    assert again.returncode == 0 and "nothing was running" in again.stderr


@pytest.mark.parametrize(
    ("build", "dio"), [("current", ["--load-mode", "dio"]), ("legacy", ["-dio"])]
)
def test_up_serves_split_over_both_hosts(
    cluster: Cluster, tiny_model: Path, build: str, dio: list[str]
) -> None:
    cluster.write_inventory(builds={name: build for name in cluster.bed.names})
    cluster.write_profile("tiny", tiny_model)
    result = cluster.run("up", "tiny")
    assert result.returncode == 0, result.stderr
    endpoint = result.stdout.strip()
    assert endpoint == "http://127.0.0.1:18080"

    answer = complete_on_head(cluster, endpoint)
    assert answer["timings"]["predicted_n"] == 8  # type: ignore[index]

    # The load log shows model buffers on both RPC devices: evo's and bee's rpc-server.
    buffers = model_buffers(cluster)
    for name in ("evo", "bee"):
        endpoint_of = f"RPC0[{cluster.bed.host(name).link_address}:50052]"
        assert buffers.get(endpoint_of, 0) > 0, (endpoint_of, buffers)
    server = cmdline(cluster.component_pid("evo", "llama-server"))
    position = server.index(dio[0])
    assert server[position : position + len(dio)] == dio
    assert server[server.index("-ts") + 1] == "1/1"
    rpc = cmdline(cluster.component_pid("bee", "rpc-server"))
    assert rpc[rpc.index("-H") + 1] == str(cluster.bed.host("bee").link_address)

    status = cluster.run("status", "--json")
    assert status.returncode == 0
    components = json.loads(status.stdout)["components"]
    assert sorted((c["host"], c["component"]) for c in components) == [
        ("bee", "rpc-server"),
        ("evo", "llama-server"),
        ("evo", "rpc-server"),
    ]
    assert all(c["alive"] and c["profile"] == "tiny" and c["split"] == "1/1" for c in components)
    assert next(c for c in components if c["component"] == "llama-server")["health"] == "ok"

    logs = cluster.run("logs", "bee", "rpc-server")
    assert "Starting RPC server" in logs.stdout

    with cluster.store() as store:
        [run] = store.runs("launch")
        [attempt] = store.attempts(run.id)
    assert run.status == "ok" and attempt.outcome == "ready" and attempt.load_seconds
    assert attempt.builds["bee"]["rpc_protocol"] == ("7.0.0" if build == "current" else "4.0.1")
    [link] = attempt.links  # bee's link during the load; evo's own rpc-server is local
    assert link.worker == "bee" and link.seconds == attempt.load_seconds
    assert link.bytes > 0 and link.bottleneck is Bottleneck.TOO_LITTLE  # a 1.6 MB model
    assert_down_leaves_nothing(cluster)


def run_up_and_inject(cluster: Cluster, signame: str) -> tuple[float, tuple[int, str, str]]:
    """Start up, wait until llama-server starts loading, signal bee's rpc-server."""
    process = cluster.popen("up", "slow")
    try:
        cluster.wait_for_log(
            "evo", "llama-server", "load_tensors: loading model tensors", timeout=60
        )
        os.kill(cluster.component_pid("bee", "rpc-server"), getattr(signal, f"SIG{signame}"))
        injected = time.time()
        stdout, stderr = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
    return injected, (process.returncode, stdout, stderr)


@pytest.fixture
def slow_link(cluster: Cluster) -> object:
    # 308 MB of weights over 100 Mbit/s: bee's share takes seconds, room to stop it mid-load.
    cluster.bed.set_link_rate("100mbit")
    yield None
    cluster.bed.set_link_rate("1gbit")


def test_hang_during_load_is_detected_and_the_retry_serves(
    cluster: Cluster, slow_model: Path, slow_link: object
) -> None:
    stall = 5.0
    cluster.write_profile("slow", slow_model, stall_timeout_s=stall)
    injected, (code, stdout, stderr) = run_up_and_inject(cluster, "STOP")
    assert code == 0, stderr
    assert "attempt 1 failed: hang" in stderr
    with cluster.store() as store:
        [run] = store.runs("launch")
        first, second = store.attempts(run.id)
    assert first.failure_class == "hang" and second.outcome == "ready"
    latency = first.finished_at - injected
    print(f"hang detected {latency:.1f}s after SIGSTOP (stall timeout {stall:g}s)")
    assert stall <= latency <= stall + 5
    assert "evo/llama-server" in first.log_tails
    complete_on_head(cluster, stdout.strip())
    assert_down_leaves_nothing(cluster)


def test_crash_during_load_is_classified_and_retried(
    cluster: Cluster, slow_model: Path, slow_link: object
) -> None:
    cluster.write_profile("slow", slow_model, stall_timeout_s=10)
    _, (code, stdout, stderr) = run_up_and_inject(cluster, "KILL")
    assert code == 0, stderr
    with cluster.store() as store:
        [run] = store.runs("launch")
        first, second = store.attempts(run.id)
    assert first.failure_class == "transport_drop", first.evidence
    assert second.outcome == "ready"
    complete_on_head(cluster, stdout.strip())
    assert_down_leaves_nothing(cluster)


def test_up_records_what_the_link_carried_against_its_capacity(
    cluster: Cluster, slow_model: Path, slow_link: object
) -> None:
    cluster.write_profile("slow", slow_model, stall_timeout_s=10)
    bee = cluster.bed.host("bee")
    shutil.rmtree(bee.rpc_cache_dir, ignore_errors=True)  # a cold cache: bee gets every byte
    bee.rpc_cache_dir.mkdir()
    health = cluster.run("health", "slow", "--throughput", "--json")
    assert health.returncode == 0, health.stdout + health.stderr
    up = cluster.run("up", "slow", "--skip-health", "--json")
    assert up.returncode == 0, up.stderr
    [link] = json.loads(up.stdout)["links"]
    assert (link["worker"], link["interface"]) == ("bee", "usb0")
    # bee's share of the weights, plus the RPC protocol and the packets' headers.
    info = read_model_info([slow_model])
    devices = devices_for(load_inventory(cluster.hosts_file), load_profile(cluster.playbooks, "slow"))
    share = estimate_devices(info, devices, 2048, 2, 99, "evo")[1].weights
    moved = max(link["rx_bytes"], link["tx_bytes"])
    assert share <= moved <= share * 1.1, (share, moved)
    with cluster.store() as store:
        [run] = store.runs("launch")
        [attempt] = store.attempts(run.id)
    [recorded] = attempt.links
    assert recorded.capacity_bps is not None and 60e6 < recorded.capacity_bps < 110e6
    assert recorded.seconds == attempt.load_seconds
    # At 100 Mbit/s the link, not the head, sets the pace; on a loaded 2-core machine the
    # head's share of the load (evo's half over loopback) can pull it under 80%.
    assert recorded.utilisation is not None and recorded.utilisation > 0.5
    assert recorded.bottleneck in (Bottleneck.LINK, Bottleneck.UNCLEAR)
    assert recorded.cache_pays is True  # 100 Mbit/s is far slower than hashing
    assert "link bee: " in up.stderr and "the rpc-server cache pays" in up.stderr
    # status shows the serving load's figures, from the record, as up said them.
    status = cluster.run("status", "--json")
    assert status.returncode == 0, status.stderr
    load = json.loads(status.stdout)["load"]
    assert (load["run_id"], load["attempt"], load["load_seconds"]) == (
        run.id,
        attempt.number,
        attempt.load_seconds,
    )
    [shown] = load["links"]
    assert (shown["worker"], shown["bytes"]) == ("bee", recorded.bytes)
    assert shown["capacity_bps"] == recorded.capacity_bps
    assert shown["bottleneck"] == recorded.bottleneck.value and shown["cache_pays"] is True
    table = cluster.run("status")
    assert table.returncode == 0, table.stderr
    title = f"links during the serving load (run {run.id}, attempt {attempt.number}, "
    assert title in table.stdout
    [row] = [line for line in table.stdout.splitlines() if "│ usb0 " in line]  # the links table
    assert row.startswith("│ bee ") and f"│ {recorded.bytes / 1e6:.1f} MB │" in row
    assert "│ pays (hash " in row
    assert_down_leaves_nothing(cluster)


def test_version_mismatch_is_not_retried(cluster: Cluster, tiny_model: Path) -> None:
    cluster.write_inventory(builds={"bee": "legacy"})
    cluster.write_profile("tiny", tiny_model)
    result = cluster.run("up", "tiny", "--skip-health")
    assert result.returncode == 5
    assert "version_mismatch" in result.stderr and "not retrying" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: tiny did not come up")
    assert llama_processes(cluster.bed) == []


def test_the_printed_tunnel_command_reaches_llama_server_from_the_controller(
    cluster: Cluster, tiny_model: Path
) -> None:
    """llama-server binds the head's loopback; the command up prints, run as printed on the
    controller, makes the printed endpoint answer here."""
    cluster.write_profile("tiny", tiny_model)
    result = cluster.run("up", "tiny")
    assert result.returncode == 0, result.stderr
    endpoint = result.stdout.strip()
    marker = "through an ssh tunnel; start it first: "
    [line] = [line for line in result.stderr.splitlines() if marker in line]
    assert line.startswith(f"{endpoint} is the head's loopback")
    argv = shlex.split(line.split(marker, 1)[1])
    evo = cluster.bed.host("evo")
    assert argv[-1] == f"root@{evo.mgmt_address}" and "-i" in argv
    tunnel = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert tunnel.poll() is None, tunnel.communicate()[1]
            try:
                with urllib.request.urlopen(endpoint + "/health", timeout=5) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the tunnel never answered"
                time.sleep(0.2)
    finally:
        tunnel.terminate()
        tunnel.communicate(timeout=10)
    assert_down_leaves_nothing(cluster)


def test_health_gate_stops_up(cluster: Cluster, tiny_model: Path) -> None:
    cluster.write_profile("tiny", tiny_model)
    cluster.bed.link_down("bee")
    try:
        result = cluster.run("up", "tiny")
    finally:
        cluster.bed.link_up("bee")
    assert result.returncode == 5
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: health gate failed: ")
    assert "bee: link: interface usb0 is down" in last
    assert llama_processes(cluster.bed) == []


def test_three_hosts_serve(
    tmp_path: Path, current_bin: Path, legacy_bin: Path, tiny_model: Path
) -> None:
    with create(TestbedSpec(n_hosts=3, root=tmp_path / "bed3")) as bed3:
        cluster = Cluster(bed3, tmp_path / "view", {"current": current_bin, "legacy": legacy_bin})
        cluster.root.mkdir()
        cluster.write_inventory()
        cluster.write_profile("tiny3", tiny_model)
        try:
            result = cluster.run("up", "tiny3")
            assert result.returncode == 0, result.stderr
            buffers = model_buffers(cluster)
            for name in bed3.names:
                assert buffers.get(f"RPC0[{bed3.host(name).link_address}:50052]", 0) > 0, buffers
            complete_on_head(cluster, result.stdout.strip())
        finally:
            cluster.run("down")
        assert llama_processes(bed3) == []
