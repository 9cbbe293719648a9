"""bench, screen, ceiling, runs and show on the real testbed, with a worker crash and a
controller killed mid-screen."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import Cluster

from cluster.llamacpp.gguf_info import read_model_info
from cluster.measure.bandwidth import TokenTraffic, token_bytes
from cluster.measure.calibrate import tolerance
from cluster.measure.shapes import BUILTIN_SHAPE_NAMES

pytestmark = pytest.mark.testbed


def write_screen(cluster: Cluster, name: str, text: str) -> None:
    folder = cluster.playbooks / "screens"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.toml").write_text(text)


def run_json(cluster: Cluster, run_id: int) -> dict[str, object]:
    shown = cluster.run("show", str(run_id), "--json")
    assert shown.returncode == 0, shown.stderr
    document: dict[str, object] = json.loads(shown.stdout)
    return document


def results_of(cluster: Cluster, run_id: int) -> list[dict[str, object]]:
    with cluster.store() as store:
        return [result.model_dump() for result in store.results(run_id)]


def last_run(cluster: Cluster) -> int:
    with cluster.store() as store:
        return store.runs(limit=1)[0].id


@pytest.mark.parametrize("build", ["current", "legacy"])
def test_every_shape_calibrates_within_tolerance_and_never_hits_the_cache(
    cluster: Cluster, tiny_model: Path, build: str
) -> None:
    cluster.write_inventory(builds={name: build for name in cluster.bed.names})
    cluster.write_profile("tiny", tiny_model, ctx_size=4096, parallel=2)
    write_screen(
        cluster,
        "shapes",
        f"shapes = {json.dumps(list(BUILTIN_SHAPE_NAMES))}\n"
        'targets = [100, 700, "80%"]\nattempts = 1\ngen = 8\n'
        "stall_timeout_s = 20\nrequest_timeout_s = 60\n"
        '[[configs]]\nname = "np2"\nprofile = "tiny"\n',
    )
    result = cluster.run("screen", "shapes")
    assert result.returncode == 0, result.stderr
    results = results_of(cluster, last_run(cluster))
    assert len(results) == len(BUILTIN_SHAPE_NAMES) * 3
    assert {r["spec"]["target"] for r in results} == {100, 700, 1638}  # 80% of 2048
    for r in results:
        spec, metrics = r["spec"], r["metrics"]
        assert r["status"] == "pass", r
        assert abs(metrics["calibrated"] - spec["target"]) <= tolerance(spec["target"]), r["key"]
        # The server evaluated exactly the tokens counted, none of them from its cache.
        assert metrics["prompt_n"] == metrics["calibrated"], r["key"]
        assert metrics["cache_n_max"] == 0, r["key"]
        assert metrics["predicted_n"] == 8


def test_bench_measures_and_reuses_a_serving_cluster(cluster: Cluster, tiny_model: Path) -> None:
    cluster.write_profile("tiny", tiny_model)
    up = cluster.run("up", "tiny")
    assert up.returncode == 0, up.stderr
    result = cluster.run(
        "bench", "tiny", "--shape", "natural", "--tokens", "300", "--gen", "24",
        "--repeat", "3", "--warmup", "1", "--concurrency", "2", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "reusing the running tiny" in result.stderr
    document = json.loads(result.stdout)
    (record,) = document["results"]
    metrics = record["metrics"]
    assert len(metrics["samples"]) == 3 * 2  # repeats x concurrency; the warm-up is not kept
    for name in ("pp_tps", "tg_tps", "ttft_s", "itl_ms", "e2e_s"):
        summary = metrics["summary"][name]
        assert summary["n"] == 6 and 0 < summary["min"] <= summary["median"] <= summary["max"]
    assert metrics["aggregate_tg_tps"] > 0
    assert metrics["cache_n_max"] == 0 and metrics["predicted_n"] == 24
    with cluster.store() as store:
        run = store.run(document["run"]["id"])
        assert run is not None and run.summary["reused_server"] is True
        assert store.attempts(run.id) == []  # nothing was launched

    too_many = cluster.run("bench", "tiny", "--concurrency", "3")
    assert too_many.returncode == 2
    assert "concurrency 3 is more than the profile's 2 parallel slot(s)" in too_many.stderr


def test_worker_crash_mid_case_is_a_transport_drop_and_the_screen_goes_on(
    cluster: Cluster, tiny_model: Path
) -> None:
    cluster.write_profile("tiny", tiny_model, ctx_size=8192, parallel=1)
    write_screen(
        cluster,
        "crash",
        'shapes = ["opt"]\ntargets = [64]\nattempts = 4\ngen = 6000\n'
        "stall_timeout_s = 20\nrequest_timeout_s = 120\n"
        '[[configs]]\nname = "np1"\nprofile = "tiny"\n',
    )
    screen = cluster.popen("screen", "crash")
    try:
        # Once the first case is recorded the second is generating: kill bee's worker.
        wait_for_results(cluster, 1, screen)
        time.sleep(1.0)
        os.kill(cluster.component_pid("bee", "rpc-server"), signal.SIGKILL)
        _, stderr = screen.communicate(timeout=300)
    finally:
        screen.kill()
        screen.communicate(timeout=30)
    assert screen.returncode == 1, stderr  # a case failed; the screen itself finished
    results = results_of(cluster, last_run(cluster))
    assert [r["status"] for r in results] == ["pass", "fail", "pass", "pass"], stderr
    failed = results[1]
    assert failed["failure_class"] == "transport_drop"
    assert "bee/rpc-server" in failed["log_tails"] and "evo/llama-server" in failed["log_tails"]
    with cluster.store() as store:
        attempts = store.attempts(last_run(cluster))
    # The cluster was launched for the screen and brought back once after the crash.
    assert [a.outcome for a in attempts] == ["ready", "ready"]


def wait_for_results(cluster: Cluster, count: int, process: subprocess.Popen[str]) -> int:
    return cluster.wait_for_run(
        "screen",
        process,
        lambda store, run_id: len(store.results(run_id)) >= count,
        f"{count} result(s) recorded",
    )


def test_killed_controller_loses_no_case_and_resume_runs_each_once(
    cluster: Cluster, tiny_model: Path
) -> None:
    cluster.write_profile("tiny", tiny_model, ctx_size=8192, parallel=1)
    write_screen(
        cluster,
        "long",
        'shapes = ["opt", "natural"]\ntargets = [64, 128]\nattempts = 2\ngen = 1500\n'
        "stall_timeout_s = 20\nrequest_timeout_s = 120\n"
        '[[configs]]\nname = "np1"\nprofile = "tiny"\n',
    )
    screen = cluster.popen("screen", "long")
    try:
        run_id = wait_for_results(cluster, 3, screen)
        screen.send_signal(signal.SIGKILL)
    finally:
        screen.kill()
        screen.communicate(timeout=30)
    before = {r["key"]: r for r in results_of(cluster, run_id)}
    assert len(before) >= 3 and all(r["status"] == "pass" for r in before.values())

    listed = json.loads(cluster.run("runs", "--json").stdout)
    assert {"id": run_id, "status": "interrupted"}.items() <= listed[0].items()

    resumed = cluster.run("screen", "--resume", str(run_id))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming run {run_id}: {len(before)} case(s) recorded" in resumed.stderr
    after = results_of(cluster, run_id)
    keys = [r["key"] for r in after]
    assert len(keys) == len(set(keys)) == 8  # 2 shapes x 2 targets x 2 attempts, once each
    for r in after:  # what was recorded before the kill is untouched
        if r["key"] in before:
            assert r == before[r["key"]]
    assert run_json(cluster, run_id)["run"]["status"] == "ok"  # type: ignore[index]


def test_ceiling_climbs_then_bisects_to_the_slot_context(
    cluster: Cluster, tiny_model: Path
) -> None:
    cluster.write_profile("tiny", tiny_model, ctx_size=2048, parallel=2)
    result = cluster.run(
        "ceiling", "tiny", "--shape", "opt", "--gen", "32", "--limit", "1600",
        "--resolution", "16", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    # One slot holds 1024 tokens: the largest prompt that still generates 32 is 992.
    assert 992 - 16 - tolerance(992) <= found["ceiling"] <= 992 + tolerance(992)
    statuses = [rung["status"] for rung in found["ladder"]]
    assert statuses[:3] == ["pass", "pass", "pass"] and "fail" in statuses
    with cluster.store() as store:
        failures = {r.failure_class for r in store.results(found["run"]) if r.status == "fail"}
    assert failures == {"context_full"}


def test_show_markdown_is_the_published_table(cluster: Cluster, tiny_model: Path) -> None:
    cluster.write_inventory(evo={"memory_bandwidth_gbs": 40}, bee={"memory_bandwidth_gbs": 40})
    cluster.write_profile("tiny", tiny_model)
    bench = cluster.run("bench", "tiny", "--tokens", "128", "--gen", "8", "--repeat", "2")
    assert bench.returncode == 0, bench.stderr
    run_id = last_run(cluster)
    # The bytes a token reads come from the model's headers, read on the head.
    expected = token_bytes(read_model_info([tiny_model]))
    [result] = results_of(cluster, run_id)
    traffic = TokenTraffic.model_validate(result["metrics"]["traffic"])  # type: ignore[index]
    assert traffic.bytes_per_token == expected
    assert [d.host for d in traffic.devices] == ["evo", "bee", "evo"]
    assert traffic.peak_gbs == pytest.approx(40.0)
    with cluster.store() as store:
        run = store.run(run_id)
    assert run is not None and run.summary["bytes_per_token"] == expected
    assert 0 < run.summary["bandwidth_fraction"] < 1
    assert "generation reads" in bench.stderr and "of 40 GB/s" in bench.stderr
    markdown = cluster.run("show", str(run_id), "--markdown")
    assert markdown.returncode == 0, markdown.stderr
    lines = markdown.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| config"))
    assert header.split("|")[1:6] == [" config ", " target ", " shape ", " calibrated ", " result "]
    row = lines[lines.index(header) + 2]
    assert row.startswith("| tiny | 128 | random |") and "PASS" in row
    assert header.endswith("| GB/s | % peak |") and row.endswith("% |")
    assert "- memory-bandwidth peak per split: `1/1` 40 GB/s" in lines

    missing = cluster.run("show", "999")
    assert missing.returncode == 2 and "no run 999" in missing.stderr


def test_health_passes_while_our_cluster_serves(cluster: Cluster, tiny_model: Path) -> None:
    cluster.write_profile("tiny", tiny_model)
    assert cluster.run("up", "tiny").returncode == 0
    health = cluster.run("health", "tiny", "--json")
    assert health.returncode == 0, health.stdout
    checks = json.loads(health.stdout)["checks"]
    ports = [c for c in checks if c["name"].startswith("port")]
    assert ports and all(c["value"] == "ours" for c in ports)
    assert all(c["value"] == "0" for c in checks if c["name"] == "strays")
