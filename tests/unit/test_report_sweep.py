"""A sweep's report read from a real store: the Markdown (verdict, setup, the table in split
order, pruned and failed points, coverage), the plot, and the files ``report`` writes for
sweeps and screens, sanitized or not."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import build_record, build_short

from cluster.report.files import report_files
from cluster.report.plots import sweep_plot
from cluster.report.points import points
from cluster.report.sanitize import Sanitizer
from cluster.report.sweep import sweep_markdown
from cluster.report.tables import results_markdown, run_document
from cluster.store import Store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODEL = "/home/alice/models/minimax/MiniMax-M2.5-REAP-139B-A10B-Q8_0.gguf"
HOSTS: dict[str, dict[str, Any]] = {
    "evo": {
        "name": "evo",
        "transport": "ssh",
        "ssh_target": "evo.tail4e2a1.ts.net",
        "user": "alice",
        "ssh_key": "/home/alice/.ssh/id_ed25519_cluster",
        "known_hosts": "/home/alice/.ssh/known_hosts_cluster",
        "link_address": "10.77.0.1",
        "link_interface": "thunderbolt0",
        "rpc_port": 50052,
        "llama_bin_dir": "/home/alice/src/llama.cpp/build-hip/bin",
        "env": {},
        "rpc_devices": [],
        "local_devices": 0,
        "memory_budget_gib": 64.0,
        "run_dir": ".local/state/clusterctl",
        "rpc_cache_dir": "/home/alice/.cache/llama-rpc",
    },
    "bee": {
        "name": "bee",
        "transport": "ssh",
        "ssh_target": "bob@192.168.1.21",
        "user": "bob",
        "ssh_key": "/home/alice/.ssh/id_bee",
        "known_hosts": None,
        "link_address": "10.77.0.2",
        "link_interface": "thunderbolt0",
        "rpc_port": 50052,
        "llama_bin_dir": "/var/home/bob/llama.cpp/build/bin",
        "env": {},
        "rpc_devices": [],
        "local_devices": 0,
        "memory_budget_gib": None,
        "run_dir": ".local/state/clusterctl",
        "rpc_cache_dir": None,
    },
}
PROFILE = {
    "name": "minimax-q8",
    "model": MODEL,
    "rpc_hosts": ["evo", "bee"],
    "tensor_split": [1.0, 1.0],
    "n_gpu_layers": 99,
    "ctx_size": 100000,
    "parallel": 2,
    "flash_attn": "on",
    "direct_io": True,
    "extra_args": ["--no-mmap", "-ub", "2048"],
}
MEASURE = {"shape": "random", "tokens": 512, "gen": 128, "repeat": 3, "warmup": 1}
OBJECTIVE = {"metric": "tg_tps", "weights": None}
BUILDS = {host: build_record("0c1e570") for host in ("evo", "bee")}
BUILD_TEXT = f"build {build_short('0c1e570')}, RPC 3.0.0 (version: 0 (0c1e570))"
OOM = (
    "llama-server on evo: allocating 70123.45 MiB on device 0: hipMalloc failed: "
    f"out of memory ({MODEL})"
)
PRUNED_WHY = "needs 71.3 GiB on evo, has 64.0 GiB"
TAILS = {
    "llama-server@evo": "load_tensors: hipMalloc failed: out of memory\n",
    "rpc-server@bee": "accepted a client from 10.77.0.1\n",
}
# What the evaluated splits measured, in the order the sweep evaluated them (not split order).
POINTS: list[tuple[str, str, float, float, float]] = [
    ("1/1", "pass", 321.8, 15.10, 192.4),
    ("0.6/1.4", "pass", 288.2, 13.92, 188.0),
    ("0.8/1.2", "pass", 305.5, 14.71, 190.3),
    ("1.2/0.8", "pass", 332.36, 15.35, 195.1),
    ("1.4/0.6", "fail", 0.0, 0.0, 0.0),
    ("1.6/0.4", "pruned", 0.0, 0.0, 0.0),
]
SUMMARY = {
    "best": {"split": "1.2/0.8", "objective": 15.35, "pp_tps": 332.36, "tg_tps": 15.35},
    "baseline": {"split": "1/1", "objective": 15.10},
    "planned": 6,
    "covered": 6,
    "pass": 4,
    "fail": 1,
    "pruned": 1,
    "stopped": "done",
}


def stat(median: float, cv: float = 0.01) -> dict[str, Any]:
    return {
        "n": 3,
        "median": median,
        "min": median * (1 - 2 * cv),
        "max": median * (1 + cv),
        "mean": median,
        "stddev": median * cv,
        "cv": cv,
        "noisy": cv > 0.10,
    }


def point_metrics(pp: float, tg: float, load: float, tg_cv: float = 0.01) -> dict[str, Any]:
    summary = {
        "pp_tps": stat(pp),
        "tg_tps": stat(tg, tg_cv),
        "ttft_s": stat(512 / pp),
        "itl_ms": stat(1000 / tg),
        "e2e_s": stat(512 / pp + 128 / tg),
    }
    return {
        "calibrated": 512,
        "sent_tokens": [512],
        "calibration_probes": 2,
        "prompt_n": 512,
        "cache_n_max": 0,
        "predicted_n": 128,
        "summary": summary,
        "noisy": sorted(name for name, s in summary.items() if s["noisy"]),
        "disagreements": [],
        "samples": [],
        "load_seconds": load,
        "objective": tg,
    }


def split_spec(split: str) -> dict[str, Any]:
    return {
        "config": "minimax-q8",
        "profile": "minimax-q8",
        "ctx_size": 100000,
        "parallel": 2,
        "split": split,
        "proportions": [float(part) for part in split.split("/")],
        "shape": "random",
        "target": 512,
        "gen": 128,
        "attempt": 1,
        "concurrency": 1,
    }


def record_sweep(
    store: Store,
    points: list[tuple[str, str, float, float, float]] = POINTS,
    summary: dict[str, Any] | None = None,
    *,
    profile: dict[str, Any] | None = None,
    hosts: dict[str, Any] | None = None,
    status: str = "ok",
    noisy_split: str | None = None,
    repeats: int = 3,
    traffic: Callable[[str], dict[str, Any]] | None = None,
) -> int:
    """A sweep as the sweep job records it: attempts with builds for every load, one result
    per split (passes with metrics, a failed load with its tails, a pruned point)."""
    config = {
        "sweep": {"name": "minimax-split", "profile": "minimax-q8", "measure": MEASURE},
        "profile": profile or PROFILE,
        "hosts": hosts or HOSTS,
        "objective": OBJECTIVE,
    }
    run_id = store.start_run("sweep", "minimax-q8", config)
    number = 0
    for split, outcome, pp, tg, load in points:
        if outcome != "pruned":
            number += 1
            attempt = store.start_attempt(run_id, number, split, {})
            if outcome == "pass":
                store.finish_attempt(attempt, "ready", load_seconds=load, builds=BUILDS)
            else:
                store.finish_attempt(
                    attempt, "failed", failure_class="oom", evidence=OOM, builds=BUILDS
                )
        if outcome == "pass":
            cv = 0.14 if split == noisy_split else 0.005
            metrics = point_metrics(pp, tg, load, tg_cv=cv)
            if repeats == 1:  # one request per point: no spread measured
                for entry in metrics["summary"].values():
                    entry.update(n=1, cv=None, stddev=0.0, noisy=False)
            store.record_result(
                run_id,
                f"split={split}",
                "pass",
                spec=split_spec(split),
                metrics={**metrics, **({"traffic": traffic(split)} if traffic else {})},
            )
        elif outcome == "fail":
            store.record_result(
                run_id,
                f"split={split}",
                "fail",
                spec=split_spec(split),
                metrics={"load_seconds": None, "objective": None},
                failure_class="oom",
                evidence=OOM,
                log_tails=TAILS,
            )
        else:
            store.record_result(
                run_id, f"split={split}", "pruned", spec=split_spec(split), evidence=PRUNED_WHY
            )
    store.event(run_id, "point", split="1.2/0.8", host="evo")
    store.finish_run(run_id, status, SUMMARY if summary is None else summary)
    return run_id


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "state") as s:
        yield s


def markdown_of(store: Store, run_id: int) -> str:
    run = store.run(run_id)
    assert run is not None
    return sweep_markdown(run, store.results(run_id), store.attempts(run_id))


def table_rows(markdown: str) -> list[str]:
    lines = markdown.splitlines()
    start = lines.index("| split | pp t/s | tg t/s | load s | objective | status |")
    assert lines[start + 1] == "|---|---:|---:|---:|---:|---|"
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def section(markdown: str, heading: str) -> str:
    return markdown.split(f"## {heading}\n")[1].split("\n## ")[0]


def test_table_lists_every_split_in_split_order(store: Store) -> None:
    markdown = markdown_of(store, record_sweep(store))
    assert table_rows(markdown) == [
        "| 0.6/1.4 | 288.2 | 13.92 | 188.0 | 13.92 | PASS |",
        "| 0.8/1.2 | 305.5 | 14.71 | 190.3 | 14.71 | PASS |",
        "| 1/1 | 321.8 | 15.10 | 192.4 | 15.10 | PASS, current |",
        "| 1.2/0.8 | 332.4 | 15.35 | 195.1 | 15.35 | PASS, best |",
        "| 1.4/0.6 | - | - | - | - | FAIL (oom) |",
        "| 1.6/0.4 | - | - | - | - | PRUNED |",
    ]
    assert "noisy" not in markdown


def test_a_noisy_point_the_best_does_not_clearly_beat_leaves_the_best_unsettled(
    store: Store,
) -> None:
    """0.8/1.2's repeats vary by 14%: 1.2/0.8's 4.3% lead over it is within the noise
    (2 standard errors of the difference: 2 * sqrt(0.005**2 / 3 + 0.14**2 / 3) = 16.2%)."""
    markdown = markdown_of(store, record_sweep(store, noisy_split="0.8/1.2"))
    assert table_rows(markdown) == [
        "| 0.6/1.4 | 288.2 | 13.92 | 188.0 | 13.92 | PASS |",
        "| 0.8/1.2 | 305.5 | 14.71† | 190.3 | 14.71 | PASS, within noise |",
        "| 1/1 | 321.8 | 15.10 | 192.4 | 15.10 | PASS, current |",
        "| 1.2/0.8 | 332.4 | 15.35 | 195.1 | 15.35 | PASS, highest |",
        "| 1.4/0.6 | - | - | - | - | FAIL (oom) |",
        "| 1.6/0.4 | - | - | - | - | PRUNED |",
    ]
    assert "† noisy: coefficient of variation above 10%" in markdown
    assert (
        "No split is better than the noise: `1.2/0.8` scored highest (objective 15.35 tg t/s), "
        "but `0.8/1.2` (14.71, 4.4% lower; a lead counts above 16.2%) is within the noise of "
        "it. A lead counts when it is more than 2 standard errors of the difference, from the "
        "repeats' coefficients of variation.\n"
    ) in markdown
    assert "Best split" not in markdown


def test_with_one_repeat_a_small_lead_is_not_a_best_and_the_current_split_stays(
    store: Store,
) -> None:
    """repeat 1 on a tiny model: the noise is unknown, so a lead of less than 10% crowns
    nothing, and the current split, among the ties, is kept."""
    run_id = record_sweep(store, repeats=1)
    markdown = markdown_of(store, run_id)
    first = markdown.split("\n\n")[1]
    assert first.startswith("No split is better than the noise: `1.2/0.8` scored highest")
    assert "`1/1` (15.10, 1.7% lower; a lead counts above 10.0%)" in first
    assert "`0.8/1.2` (14.71, 4.4% lower; a lead counts above 10.0%)" in first
    assert "`0.6/1.4` (13.92, 10.3% lower" not in first  # beaten by more than 10%
    assert "With a single repeat the noise is unknown, so a lead must be more than 10%" in first
    assert first.endswith("The profile's current split `1/1` is among them: keep it.")
    rows = table_rows(markdown)
    assert rows[0].endswith("| PASS |")
    assert rows[2].endswith("| PASS, within noise, current |")
    assert rows[3].endswith("| PASS, highest |")


def minimax_traffic(bee_gbs: float | None = 256.0) -> Callable[[str], dict[str, Any]]:
    """MiniMax REAP Q8's ~10.6 GB read per token (10B active parameters in Q8_0), shared by
    the split between evo and bee; the head's CPU reads one embedding row."""

    def traffic(split: str) -> dict[str, Any]:
        evo, bee = (float(part) for part in split.split("/"))
        total = 10_600_000_000
        on_evo = round(total * evo / (evo + bee))
        devices = [
            {"host": "evo", "label": "RPC0", "bytes": on_evo - 6144, "bandwidth_gbs": 256.0},
            {"host": "bee", "label": "RPC1", "bytes": total - on_evo, "bandwidth_gbs": bee_gbs},
            {"host": "evo", "label": "CPU", "bytes": 6144, "bandwidth_gbs": 256.0},
        ]
        return {
            "bytes_per_token": total,
            "expert_count": 256,
            "expert_used_count": 8,
            "devices": devices,
        }

    return traffic


def test_table_shows_bandwidth_and_fraction_of_the_peak(store: Store) -> None:
    markdown = markdown_of(store, record_sweep(store, traffic=minimax_traffic()))
    lines = markdown.splitlines()
    start = lines.index(
        "| split | pp t/s | tg t/s | load s | objective | GB/s | % peak | status |"
    )
    assert lines[start + 1] == "|---|---:|---:|---:|---:|---:|---:|---|"
    # 15.35 tok/s x 10.6 GB = 162.7 GB/s, 64% of the 256 GB/s both hosts have.
    assert "| 1.2/0.8 | 332.4 | 15.35 | 195.1 | 15.35 | 163 | 64% | PASS, best |" in lines
    assert "| 1.4/0.6 | - | - | - | - | - | - | FAIL (oom) |" in lines
    assert "| 1.6/0.4 | - | - | - | - | - | - | PRUNED |" in lines
    setup = section(markdown, "Setup")
    assert "- weights read per generated token: 10.6 GB (MoE: 8 of 256 experts per token)" in setup
    assert "`1.2/0.8` 256 GB/s" in setup


def test_unknown_peak_is_said_not_guessed(store: Store) -> None:
    markdown = markdown_of(store, record_sweep(store, traffic=minimax_traffic(bee_gbs=None)))
    assert "| 1.2/0.8 | 332.4 | 15.35 | 195.1 | 15.35 | 163 | ? | PASS, best |" in markdown
    assert "`1/1` unknown (no memory_bandwidth_gbs for bee)" in markdown


def test_best_split_and_its_gain_over_the_current_split(store: Store) -> None:
    markdown = markdown_of(store, record_sweep(store))
    assert markdown.startswith("# sweep run 1: minimax-q8\n\n")
    # 15.35 against 15.10 is +1.66%.
    assert (
        "Best split: `1.2/0.8` (objective 15.35 tg t/s), +1.7% over the current split `1/1` "
        "(15.10 tg t/s).\n"
    ) in markdown


def test_setup_names_hosts_builds_model_flags_objective_and_measurement(store: Store) -> None:
    setup = section(markdown_of(store, record_sweep(store)), "Setup")
    assert "- profile: `minimax-q8`" in setup
    assert f"- host `evo`: {BUILD_TEXT}" in setup
    assert f"- host `bee`: {BUILD_TEXT}" in setup
    # The model's file name, not where it lives.
    assert "- model: `MiniMax-M2.5-REAP-139B-A10B-Q8_0.gguf`" in setup
    assert "/home/alice" not in setup
    assert (
        "- server: ctx size 100000, parallel 2, flash attn on, direct I/O on, "
        "extra args `--no-mmap -ub 2048`"
    ) in setup
    assert "- current split: `1/1` (proportions for `evo`, `bee`)" in setup
    assert "- objective: median tg t/s" in setup
    assert (
        "- measurement: shape `random`, 512 prompt tokens, 128 generated, "
        "median of 3 repeats after 1 warm-up"
    ) in setup
    assert "(0s, ok)" in setup


def test_pruned_and_failed_points_say_why_and_coverage_says_how_far(store: Store) -> None:
    markdown = markdown_of(store, record_sweep(store))
    missed = section(markdown, "Pruned and failed")
    assert f"- `1.4/0.6`: fail (oom): {OOM}" in missed
    assert f"- `1.6/0.4`: pruned: {PRUNED_WHY}" in missed
    assert "1.2/0.8" not in missed
    coverage = section(markdown, "Coverage")
    assert "- covered 6 of 6 planned splits (4 passed, 1 failed, 1 pruned)" in coverage
    assert "- stopped: done (every planned split was evaluated)" in coverage


def test_current_split_not_measured_is_said(store: Store) -> None:
    points = [p for p in POINTS if p[0] != "1/1"]
    summary = {**SUMMARY, "baseline": {"split": "1/1", "objective": None}, "covered": 5}
    markdown = markdown_of(store, record_sweep(store, points, summary))
    assert (
        "Best split: `1.2/0.8` (objective 15.35 tg t/s); "
        "the current split `1/1` was not measured.\n"
    ) in markdown
    assert "(current)" not in markdown
    assert "- covered 5 of 6 planned splits" in markdown


def test_current_split_that_failed_is_said(store: Store) -> None:
    profile = {**PROFILE, "tensor_split": [1.4, 0.6]}
    summary = {**SUMMARY, "baseline": None}  # the split comes from the profile then
    markdown = markdown_of(store, record_sweep(store, POINTS, summary, profile=profile))
    assert "; the current split `1.4/0.6` failed (oom).\n" in markdown
    assert "| 1.4/0.6 | - | - | - | - | FAIL (oom), current |" in table_rows(markdown)


def test_best_is_the_current_split(store: Store) -> None:
    points = [("1/1", "pass", 330.0, 15.9, 190.0), *POINTS[1:4]]
    summary = {**SUMMARY, "best": {"split": "1/1", "objective": 15.9}, "planned": 4}
    markdown = markdown_of(store, record_sweep(store, points, summary))
    assert "Best split: `1/1` (objective 15.90 tg t/s), the profile's current split.\n" in markdown
    assert "| 1/1 | 330.0 | 15.90 | 190.0 | 15.90 | PASS, best, current |" in markdown


def test_interrupted_sweep_without_a_best_in_its_summary(store: Store) -> None:
    """A sweep killed before its summary named a best: the best is read from the points,
    and the coverage says it was interrupted."""
    points = POINTS[:3]
    summary = {"best": None, "planned": None, "covered": 3, "stopped": "running"}
    markdown = markdown_of(store, record_sweep(store, points, summary, status="interrupted"))
    assert "Best split: `1/1` (objective 15.10 tg t/s), the profile's current split." in markdown
    coverage = section(markdown, "Coverage")
    assert "- covered 3 splits, adaptive search with no fixed plan (3 passed" in coverage
    assert "- stopped: interrupted (the sweep was interrupted)" in coverage


def test_nothing_passed(store: Store) -> None:
    points = POINTS[4:]
    summary = {**SUMMARY, "best": None, "baseline": {"split": "1/1", "objective": None}}
    markdown = markdown_of(store, record_sweep(store, points, summary))
    assert "No split passed: there is no best split." in markdown
    assert len(table_rows(markdown)) == 2


def assert_png(path: Path, min_bytes: int = 15_000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    # IHDR: width and height at 8 x 5 inches, 120 dpi.
    assert int.from_bytes(data[16:20], "big") == 960
    assert int.from_bytes(data[20:24], "big") == 600


def test_sweep_plot_is_a_readable_png(store: Store, tmp_path: Path) -> None:
    run_id = record_sweep(store)
    run = store.run(run_id)
    assert run is not None
    path = sweep_plot(run, store.results(run_id), tmp_path / "plots" / "sweep.png")
    assert path == tmp_path / "plots" / "sweep.png"
    assert_png(path)


def test_sweep_plot_of_three_devices_and_of_nothing_passed(store: Store, tmp_path: Path) -> None:
    three = [
        ("1/1/1", "pass", 300.0, 12.0, 250.0),
        ("1.2/0.9/0.9", "pass", 310.0, 12.4, 251.0),
        ("0.9/1.2/0.9", "fail", 0.0, 0.0, 0.0),
        ("1.5/0.75/0.75", "pruned", 0.0, 0.0, 0.0),
    ]
    profile = {**PROFILE, "tensor_split": [1.0, 1.0, 1.0], "rpc_hosts": ["evo", "bee", "cat"]}
    hosts = {**HOSTS, "cat": {**HOSTS["bee"], "name": "cat"}}
    summary = {
        **SUMMARY,
        "best": {"split": "1.2/0.9/0.9", "objective": 12.4},
        "baseline": {"split": "1/1/1", "objective": 12.0},
    }
    run_id = record_sweep(store, three, summary, profile=profile, hosts=hosts)
    run = store.run(run_id)
    assert run is not None
    assert_png(sweep_plot(run, store.results(run_id), tmp_path / "three.png"))
    markdown = markdown_of(store, run_id)
    assert "- current split: `1/1/1` (proportions for `evo`, `bee`, `cat`)" in markdown
    assert "+3.3% over the current split `1/1/1`" in markdown
    assert [row.split(" | ")[0] for row in table_rows(markdown)] == [
        "| 0.9/1.2/0.9",
        "| 1/1/1",
        "| 1.2/0.9/0.9",
        "| 1.5/0.75/0.75",
    ]

    failed = record_sweep(store, POINTS[4:], {**SUMMARY, "best": None})
    run = store.run(failed)
    assert run is not None
    assert_png(sweep_plot(run, store.results(failed), tmp_path / "none.png"), 10_000)


def test_report_files_for_a_sweep(store: Store, tmp_path: Path) -> None:
    run_id = record_sweep(store)
    run = store.run(run_id)
    assert run is not None
    results, attempts, events = (
        store.results(run_id),
        store.attempts(run_id),
        store.events(run_id),
    )
    out = tmp_path / "report-1"
    written = report_files(run, results, attempts, events, out, None)
    assert [path.name for path in written] == [
        "report.md",
        "report.png",
        "results.json",
        "results.csv",
    ]
    assert (out / "report.md").read_text() == sweep_markdown(run, results, attempts)
    assert_png(out / "report.png")
    document = json.loads((out / "results.json").read_text())
    assert document == json.loads(json.dumps(run_document(run, results, attempts, events)))
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    by_key = {row["key"]: row for row in rows}
    assert [row["key"] for row in rows] == [result.key for result in results]
    best = by_key["split=1.2/0.8"]
    assert float(best["tg_tps"]) == 15.35
    assert float(best["pp_tps"]) == 332.36
    assert float(best["load_seconds"]) == 195.1
    assert float(best["objective"]) == 15.35
    assert by_key["split=1.6/0.4"]["status"] == "pruned"
    assert by_key["split=1.6/0.4"]["evidence"] == PRUNED_WHY
    assert by_key["split=1.4/0.6"]["tg_tps"] == ""


SENSITIVE = [
    "evo",
    "bee",
    "alice",
    "bob",
    "10.77.0.1",
    "10.77.0.2",
    "192.168.1.21",
    "tail4e2a1",
    "/home/",
    "/var/home",
    "id_ed25519_cluster",
    "known_hosts_cluster",
    "id_bee",
    "build-hip",
    "llama-rpc",
    "models/minimax",
]


def test_sanitized_report_files_hold_no_sensitive_string(store: Store, tmp_path: Path) -> None:
    run_id = record_sweep(store)
    run = store.run(run_id)
    assert run is not None
    results, attempts = store.results(run_id), store.attempts(run_id)
    out = tmp_path / "public"
    written = report_files(
        run, results, attempts, store.events(run_id), out, Sanitizer.for_run(run)
    )
    for path in written:
        if path.suffix == ".png":
            continue
        text = path.read_text()
        for secret in SENSITIVE:
            assert secret not in text, f"{secret!r} in {path.name}"
    markdown = (out / "report.md").read_text()
    # What a reader needs survives: splits, numbers, builds, the model's file name.
    assert table_rows(markdown)[3] == "| 1.2/0.8 | 332.4 | 15.35 | 195.1 | 15.35 | PASS, best |"
    assert f"- host `host1`: {BUILD_TEXT}" in markdown
    assert "- model: `MiniMax-M2.5-REAP-139B-A10B-Q8_0.gguf`" in markdown
    assert "- `1.6/0.4`: pruned: needs 71.3 GiB on host1, has 64.0 GiB" in markdown
    # A stand-in outside a code span is escaped, or Markdown renderers would eat it as a tag.
    assert "(&lt;models&gt;/MiniMax-M2.5-REAP-139B-A10B-Q8_0.gguf)" in markdown
    assert "<models>" not in markdown
    document = json.loads((out / "results.json").read_text())
    assert list(document["run"]["config"]["hosts"]) == ["host1", "host2"]
    assert document["results"][0]["metrics"]["summary"]["tg_tps"]["median"] == 15.10
    assert document["results"][4]["log_tails"] == {
        "llama-server@host1": "load_tensors: hipMalloc failed: out of memory\n",
        "rpc-server@host2": "accepted a client from <addr>\n",
    }
    assert_png(out / "report.png")


def test_report_files_for_a_screen_use_the_screen_markdown(store: Store, tmp_path: Path) -> None:
    run_id = store.start_run("screen", None, {"playbook": "shapes", "profiles": {}})
    for index, (shape, status) in enumerate((("opt", "pass"), ("natural", "fail"))):
        spec = {
            **split_spec("1/1"),
            "config": "reap-q8-np2",
            "shape": shape,
            "target": 45000,
            "gen": 32,
        }
        store.record_result(
            run_id,
            f"reap-q8-np2/{shape}/45000/g32/c1/a1",
            status,
            spec=spec,
            metrics=point_metrics(300.0 + index, 14.0, 0.0) if status == "pass" else None,
            failure_class=None if status == "pass" else "transport_drop",
            evidence=None if status == "pass" else "RPC connection to 10.77.0.2:50052 dropped",
        )
    run = store.run(run_id)
    assert run is not None
    results, attempts = store.results(run_id), store.attempts(run_id)
    written = report_files(run, results, attempts, [], tmp_path / "screen", None)
    assert [path.name for path in written] == [
        "report.md",
        "report.png",
        "results.json",
        "results.csv",
    ]
    assert (tmp_path / "screen" / "report.md").read_text() == results_markdown(
        run, results, attempts
    )
    data = (tmp_path / "screen" / "report.png").read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 15_000


def test_a_run_without_results_has_no_plot(store: Store, tmp_path: Path) -> None:
    run_id = store.start_run("bench", "minimax-q8", {"profile": PROFILE})
    run = store.run(run_id)
    assert run is not None
    written = report_files(run, [], [], [], tmp_path / "empty", None)
    assert [path.name for path in written] == ["report.md", "results.json", "results.csv"]


def test_importing_the_report_does_not_import_matplotlib() -> None:
    code = "import sys, cluster.report.files; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(("metric", "cv"), [("mixed", 0.03), ("tg_tps", 0.03), ("pp_tps", 0.01)])
def test_a_points_noise_is_that_of_its_objective(store: Store, metric: str, cv: float) -> None:
    """pp's repeats vary by 1%, tg's by 3%: a mixed objective takes the larger."""
    run_id = store.start_run("sweep", "p", {"objective": {"metric": metric}})
    metrics = point_metrics(300.0, 15.0, 100.0, tg_cv=0.03)
    store.record_result(run_id, "split=1/1", "pass", spec=split_spec("1/1"), metrics=metrics)
    run = store.run(run_id)
    assert run is not None
    [point] = points(run, store.results(run_id))
    assert (point.cv, point.repeats) == (cv, 3)


def outcome(store: Store, run_id: int, capsys: pytest.CaptureFixture[str]) -> list[str]:
    from cluster.cli.sweep import _judged, _say_outcome

    run = store.run(run_id)
    assert run is not None
    _say_outcome(run, _judged(run, store.results(run_id)))
    return capsys.readouterr().out.splitlines()


def test_the_sweeps_last_word_crowns_a_best_only_beyond_the_noise(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    settled = outcome(store, record_sweep(store), capsys)
    assert settled[1] == "best split 1.2/0.8: objective 15.35 (+1.7% against the profile's 1/1)"
    noisy = outcome(store, record_sweep(store, repeats=1), capsys)
    assert noisy[1] == (
        "no split is better than the noise: 1.2/0.8 scored highest (objective 15.35), "
        "but 1/1, 0.8/1.2 are within the noise of it"
    )
