"""clusterctl health on the real testbed: a good cluster passes, each fault fails clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import Cluster

from cluster.testbed.models import TinyModelSpec, cached_model

pytestmark = pytest.mark.testbed


def health(cluster: Cluster, *args: str) -> tuple[int, dict[str, object], list[dict[str, str]]]:
    result = cluster.run("health", "--json", *args, timeout=120)
    document = json.loads(result.stdout)
    return result.returncode, document, document["checks"]


def failures(checks: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    return [(c["host"], c["name"], c["detail"]) for c in checks if c["level"] == "fail"]


def test_good_cluster_passes_every_check(cluster: Cluster, tiny_model: Path) -> None:
    cluster.write_profile("tiny", tiny_model)
    code, document, checks = health(cluster, "tiny", "--throughput")
    assert failures(checks) == []
    assert code == 0 and document["ok"] is True
    by_name = {(c["host"], c["name"]): c for c in checks}
    assert by_name[("evo", "route→bee")]["value"] == "usb0"
    # iperf3 over the 1 Gbit/s htb link measures below the limit and well above zero.
    speed = float(by_name[("evo", "throughput→bee")]["value"].split()[0])
    assert 0.2 < speed < 1.1
    assert by_name[("evo", "build")]["value"].endswith("rpc 7.0.0")
    assert by_name[("evo", "model")]["level"] == "ok"
    assert {c["host"] for c in checks if c["name"] == "fit"} == {"evo", "bee"}
    assert "ms" in by_name[("bee", "ssh")]["value"]


def test_throughput_is_kept_and_shown_with_its_age_until_it_is_too_old(cluster: Cluster) -> None:
    """A path never measured is measured; the next health shows that measurement and its
    age without running iperf3 again; --throughput-max-age 0 measures again; --quick never."""

    def throughput(*args: str) -> dict[str, str]:
        code, _, checks = health(cluster, *args)
        assert code == 0, checks
        [row] = [c for c in checks if c["name"] == "throughput→bee"]
        return row

    first = throughput()
    assert first["detail"] == "iperf3 over the link, measured now"
    assert first["level"] == "ok"
    again = throughput()
    assert again["value"] == first["value"] and again["level"] == "ok"
    assert again["detail"].startswith("iperf3 over the link, measured ")
    assert again["detail"].endswith(
        " s ago; not measured now: younger than the maximum age of 24 h (--throughput measures now)"
    )
    assert throughput("--throughput-max-age", "0")["detail"] == "iperf3 over the link, measured now"
    assert throughput("--quick")["detail"].endswith("; not measured now (--quick)")
    with cluster.store() as store:
        kept = store._db.execute("SELECT head, worker FROM throughput").fetchall()
    assert [tuple(row) for row in kept] == [("evo", "bee"), ("evo", "bee")]


def test_link_down_fails(cluster: Cluster, bed: object) -> None:
    cluster.bed.link_down("bee")
    try:
        code, _, checks = health(cluster, "--quick")
    finally:
        cluster.bed.link_up("bee")
    assert code == 1
    assert ("bee", "link", "interface usb0 is down") in failures(checks)
    assert any(h == "evo" and n == "rtt→bee" for h, n, _ in failures(checks))


def test_link_address_routed_over_management_network_fails(cluster: Cluster) -> None:
    cluster.bed.route_link_via_mgmt("evo", "bee")
    try:
        code, _, checks = health(cluster, "--quick")
    finally:
        cluster.bed.undo_route_link_via_mgmt("evo", "bee")
    assert code == 1
    found = {(host, name): detail for host, name, detail in failures(checks)}
    # Only the path checks fail: the route itself, and the ping forced out of usb0.
    assert set(found) <= {("evo", "route→bee"), ("evo", "rtt→bee")}
    bee_link = str(cluster.bed.host("bee").link_address)
    detail = found[("evo", "route→bee")]
    assert (
        f"bee's link address {bee_link} leaves by mgmt0" in detail and "not the link usb0" in detail
    )


def test_mixed_builds_fail(cluster: Cluster) -> None:
    cluster.write_inventory(builds={"bee": "legacy"})
    code, _, checks = health(cluster, "--quick")
    assert code == 1
    build_failures = [f for f in failures(checks) if f[1] == "build"]
    assert {host for host, _, _ in build_failures} == {"evo", "bee"}
    detail = build_failures[0][2]
    assert "hosts speak different RPC protocols: bee 4.0.1, evo 7.0.0" in detail


def test_missing_model_shard_fails(cluster: Cluster, tmp_path: Path) -> None:
    shards = cached_model(TinyModelSpec(name="tiny-sharded", shards=3))
    for shard in shards:
        shutil.copy(shard, tmp_path / shard.name)
    (tmp_path / shards[1].name).unlink()
    cluster.write_profile("sharded", tmp_path / shards[0].name)
    code, _, checks = health(cluster, "sharded", "--quick")
    assert code == 1
    [(host, _, detail)] = [f for f in failures(checks) if f[1] == "model"]
    assert host == "evo" and str(tmp_path / shards[1].name) in detail
    assert shards[0].name not in detail


def test_taken_port_fails(cluster: Cluster, tiny_model: Path) -> None:
    cluster.write_profile("tiny", tiny_model)
    bee = cluster.bed.host("bee")
    with cluster.bed.hold_port("bee", bee.link_address, 50052):
        code, _, checks = health(cluster, "tiny", "--quick")
    assert code == 1
    [(host, name, detail)] = failures(checks)
    assert (host, name) == ("bee", "port 50052")
    assert f"{bee.link_address}:50052 for rpc-server is taken" in detail


def test_split_that_does_not_fit_the_budget_fails(cluster: Cluster, tiny_model: Path) -> None:
    cluster.write_inventory(bee={"memory_budget_gib": 0.1})
    cluster.write_profile("tiny", tiny_model)
    code, _, checks = health(cluster, "tiny", "--quick")
    assert code == 1
    [(host, name, detail)] = failures(checks)
    assert (host, name) == ("bee", "fit")
    assert detail.startswith("needs ") and detail.endswith("on bee, has 102.4 MiB")


def test_unknown_host_key_is_refused_unless_opted_out(cluster: Cluster, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    cluster.write_inventory(bee={"known_hosts": empty})
    code, _, checks = health(cluster, "--quick")
    assert code == 1
    [(host, _, detail)] = [f for f in failures(checks) if f[1] == "ssh"]
    assert host == "bee" and "host key" in detail and "not verified" in detail
    status = cluster.run("status")
    assert status.returncode == 3  # unreachable host: the transport exit code

    cluster.write_inventory(bee={"known_hosts": empty, "insecure_skip_host_key_check": True})
    result = cluster.run("-v", "health", "--json", "--quick")
    assert json.loads(result.stdout)["ok"] is True
    assert "host key check disabled by configuration" in result.stderr
