"""Reports read from a real store: the Markdown users publish, the terminal tables, the JSON
document and the log tails of ``show``, and the ``runs`` listing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from support import build_record, build_short

from cluster.report.tables import (
    log_tails_text,
    result_rows,
    results_markdown,
    results_table,
    run_document,
    runs_table,
)
from cluster.store import Store

BUILDS = {"a": build_record("b4721"), "b": build_record("b4721")}
EVIDENCE = (
    "llama-server@a: RPC connection to 10.0.0.2:50052 dropped during prompt processing "
    "(recv failed: Connection reset by peer) after 1.8s without a reply from rpc-server@b"
)
TAILS = {
    "llama-server@a": "prompt processing progress, n_past = 2048\nrecv failed\n",
    "rpc-server@b": "accepted client connection\nggml_backend_cuda: out of memory\n",
}


def stat(median: float, cv: float = 0.02, n: int = 3) -> dict[str, Any]:
    """A ``Summary.to_dict()`` as records.py keeps it."""
    return {
        "n": n,
        "median": median,
        "min": median * 0.97,
        "max": median * 1.03,
        "mean": median,
        "stddev": median * cv,
        "cv": cv,
        "noisy": cv > 0.10,
    }


def spec(config: str, shape: str, target: int, gen: int = 32) -> dict[str, Any]:
    return {
        "config": config,
        "profile": "dense-2x",
        "ctx_size": 8192,
        "parallel": 1,
        "split": "1/1",
        "shape": shape,
        "target": target,
        "gen": gen,
        "attempt": 1,
        "concurrency": 1,
    }


def key(s: dict[str, Any]) -> str:
    return (
        f"{s['config']}/{s['shape']}/{s['target']}/g{s['gen']}/c{s['concurrency']}/a{s['attempt']}"
    )


def metrics(
    *,
    calibrated: int,
    pp: float,
    tg: float,
    ttft: float,
    itl: float,
    ttft_cv: float = 0.02,
    cache_n: int = 0,
    predicted_n: int = 32,
    disagreements: tuple[str, ...] = (),
) -> dict[str, Any]:
    summary = {
        "pp_tps": stat(pp),
        "tg_tps": stat(tg),
        "ttft_s": stat(ttft, cv=ttft_cv),
        "itl_ms": stat(itl),
        "e2e_s": stat(ttft + itl * predicted_n / 1000),
    }
    sample = {
        "pp_tps": pp,
        "tg_tps": tg,
        "ttft_s": ttft,
        "e2e_s": ttft + 1.0,
        "itl_ms": itl,
        "client_pp_tps": pp * 0.9,
        "client_tg_tps": tg * 0.95,
        "prompt_n": calibrated - cache_n,
        "cache_n": cache_n,
        "predicted_n": predicted_n,
        "stop_type": "limit",
    }
    return {
        "calibrated": calibrated,
        "sent_tokens": [calibrated],
        "calibration_probes": 2,
        "prompt_n": calibrated - cache_n,
        "cache_n_max": cache_n,
        "predicted_n": predicted_n,
        "summary": summary,
        "noisy": sorted(name for name, s in summary.items() if s["noisy"]),
        "disagreements": list(disagreements),
        "samples": [sample, sample, sample],
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "state") as s:
        yield s


@pytest.fixture
def screen(store: Store) -> int:
    """A screen with two passes (one noisy, cached and short, its config name piped) and a
    transport drop, on a cluster that loaded on the second attempt."""
    run_id = store.start_run("screen", None, {"playbook": "kv-cache-types"})
    first = store.start_attempt(run_id, 1, "1/1", {"a": {"commit": "b4700"}})
    store.finish_attempt(first, "failed", failure_class="load_timeout", evidence="stalled")
    second = store.start_attempt(run_id, 2, "1/1", {})
    store.finish_attempt(second, "ready", load_seconds=12.34, builds=BUILDS)

    plain = spec("q8_0", "prose", 512)
    store.record_result(
        run_id,
        key(plain),
        "pass",
        spec=plain,
        metrics=metrics(calibrated=509, pp=812.345, tg=23.456, ttft=0.63123, itl=42.6789),
    )
    piped = spec("f16|fa", "prose", 2048)
    store.record_result(
        run_id,
        key(piped),
        "pass",
        spec=piped,
        metrics=metrics(
            calibrated=2051,
            pp=1500.0,
            tg=20.04,
            ttft=1.2345,
            itl=49.9,
            ttft_cv=0.25,
            cache_n=12,
            predicted_n=12,
            disagreements=("pp",),
        ),
    )
    dropped = spec("q4_0", "code", 4096)
    store.record_result(
        run_id,
        key(dropped),
        "fail",
        spec=dropped,
        failure_class="transport_drop",
        evidence=EVIDENCE,
        log_tails=TAILS,
    )
    store.event(run_id, "case_started", key=key(plain))
    store.event(run_id, "case_failed", key=key(dropped), failure_class="transport_drop")
    return run_id


def table_rows(markdown: str) -> list[str]:
    lines = markdown.splitlines()
    start = lines.index(
        "| config | target | shape | calibrated | result | pp t/s | tg t/s | TTFT s |"
    )
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_markdown_table_has_one_row_per_result_in_order(store: Store, screen: int) -> None:
    run = store.run(screen)
    assert run is not None
    markdown = results_markdown(run, store.results(screen), store.attempts(screen))
    assert markdown.startswith("# screen run 1: kv-cache-types\n\n3 cases: 2 pass, 1 fail\n")
    assert table_rows(markdown) == [
        "| q8_0 | 512 | prose | 509 | PASS | 812.3 | 23.5 | 0.631 |",
        "| f16\\|fa | 2048 | prose | 2051 | PASS | 1500.0 | 20.0 | 1.234† |",
        "| q4_0 | 4096 | code | - | FAIL (transport_drop) | - | - | - |",
    ]


def test_markdown_setup_failures_and_notes(store: Store, screen: int) -> None:
    run = store.run(screen)
    assert run is not None
    markdown = results_markdown(run, store.results(screen), store.attempts(screen))
    setup = markdown.split("## Setup")[1].split("## Results")[0]
    assert "- profile: `dense-2x`" in setup
    assert "- split: `1/1`" in setup
    assert "- ctx size / parallel slots: 8192 / 1" in setup
    # Builds from the last attempt that recorded them, not the first attempt's partial view.
    assert (
        f"- build on `a`: build {build_short('b4721')}, RPC 3.0.0 (version: 0 (b4721))" in setup
    )
    assert "b4700" not in setup
    assert "- load time: 12.3s (attempt 2)" in setup
    assert "- failed loads: attempt 1 (load_timeout)" in setup
    assert "- finished: not yet (running)" in setup

    failures = markdown.split("## Failures")[1]
    assert f"- `q4_0/code/4096/g32/c1/a1`: transport_drop: {EVIDENCE}" in failures
    # Log tails belong to ``show --logs``, not to a published document.
    assert "out of memory" not in markdown
    notes = markdown.split("## Notes")[1].split("## Failures")[0]
    assert "noisy: ttft_s" in notes
    assert "client/server disagree: pp" in notes
    assert "prompt cache hit: cache_n=12" in notes
    assert "short generation: 12/32" in notes
    assert "q8_0" not in notes  # nothing to say about a clean case
    assert "## Ceiling" not in markdown


def test_result_rows_flatten_medians_and_notes(store: Store, screen: int) -> None:
    plain, piped, dropped = result_rows(store.results(screen))
    assert plain["result"] == "PASS"
    assert plain["pp_tps"] == pytest.approx(812.345)
    assert plain["itl_ms"] == pytest.approx(42.6789)
    assert plain["notes"] == []
    assert plain["evidence"] is None
    assert piped["noisy"] == ["ttft_s"]
    assert piped["cv"]["ttft_s"] == pytest.approx(0.25)
    assert piped["notes"] == [
        "noisy: ttft_s",
        "client/server disagree: pp",
        "prompt cache hit: cache_n=12",
        "short generation: 12/32",
    ]
    assert dropped["result"] == "FAIL (transport_drop)"
    assert dropped["pp_tps"] is None
    assert dropped["calibrated"] is None
    assert dropped["evidence"] == EVIDENCE


def test_rich_results_table_renders_formatted_numbers(store: Store, screen: int) -> None:
    run = store.run(screen)
    assert run is not None
    console = Console(record=True, width=200)
    console.print(results_table(run, store.results(screen)))
    text = console.export_text()
    assert "screen run 1: kv-cache-types" in text
    assert text.count("PASS") == 2
    assert "FAIL (transport_drop)" in text
    for number in ("812.3", "23.5", "0.631", "42.68", "1.234", "49.90"):
        assert number in text
    assert "812.345" not in text
    assert "prompt cache hit: cache_n=12" in text
    assert "3 cases: 2 pass, 1 fail" in text
    # The evidence is cut to about 80 characters.
    assert EVIDENCE[:30] in text
    assert "rpc-server@b" not in text
    assert "…" in text


def test_run_document_round_trips_with_log_tails(store: Store, screen: int) -> None:
    run = store.run(screen)
    assert run is not None
    document = run_document(
        run, store.results(screen), store.attempts(screen), store.events(screen)
    )
    loaded = json.loads(json.dumps(document))
    assert loaded == document
    assert loaded["run"]["id"] == screen
    assert loaded["run"]["config"] == {"playbook": "kv-cache-types"}
    assert loaded["run"]["shown_status"] == "running"
    assert [a["outcome"] for a in loaded["attempts"]] == ["failed", "ready"]
    assert [r["status"] for r in loaded["results"]] == ["pass", "pass", "fail"]
    assert loaded["results"][2]["log_tails"] == TAILS
    assert loaded["results"][0]["metrics"]["summary"]["pp_tps"]["median"] == 812.345
    assert [e["kind"] for e in loaded["events"]] == ["case_started", "case_failed"]
    assert loaded["events"][1]["data"]["failure_class"] == "transport_drop"


def test_log_tails_text_shows_each_failing_component(store: Store, screen: int) -> None:
    text = log_tails_text(store.results(screen))
    assert text.startswith("=== q4_0/code/4096/g32/c1/a1: FAIL (transport_drop) ===\n")
    assert f"evidence: {EVIDENCE}" in text
    assert "--- llama-server@a ---\nprompt processing progress, n_past = 2048\nrecv failed" in text
    assert "--- rpc-server@b ---\naccepted client connection\nggml_backend_cuda" in text
    assert "q8_0" not in text  # passes have no tails to show
    assert log_tails_text(store.results(screen)[:2]) == "no failing cases\n"


def test_ceiling_markdown_has_the_ceiling_and_ladder(store: Store) -> None:
    run_id = store.start_run("ceiling", "moe-3x", {"profile": "moe-3x"})
    for target, status in ((4096, "pass"), (8192, "pass"), (16384, "fail")):
        s = {**spec("moe-3x", "prose", target), "profile": "moe-3x"}
        store.record_result(
            run_id,
            key(s),
            status,
            spec=s,
            metrics=metrics(calibrated=target + 3, pp=400.0, tg=10.0, ttft=2.0, itl=100.0)
            if status == "pass"
            else None,
            failure_class=None if status == "pass" else "oom",
            evidence=None if status == "pass" else "cudaMalloc failed: out of memory",
        )
    ladder = [
        {"target": 4096, "status": "pass"},
        {"target": 8192, "status": "pass"},
        {"target": 16384, "status": "fail"},
    ]
    store.finish_run(run_id, "ok", {"shape": "prose", "ceiling": 8192, "ladder": ladder})
    run = store.run(run_id)
    assert run is not None
    markdown = results_markdown(run, store.results(run_id), [])
    assert markdown.startswith("# ceiling run 1: moe-3x\n\n3 cases: 2 pass, 1 fail\n")
    ceiling = markdown.split("## Ceiling")[1]
    assert "Ceiling: 8192 tokens (shape `prose`)" in ceiling
    assert "- 4096: pass\n- 8192: pass\n- 16384: fail\n" in ceiling
    assert "- `moe-3x/prose/16384/g32/c1/a1`: oom: cudaMalloc failed: out of memory" in markdown


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()  # reaped: the pid names no process now
    return process.pid


def test_runs_table_shows_interrupted_duration_and_counts(store: Store, utc: None) -> None:
    launch = store.start_run("launch", None, {"profile": {"name": "dense-2x", "ctx_size": 8192}})
    store.finish_run(launch, "ok", {})
    killed = store.start_run("bench", "dense-2x", {"profile": "dense-2x"})
    live = store.start_run("screen", None, {"playbook": "kv-cache-types"})
    with sqlite3.connect(store.path) as db:
        db.execute(
            "UPDATE runs SET started_at = 1700000000, finished_at = 1700000192 WHERE id = ?",
            (launch,),
        )
        db.execute("UPDATE runs SET controller_pid = ? WHERE id = ?", (dead_pid(), killed))
    db.close()

    runs = store.runs()
    assert [run.id for run in runs] == [live, killed, launch]
    console = Console(record=True, width=200)
    console.print(runs_table(runs, {killed: (5, 1), live: (0, 0)}))
    rows = cells_by_run(console.export_text())
    assert rows[launch] == ["1", "launch", "dense-2x", "ok", "2023-11-14 22:13", "3m12s", "-"]
    assert rows[killed][1:4] == ["bench", "dense-2x", "interrupted"]
    assert rows[killed][5:] == ["-", "5 pass / 1 fail"]
    assert rows[live][1:4] == ["screen", "kv-cache-types", "running"]
    assert rows[live][5:] == ["-", "-"]


def cells_by_run(text: str) -> dict[int, list[str]]:
    """The body rows of a rendered runs table, by run id."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0].isdigit():
            rows[int(cells[0])] = cells
    return rows


def test_concurrent_cases_show_the_aggregate_rate(store: Store) -> None:
    run_id = store.start_run("bench", "dense-2x", {"profile": "dense-2x"})
    s = {**spec("dense-2x", "prose", 1024), "concurrency": 4}
    record = {
        **metrics(calibrated=1030, pp=700.0, tg=18.0, ttft=1.5, itl=55.0),
        "aggregate_tg_tps": 61.31,
    }
    store.record_result(run_id, key(s), "pass", spec=s, metrics=record)
    run = store.run(run_id)
    assert run is not None
    [row] = result_rows(store.results(run_id))
    assert row["concurrency"] == 4
    assert row["aggregate_tg_tps"] == 61.31
    console = Console(record=True, width=200)
    console.print(results_table(run, store.results(run_id)))
    text = console.export_text()
    assert "agg tg t/s" in text
    assert "61.3" in text and "61.31" not in text
    assert "evidence" not in text  # no failures, no evidence column


def dense_traffic(a_gbs: float | None) -> dict[str, Any]:
    """A 70 GB dense model split 1/1 over a (a_gbs) and b (256 GB/s)."""
    return {
        "bytes_per_token": 70_000_000_000,
        "devices": [
            {"host": "a", "label": "RPC0", "bytes": 35_000_000_000, "bandwidth_gbs": a_gbs},
            {"host": "b", "label": "RPC1", "bytes": 35_000_000_000, "bandwidth_gbs": 256.0},
        ],
    }


def test_bench_shows_the_bandwidth_its_generation_reads(store: Store) -> None:
    run_id = store.start_run("bench", "dense-2x", {"profile": "dense-2x"})
    s = spec("dense-2x", "random", 512)
    record = {
        **metrics(calibrated=512, pp=120.0, tg=2.5, ttft=4.3, itl=400.0),
        "traffic": dense_traffic(256.0),
    }
    store.record_result(run_id, key(s), "pass", spec=s, metrics=record)
    run = store.run(run_id)
    assert run is not None
    [row] = result_rows(store.results(run_id))
    # 2.5 tok/s x 70 GB = 175 GB/s of a 256 GB/s peak: 68%.
    assert row["bytes_per_token"] == 70_000_000_000
    assert row["bandwidth_gbs"] == pytest.approx(175.0)
    assert row["peak_gbs"] == pytest.approx(256.0)
    assert row["bandwidth_fraction"] == pytest.approx(175 / 256)
    console = Console(record=True, width=200)
    console.print(results_table(run, store.results(run_id)))
    text = console.export_text()
    assert "GB/s" in text and "% peak" in text and "68%" in text
    markdown = results_markdown(run, store.results(run_id), [])
    assert "| TTFT s | GB/s | % peak |" in markdown
    assert "| 2.5 | 4.300 | 175 | 68% |" in markdown
    assert "- weights read per generated token: 70 GB" in markdown
    assert "- memory-bandwidth peak per split: `1/1` 256 GB/s" in markdown


def test_bench_without_a_peak_says_so_and_without_traffic_has_no_columns(store: Store) -> None:
    run_id = store.start_run("bench", "dense-2x", {"profile": "dense-2x"})
    s = spec("dense-2x", "random", 512)
    record = {
        **metrics(calibrated=512, pp=120.0, tg=2.5, ttft=4.3, itl=400.0),
        "traffic": dense_traffic(None),
    }
    store.record_result(run_id, key(s), "pass", spec=s, metrics=record)
    run = store.run(run_id)
    assert run is not None
    [row] = result_rows(store.results(run_id))
    assert (row["bandwidth_fraction"], row["peak_gbs"]) == (None, None)
    markdown = results_markdown(run, store.results(run_id), [])
    assert "| 2.5 | 4.300 | 175 | ? |" in markdown
    assert "`1/1` unknown (no memory_bandwidth_gbs for a)" in markdown

    plain = store.start_run("bench", "dense-2x", {"profile": "dense-2x"})
    record = metrics(calibrated=512, pp=120.0, tg=2.5, ttft=4.3, itl=400.0)
    store.record_result(plain, key(s), "pass", spec=s, metrics=record)
    plain_run = store.run(plain)
    assert plain_run is not None
    assert "GB/s" not in results_markdown(plain_run, store.results(plain), [])
