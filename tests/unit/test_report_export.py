"""Exports read from a real store: flat rows for any kind of run, CSV that parses back to the
store's numbers, and the JSON document."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.report.export import COLUMNS, rows, to_csv, to_json
from cluster.report.tables import run_document
from cluster.store import Store

# Commas, quotes and a newline: what a CSV writer must quote.
EVIDENCE = 'llama-server@evo: "hipMalloc failed", out of memory\nafter 2.1s'


def stat(median: float, cv: float = 0.02) -> dict[str, Any]:
    return {
        "n": 5,
        "median": median,
        "min": median * 0.98,
        "max": median * 1.02,
        "mean": median,
        "stddev": median * cv,
        "cv": cv,
        "noisy": cv > 0.10,
    }


def case_metrics(pp: float, tg: float, *, tg_cv: float = 0.02) -> dict[str, Any]:
    summary = {
        "pp_tps": stat(pp),
        "tg_tps": stat(tg, tg_cv),
        "ttft_s": stat(1.61),
        "itl_ms": stat(65.1),
        "e2e_s": stat(9.87),
        "client_pp_tps": stat(pp * 0.93),
        "client_tg_tps": stat(tg * 0.97),
    }
    return {
        "calibrated": 509,
        "sent_tokens": [509],
        "calibration_probes": 2,
        "prompt_n": 509,
        "cache_n_max": 0,
        "predicted_n": 128,
        "summary": summary,
        "noisy": sorted(name for name, s in summary.items() if s["noisy"]),
        "disagreements": [],
        "samples": [],
    }


def spec(
    config: str, split: str = "1/1", shape: str = "random", target: int = 512
) -> dict[str, Any]:
    return {
        "config": config,
        "profile": "minimax-q8",
        "ctx_size": 100000,
        "parallel": 2,
        "split": split,
        "shape": shape,
        "target": target,
        "gen": 128,
        "attempt": 1,
        "concurrency": 1,
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "state") as s:
        yield s


@pytest.fixture
def sweep(store: Store) -> int:
    run_id = store.start_run("sweep", "minimax-q8", {"profile": {"name": "minimax-q8"}})
    for split, pp, tg, load in (("1/1", 321.8, 15.1, 192.4), ("1.2/0.8", 332.36, 15.35, 195.1)):
        store.record_result(
            run_id,
            f"split={split}",
            "pass",
            spec={**spec("minimax-q8", split), "proportions": [1.2, 0.8]},
            metrics={
                **case_metrics(pp, tg, tg_cv=0.2 if split == "1/1" else 0.02),
                "load_seconds": load,
                "objective": tg,
            },
        )
    store.record_result(
        run_id,
        "split=1.4/0.6",
        "fail",
        spec=spec("minimax-q8", "1.4/0.6"),
        metrics={"load_seconds": None, "objective": None},
        failure_class="oom",
        evidence=EVIDENCE,
    )
    store.record_result(
        run_id,
        "split=1.6/0.4",
        "pruned",
        spec=spec("minimax-q8", "1.6/0.4"),
        evidence="needs 71.3 GiB on evo, has 64.0 GiB",
    )
    return run_id


def test_rows_of_a_sweep_carry_medians_load_and_objective(store: Store, sweep: int) -> None:
    run = store.run(sweep)
    assert run is not None
    found = rows(run, store.results(sweep))
    assert [tuple(row) for row in found] == [COLUMNS] * 4
    current, best, failed, pruned = found
    assert best["run"] == sweep and best["kind"] == "sweep"
    assert best["key"] == "split=1.2/0.8"
    assert best["split"] == "1.2/0.8"
    assert best["pp_tps"] == 332.36
    assert best["tg_tps"] == 15.35
    assert best["e2e_s"] == 9.87
    assert best["client_tg_tps"] == pytest.approx(15.35 * 0.97)
    assert best["load_seconds"] == 195.1
    assert best["objective"] == 15.35
    assert best["samples"] == 5
    assert best["calibrated"] == 509
    assert best["evidence"] is None and best["noisy"] is None
    assert current["noisy"] == "tg_tps"
    assert current["notes"] == "noisy: tg_tps"
    assert current["tg_tps_cv"] == 0.2
    assert failed["status"] == "fail" and failed["failure_class"] == "oom"
    assert failed["evidence"] == EVIDENCE
    assert failed["tg_tps"] is None and failed["load_seconds"] is None
    assert pruned["status"] == "pruned"
    assert pruned["evidence"] == "needs 71.3 GiB on evo, has 64.0 GiB"


def test_rows_of_a_screen_have_the_same_columns(store: Store) -> None:
    run_id = store.start_run("screen", None, {"playbook": "shapes"})
    store.record_result(
        run_id,
        "reap-q8/opt/45000/g32/c1/a1",
        "pass",
        spec=spec("reap-q8", shape="opt", target=45000),
        metrics=case_metrics(310.0, 14.2),
    )
    run = store.run(run_id)
    assert run is not None
    [row] = rows(run, store.results(run_id))
    assert tuple(row) == COLUMNS
    assert row["config"] == "reap-q8" and row["shape"] == "opt" and row["target"] == 45000
    assert row["load_seconds"] is None and row["objective"] is None
    assert row["pp_tps"] == 310.0


def test_csv_parses_back_to_the_stores_numbers(store: Store, sweep: int) -> None:
    run = store.run(sweep)
    assert run is not None
    results = store.results(sweep)
    text = to_csv(rows(run, results))
    assert text.splitlines()[0] == ",".join(COLUMNS)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [row["key"] for row in parsed] == [result.key for result in results]
    for row, result in zip(parsed, results, strict=True):
        summary = result.metrics.get("summary") or {}
        for name in ("pp_tps", "tg_tps", "ttft_s", "itl_ms", "e2e_s"):
            if name in summary:
                assert float(row[name]) == summary[name]["median"]
            else:
                assert row[name] == ""
        assert row["status"] == result.status
        assert row["evidence"] == (result.evidence if result.status != "pass" else "")
    # The evidence with quotes, a comma and a newline survived as one cell.
    assert parsed[2]["evidence"] == EVIDENCE
    assert parsed[1]["load_seconds"] == "195.1"


def test_csv_keeps_other_keys_after_the_columns_sorted() -> None:
    text = to_csv([{"key": "a", "zeta": [1, 2], "alpha": {"b": 1, "a": 2}, "pp_tps": None}])
    header, _ = text.splitlines()
    assert header.split(",") == [*COLUMNS, "alpha", "zeta"]
    [row] = csv.DictReader(io.StringIO(text))
    assert row["key"] == "a"
    assert row["pp_tps"] == ""
    assert row["zeta"] == "1; 2"
    assert json.loads(row["alpha"]) == {"a": 2, "b": 1}


def test_json_is_the_run_document(store: Store, sweep: int) -> None:
    store.event(sweep, "point", split="1.2/0.8")
    run = store.run(sweep)
    assert run is not None
    results, attempts, events = store.results(sweep), store.attempts(sweep), store.events(sweep)
    text = to_json(run, results, attempts, events)
    assert text.startswith('{\n  "run": {\n    "id": ')
    loaded = json.loads(text)
    assert loaded == json.loads(json.dumps(run_document(run, results, attempts, events)))
    assert loaded["results"][1]["metrics"]["objective"] == 15.35
    assert loaded["events"][0]["data"] == {"split": "1.2/0.8"}
