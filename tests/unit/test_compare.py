"""Two runs compared from a real store: rows matched by split or case, changes in percent,
setup differences (profile values, builds per host, measurement) and kind warnings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from support import build_record, build_short

from cluster.report.compare import Comparison, compare, comparison_markdown, comparison_table
from cluster.store import Store

PROFILE = {
    "name": "minimax-q8",
    "model": "/models/MiniMax-Q8.gguf",
    "rpc_hosts": ["evo", "bee"],
    "tensor_split": [1.0, 1.0],
    "ctx_size": 100000,
    "parallel": 2,
    "flash_attn": "on",
}
MEASURE = {"shape": "random", "tokens": 512, "gen": 128, "repeat": 3}


def builds(commit: str, bee_commit: str | None = None) -> dict[str, Any]:
    return {"evo": build_record(commit), "bee": build_record(bee_commit or commit)}


def metrics(pp: float, tg: float) -> dict[str, Any]:
    return {
        "summary": {
            "pp_tps": {"n": 3, "median": pp, "cv": 0.01, "noisy": False},
            "tg_tps": {"n": 3, "median": tg, "cv": 0.01, "noisy": False},
        },
        "noisy": [],
        "load_seconds": 190.0,
        "objective": tg,
    }


def spec(split: str, config: str = "minimax-q8") -> dict[str, Any]:
    return {
        "config": config,
        "profile": config,
        "split": split,
        "shape": "random",
        "target": 512,
        "gen": 128,
        "attempt": 1,
        "concurrency": 1,
    }


def record(
    store: Store,
    kind: str,
    points: list[tuple[str, str, float, float]],
    *,
    profile: dict[str, Any] = PROFILE,
    measure: dict[str, Any] = MEASURE,
    build: dict[str, Any] | None = None,
    key_of: Any = None,
) -> int:
    config: dict[str, Any] = {"profile": profile}
    if kind == "sweep":
        config["sweep"] = {"name": "split", "measure": measure}
    else:
        config["request"] = measure
    run_id = store.start_run(kind, str(profile["name"]), config)
    attempt = store.start_attempt(run_id, 1, "1/1", {})
    store.finish_attempt(attempt, "ready", load_seconds=190.0, builds=build or builds("0c1e570"))
    for split, status, pp, tg in points:
        s = spec(split, str(profile["name"]))
        key = key_of(s) if key_of else f"split={split}"
        store.record_result(
            run_id,
            key,
            status,
            spec=s,
            metrics=metrics(pp, tg) if status == "pass" else None,
            failure_class="oom" if status == "fail" else None,
            evidence="out of memory" if status == "fail" else None,
        )
    return run_id


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "state") as s:
        yield s


def comparison(store: Store, a: int, b: int) -> Comparison:
    run_a, run_b = store.run(a), store.run(b)
    assert run_a is not None and run_b is not None
    return compare(
        run_a, store.results(a), store.attempts(a), run_b, store.results(b), store.attempts(b)
    )


@pytest.fixture
def sweeps(store: Store) -> tuple[int, int]:
    a = record(
        store,
        "sweep",
        [
            ("1/1", "pass", 320.0, 15.0),
            ("1.2/0.8", "pass", 330.0, 15.3),
            ("1.4/0.6", "fail", 0, 0),
            ("0.8/1.2", "pass", 300.0, 14.5),
        ],
    )
    b = record(
        store,
        "sweep",
        [
            ("1.20/0.80", "pass", 346.5, 16.83),  # the same split, written otherwise
            ("1/1", "pass", 320.0, 15.0),
            ("1.4/0.6", "pass", 350.0, 16.0),
            ("1.6/0.4", "pruned", 0, 0),
        ],
        profile={**PROFILE, "ctx_size": 65536, "extra_args": ["--no-mmap"]},
        measure={**MEASURE, "repeat": 5},
        build=builds("0c1e570", bee_commit="e3a74b2"),
    )
    return a, b


def test_rows_match_by_split_in_split_order(store: Store, sweeps: tuple[int, int]) -> None:
    c = comparison(store, *sweeps)
    assert [row.key for row in c.rows] == ["0.8/1.2", "1/1", "1.2/0.8", "1.4/0.6", "1.6/0.4"]
    rows = {row.key: row for row in c.rows}
    best = rows["1.2/0.8"]
    assert (best.a.status, best.b.status) == ("PASS", "PASS")
    assert (best.a.pp_tps, best.b.pp_tps) == (330.0, 346.5)
    assert best.change("pp_tps") == pytest.approx(5.0)
    assert best.change("tg_tps") == pytest.approx(10.0)
    assert rows["1/1"].change("tg_tps") == 0.0
    assert rows["1.4/0.6"].a.status == "FAIL (oom)"
    assert rows["1.4/0.6"].change("tg_tps") is None
    assert rows["0.8/1.2"].b.status is None  # only in A
    assert rows["1.6/0.4"].a.status is None and rows["1.6/0.4"].b.status == "PRUNED"
    assert c.warnings == []


SHORT_A = build_short("0c1e570")
SHORT_B = build_short("e3a74b2")


def test_setup_differences(store: Store, sweeps: tuple[int, int]) -> None:
    c = comparison(store, *sweeps)
    found = {d.what: (d.a, d.b) for d in c.differences}
    assert found == {
        "profile.ctx_size": ("100000", "65536"),
        "profile.extra_args": ("-", "--no-mmap"),
        "build on bee": (
            f"build {SHORT_A}, RPC 3.0.0 (version: 0 (0c1e570))",
            f"build {SHORT_B}, RPC 3.0.0 (version: 0 (e3a74b2))",
        ),
        "sweep.measure.repeat": ("3", "5"),
    }


def test_markdown_and_table(store: Store, sweeps: tuple[int, int]) -> None:
    c = comparison(store, *sweeps)
    markdown = comparison_markdown(c)
    assert markdown.startswith("# sweep run 1: minimax-q8 vs sweep run 2: minimax-q8\n")
    assert "- profile.ctx_size: `100000` → `65536`" in markdown
    assert (
        f"- build on bee: `build {SHORT_A}, RPC 3.0.0 (version: 0 (0c1e570))` → "
        f"`build {SHORT_B}, RPC 3.0.0 (version: 0 (e3a74b2))`"
    ) in markdown
    assert "| key | A | B | pp A | pp B | pp Δ | tg A | tg B | tg Δ |" in markdown
    assert "| 1.2/0.8 | PASS | PASS | 330.0 | 346.5 | +5.0% | 15.30 | 16.83 | +10.0% |" in markdown
    assert "| 1.4/0.6 | FAIL (oom) | PASS | - | 350.0 | - | - | 16.00 | - |" in markdown
    assert "| 0.8/1.2 | PASS | - | 300.0 | - | - | 14.50 | - | - |" in markdown

    console = Console(record=True, width=160)
    console.print(comparison_table(c))
    text = console.export_text()
    assert "sweep run 1: minimax-q8 vs sweep run 2: minimax-q8" in text
    assert "+10.0%" in text and "+5.0%" in text
    assert "profile.ctx_size: 100000 → 65536" in text
    words = " ".join(text.split())  # the console wraps long lines
    assert f"build on bee: build {SHORT_A}, RPC 3.0.0 (version: 0 (0c1e570)) → build {SHORT_B}" in words


def bench_key(s: dict[str, Any]) -> str:
    return f"{s['config']}/random/512/g128/c1/a1"


def test_benches_of_two_profiles_line_up(store: Store) -> None:
    a = record(store, "bench", [("1/1", "pass", 300.0, 15.0)], key_of=bench_key)
    q4 = {**PROFILE, "name": "minimax-q4", "model": "/models/MiniMax-Q4.gguf"}
    b = record(store, "bench", [("1/1", "pass", 360.0, 19.5)], profile=q4, key_of=bench_key)
    c = comparison(store, a, b)
    [row] = c.rows
    assert row.key == "random/512/g128/c1/a1"
    assert row.change("tg_tps") == pytest.approx(30.0)
    found = {d.what: (d.a, d.b) for d in c.differences}
    assert found["profile.name"] == ("minimax-q8", "minimax-q4")
    assert found["profile.model"] == ("/models/MiniMax-Q8.gguf", "/models/MiniMax-Q4.gguf")
    assert "profile.tensor_split" not in found
    assert c.warnings == []


def test_different_kinds_are_compared_with_a_warning(store: Store) -> None:
    a = record(store, "sweep", [("1/1", "pass", 320.0, 15.0)])
    b = record(store, "bench", [("1/1", "pass", 300.0, 15.0)], key_of=bench_key)
    c = comparison(store, a, b)
    assert c.warnings == [
        "run 1 is a sweep and run 2 a bench: only results measured the same way line up",
        "no result of one run matches a result of the other",
    ]
    assert len(c.rows) == 2
    assert "> warning: run 1 is a sweep and run 2 a bench" in comparison_markdown(c)
