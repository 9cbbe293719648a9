"""Two things at once on the real testbed, and what must not leak: the cluster lease with
two concurrent `up`s, `down` during a sweep, a hang mid-request, the API key and `ps`,
and the rpc port seen from the management network."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Cluster

pytestmark = pytest.mark.testbed


def test_two_concurrent_ups_one_serves_one_is_refused(cluster: Cluster, tiny_model: Path) -> None:
    cluster.write_profile("tiny", tiny_model)
    first, second = cluster.popen("up", "tiny"), cluster.popen("up", "tiny")
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 8], outcomes
    _, _, refused = next(o for o in outcomes if o[0] == 8)
    lines = refused.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: the cluster is busy: `clusterctl up tiny`"
    )
    assert "Traceback" not in refused
    # Read-only commands never need the lease.
    assert cluster.run("status").returncode == 0


def test_down_during_a_sweep_stops_it_resumably_then_stops_the_cluster(
    cluster: Cluster, tiny_model: Path
) -> None:
    cluster.write_profile("tiny", tiny_model)
    folder = cluster.playbooks / "sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "five.toml").write_text(
        'profile = "tiny"\nrange = { start = "0.6/1.4", stop = "1.4/0.6", step = 0.2 }\n'
        '[measure]\nshape = "random"\ntokens = 128\ngen = 64\nrepeat = 2\nwarmup = 0\n'
    )
    sweep = cluster.popen("sweep", "five")
    try:
        run_id = cluster.wait_for_run(
            "sweep", sweep, lambda store, run: len(store.results(run)) >= 1, "a point recorded"
        )
        down = cluster.run("down", timeout=200)
        _, sweep_err = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
        sweep.communicate(timeout=30)
    assert down.returncode == 0, down.stderr
    assert "asking `clusterctl sweep five`" in down.stderr
    assert sweep.returncode == 130, sweep_err
    assert f"clusterctl sweep --resume {run_id}" in sweep_err
    assert "`clusterctl down` (pid" in sweep_err  # the sweep says who stopped it
    with cluster.store() as store:
        run = store.run(run_id)
        assert run is not None and run.shown_status == "interrupted"
        recorded = len(store.results(run_id))
    assert 1 <= recorded < 5
    status = json.loads(cluster.run("status", "--json").stdout)
    assert [c for c in status["components"] if c["alive"]] == []  # down stopped everything
    resumed = cluster.run("sweep", "--resume", str(run_id), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    with cluster.store() as store:
        splits = [r.spec["split"] for r in store.results(run_id)]
    assert len(splits) == len(set(splits)) == 5


def test_a_worker_stopped_mid_request_is_a_hang_within_the_stall_timeout(
    cluster: Cluster, tiny_model: Path
) -> None:
    cluster.write_profile("tiny", tiny_model, ctx_size=8192, parallel=1)
    folder = cluster.playbooks / "screens"
    folder.mkdir(parents=True, exist_ok=True)
    stall = 5
    (folder / "hang.toml").write_text(
        f'shapes = ["opt"]\ntargets = [64]\nattempts = 3\ngen = 6000\nstall_timeout_s = {stall}\n'
        'request_timeout_s = 120\n[[configs]]\nname = "np1"\nprofile = "tiny"\n'
    )
    screen = cluster.popen("screen", "hang")
    try:
        cluster.wait_for_run(
            "screen", screen, lambda store, run: len(store.results(run)) >= 1, "one case done"
        )
        time.sleep(1.0)  # the second case is generating
        os.kill(cluster.component_pid("bee", "rpc-server"), signal.SIGSTOP)
        stopped_at = time.time()
        _, stderr = screen.communicate(timeout=300)
    finally:
        screen.kill()
        screen.communicate(timeout=30)
    with cluster.store() as store:
        run_id = store.runs(kind="screen", limit=1)[0].id
        results = store.results(run_id)
        attempts = store.attempts(run_id)
    assert [r.status for r in results] == ["pass", "fail", "pass"], stderr
    hung = results[1]
    assert hung.failure_class == "hang", hung.evidence
    detected = hung.created_at - stopped_at  # recorded the moment the case ended
    assert stall < detected < stall + 3, f"detected {detected:.1f}s after the stop"
    assert [a.outcome for a in attempts] == ["ready", "ready"]  # brought back once


def test_the_api_key_is_never_in_an_argv_on_the_head(cluster: Cluster, tiny_model: Path) -> None:
    key = "clusterctl-test-key-" + os.urandom(8).hex()
    cluster.write_profile("keyed", tiny_model, api_key_env="TB_API_KEY")
    up = subprocess.run(
        cluster.argv("up", "keyed"),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **cluster.env(), "TB_API_KEY": key},
        check=False,
    )
    assert up.returncode == 0, up.stderr
    ps = cluster.bed.exec("evo", ["ps", "-ww", "-eo", "args"], capture_output=True, text=True)
    assert "llama-server" in ps.stdout and "--api-key-file" in ps.stdout
    assert key not in ps.stdout
    key_file = cluster.run_dir("evo") / "llama-server.key"
    assert key_file.read_text() == key and (key_file.stat().st_mode & 0o777) == 0o600
    with cluster.store() as store:
        recorded = json.dumps([a.model_dump() for a in store.attempts(store.last_run_id("launch"))])
    assert key not in recorded
    unset = cluster.run("up", "keyed")  # TB_API_KEY is not set here
    assert unset.returncode == 2 and "TB_API_KEY, which is unset or empty" in unset.stderr


@pytest.fixture
def route_over_management(cluster: Cluster) -> Iterator[str]:
    """The controller (root namespace) routes bee's link address via bee's management
    address, as a LAN peer could: the probe of what the firewall lets through."""
    bee = cluster.bed.host("bee")
    target = f"{bee.link_address}/32"
    subprocess.run(["ip", "route", "add", target, "via", str(bee.mgmt_address)], check=True)
    try:
        yield str(bee.link_address)
    finally:
        subprocess.run(["ip", "route", "del", target], check=False)
        cluster.bed.exec("bee", ["nft", "delete", "table", "inet", "clusterctl"], check=False)


def reachable(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex((address, port)) == 0


def rpc_reach(cluster: Cluster) -> dict[str, str]:
    result = cluster.run("health", "tiny", "--json")
    checks = json.loads(result.stdout)["checks"]
    found = next(c for c in checks if c["host"] == "bee" and c["name"] == "rpc 50052 reach")
    return {"level": found["level"], "detail": found["detail"]}


def test_the_rpc_port_is_reachable_over_management_until_the_rule_is_in_place(
    cluster: Cluster, tiny_model: Path, route_over_management: str
) -> None:
    cluster.write_profile("tiny", tiny_model)
    assert cluster.run("up", "tiny").returncode == 0
    link = route_over_management
    assert reachable(link, 50052)  # bound to the link address, answering on mgmt0
    open_port = rpc_reach(cluster)
    assert open_port["level"] == "warn" and "answers on every interface" in open_port["detail"]
    rule = (
        "table inet clusterctl {\n chain input {\n  type filter hook input priority 0; "
        'policy accept;\n  tcp dport 50052 iifname != "usb0" drop\n }\n}\n'
    )
    cluster.bed.exec("bee", ["nft", "-f", "-"], input=rule, text=True, check=True)
    assert not reachable(link, 50052)
    guarded = rpc_reach(cluster)
    assert guarded == {
        "level": "ok",
        "detail": "nftables drops tcp/50052 arriving other than on usb0",
    }
    # The cluster still serves over the link.
    assert cluster.run("bench", "tiny", "--tokens", "64", "--gen", "8").returncode == 0
