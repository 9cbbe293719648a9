"""Tensor-split sweeps on the real testbed: grid, pruning, a killed controller and resume,
a worker crash at one point, --until, and the report files against the store."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import time
from pathlib import Path

import pytest
from support import Cluster

from cluster.config.loader import load_inventory, load_profile
from cluster.config.resolve import devices_for
from cluster.llamacpp.gguf_info import GiB, estimate_memory, read_model_info
from cluster.measure.bandwidth import token_bytes

pytestmark = pytest.mark.testbed

SPLITS = ["0.6/1.4", "0.8/1.2", "1/1", "1.2/0.8", "1.4/0.6"]


def write_sweep(
    cluster: Cluster, name: str, *, gen: int = 32, repeat: int = 2, extra: str = ""
) -> None:
    folder = cluster.playbooks / "sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.toml").write_text(
        'profile = "tiny"\nrange = { start = "0.6/1.4", stop = "1.4/0.6", step = 0.2 }\n'
        f"{extra}"
        f'[measure]\nshape = "random"\ntokens = 128\ngen = {gen}\nrepeat = {repeat}\nwarmup = 0\n'
        "stall_timeout_s = 20\nrequest_timeout_s = 120\n"
    )


def results(cluster: Cluster, run_id: int) -> list[dict[str, object]]:
    with cluster.store() as store:
        return [r.model_dump() for r in store.results(run_id)]


def last_sweep(cluster: Cluster) -> int:
    with cluster.store() as store:
        return store.runs(kind="sweep", limit=1)[0].id


def bee_needs(cluster: Cluster, model: Path) -> dict[str, int]:
    """What the memory estimate says bee needs for each split (the tiny model has only a
    few layers, so neighbouring splits can need the same)."""
    inventory = load_inventory(cluster.hosts_file)
    profile = load_profile(cluster.playbooks, "tiny")
    info = read_model_info([model])
    needs = {}
    for split in SPLITS:
        devices = devices_for(inventory, profile, [float(p) for p in split.split("/")])
        needs[split] = estimate_memory(
            info, devices, profile.ctx_size, profile.parallel, 99, "evo"
        )["bee"]
    return needs


def test_grid_sweep_prunes_reports_and_every_file_agrees_with_the_store(
    cluster: Cluster, tiny_model: Path, tmp_path: Path
) -> None:
    cluster.write_profile("tiny", tiny_model)
    needs = bee_needs(cluster, tiny_model)
    # A budget for bee between the largest need and the next: those splits cannot fit.
    largest, second = sorted(set(needs.values()))[-1:-3:-1]
    cluster.write_inventory(bee={"memory_budget_gib": (largest + second) / 2 / GiB})
    too_big = {split for split, need in needs.items() if need == largest}
    assert "0.6/1.4" in too_big and "1.4/0.6" not in too_big
    write_sweep(cluster, "grid")
    done = cluster.run("sweep", "grid", "--json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run"]["id"]
    points = {r["spec"]["split"]: r for r in results(cluster, run_id)}
    assert sorted(points) == sorted(SPLITS)
    for split in too_big:
        assert points[split]["status"] == "pruned"
        assert "on bee, has" in points[split]["evidence"]
    fitting = [split for split in SPLITS if split not in too_big]
    shares = set()
    for split in fitting:
        assert points[split]["status"] == "pass", points[split]
        assert points[split]["metrics"]["objective"] > 0
        assert points[split]["metrics"]["load_seconds"] > 0
        traffic = points[split]["metrics"]["traffic"]
        assert traffic["bytes_per_token"] == token_bytes(read_model_info([tiny_model]))
        shares.add(tuple(device["bytes"] for device in traffic["devices"]))
    assert len(shares) > 1  # each split places other bytes on evo and bee
    with cluster.store() as store:
        attempts = store.attempts(run_id)
    # Pruned splits never load; the others load once each.
    assert sorted(a.split for a in attempts) == sorted(fitting)

    out = tmp_path / "report"
    report = cluster.run("report", str(run_id), "--out", str(out))
    assert report.returncode == 0, report.stderr
    markdown = (out / "report.md").read_text()
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    document = json.loads((out / "results.json").read_text())
    png = (out / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    best = max(
        (r for r in points.values() if r["status"] == "pass"),
        key=lambda r: r["metrics"]["objective"],
    )
    # With two repeats of a tiny model the points may lie within each other's noise: then the
    # report names the highest split without crowning it (tests/unit/test_noise.py).
    highest = best["spec"]["split"]
    assert (
        f"Best split: `{highest}`" in markdown
        or f"No split is better than the noise: `{highest}` scored highest" in markdown
    ), markdown.splitlines()[2]
    by_split = {row["split"]: row for row in rows}
    assert set(by_split) == set(SPLITS)
    for split, point in points.items():
        assert by_split[split]["status"] == point["status"]
        if point["status"] == "pass":
            tg = point["metrics"]["summary"]["tg_tps"]["median"]
            assert float(by_split[split]["tg_tps"]) == pytest.approx(tg, rel=1e-6)
            assert f"| {split} |" in markdown
            assert by_split[split]["bytes_per_token"]
    assert {r["key"] for r in document["results"]} == {f"split={s}" for s in SPLITS}

    clean = tmp_path / "clean"
    sanitized = cluster.run("report", str(run_id), "--out", str(clean), "--sanitize")
    assert sanitized.returncode == 0, sanitized.stderr
    secrets = [str(cluster.bed.root), str(tiny_model.parent), "/root/"]
    for name in cluster.bed.names:
        host = cluster.bed.host(name)
        secrets += [str(host.link_address), str(host.mgmt_address), str(host.run_dir)]
    for path in clean.iterdir():
        if path.suffix in (".md", ".json", ".csv"):
            text = path.read_text()
            for secret in secrets:
                assert secret not in text, (path.name, secret)
            assert "evo" not in text and "bee" not in text, path.name


def test_killed_controller_resumes_with_every_point_once(
    cluster: Cluster, tiny_model: Path
) -> None:
    cluster.write_profile("tiny", tiny_model)
    write_sweep(cluster, "kill", gen=400)
    sweep = cluster.popen("sweep", "kill")
    try:
        cluster.wait_for_run(
            "sweep", sweep, lambda store, run_id: len(store.results(run_id)) >= 2,
            "2 points recorded", timeout=180,
        )  # fmt: skip
        sweep.send_signal(signal.SIGKILL)
    finally:
        sweep.kill()
        sweep.communicate(timeout=30)
    run_id = last_sweep(cluster)
    before = {r["key"]: r for r in results(cluster, run_id)}
    with cluster.store() as store:
        loads_before = len(store.attempts(run_id))
    assert 2 <= len(before) < len(SPLITS)

    resumed = cluster.run("sweep", "--resume", str(run_id))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming run {run_id}: {len(before)} point(s) recorded" in resumed.stderr
    # The bar counts the points recorded before the resume: it ends at 5/5.
    assert f"{len(SPLITS)}/{len(SPLITS)}" in resumed.stderr
    after = results(cluster, run_id)
    keys = [r["key"] for r in after]
    assert sorted(keys) == sorted(f"split={s}" for s in SPLITS)
    for r in after:
        if r["key"] in before:
            assert r == before[r["key"]]
    with cluster.store() as store:
        later = store.attempts(run_id)[loads_before:]
    done_splits = {r["spec"]["split"] for r in before.values()}
    # No point finished before the kill was loaded (or measured) again.
    assert not {a.split for a in later} & done_splits


def test_worker_crash_at_one_point_is_recorded_and_the_next_points_pass(
    cluster: Cluster, tiny_model: Path
) -> None:
    cluster.write_profile("tiny", tiny_model, ctx_size=8192, parallel=1)
    write_sweep(cluster, "crash", gen=3000, repeat=1)
    sweep = cluster.popen("sweep", "crash")
    try:
        # Once the first point's prompt is calibrated it generates 3000 tokens (seconds):
        # kill bee's worker meanwhile.
        cluster.wait_for_run(
            "sweep", sweep,
            lambda store, run_id: any(k == "calibrated" for _, k, _ in store.events(run_id)),
            "the first prompt calibrated",
        )  # fmt: skip
        time.sleep(1.0)
        os.kill(cluster.component_pid("bee", "rpc-server"), signal.SIGKILL)
        _, stderr = sweep.communicate(timeout=600)
    finally:
        sweep.kill()
        sweep.communicate(timeout=30)
    assert sweep.returncode == 0, stderr
    points = results(cluster, last_sweep(cluster))
    assert [p["status"] for p in points] == ["fail", "pass", "pass", "pass", "pass"], stderr
    assert points[0]["failure_class"] == "transport_drop"
    assert "bee/rpc-server" in points[0]["log_tails"]


def test_until_stops_gracefully_and_resume_covers_the_rest(
    cluster: Cluster, tiny_model: Path
) -> None:
    cluster.write_profile("tiny", tiny_model)
    write_sweep(cluster, "night")
    # The gate and the first point take a few seconds: a budget of 6 s covers at least
    # one point and stops before all five.
    first = cluster.run("sweep", "night", "--until", "6s")
    assert first.returncode == 0, first.stderr
    run_id = last_sweep(cluster)
    covered = len(results(cluster, run_id))
    assert 1 <= covered < len(SPLITS)
    assert f"stopped by --until after {covered} point(s)" in first.stderr
    assert f"clusterctl sweep --resume {run_id}" in first.stderr
    rest = cluster.run("sweep", "--resume", str(run_id), "--apply")
    assert rest.returncode == 0, rest.stderr
    assert len(results(cluster, run_id)) == len(SPLITS)
    with cluster.store() as store:
        run = store.run(run_id)
    assert run is not None and run.summary["stopped"] == "done"
    best = run.summary["best"]["split"]
    if best == "1/1":  # the profile's own split won: nothing to change, and that is said
        assert "already has split 1/1" in rest.stderr
    else:
        assert f'+tensor_split = "{best}"' in rest.stdout  # the change is shown ...
    if "no split is better than the noise" in rest.stdout:  # applied as asked, with a warning
        assert "warning: no split is better than the noise" in rest.stderr
    assert load_profile(cluster.playbooks, "tiny").tensor_split == [
        float(p) for p in best.split("/")
    ]  # ... and written
