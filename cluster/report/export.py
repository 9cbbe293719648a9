"""A run's results as data for other programs: flat rows, CSV and one JSON document.

``rows`` works for every kind of run (bench, screen, ceiling, sweep): one row per result
with the same columns, so CSV files from several runs can be concatenated and read with
one header. The numbers come from ``tables.result_rows`` (the one reader of a metrics
record, with the memory-bandwidth figures of ``report.bandwidth``) plus what a sweep adds
to a point (its load time and objective). Rows are in record order.
``to_json`` is the ``show --json`` document (``tables.run_document``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from cluster.report.tables import Event, result_rows, run_document
from cluster.store import Attempt, Result, Run

# Every row has these keys, in this order (the CSV header).
COLUMNS = (
    "run",
    "kind",
    "key",
    "status",
    "failure_class",
    "evidence",
    "config",
    "profile",
    "split",
    "shape",
    "target",
    "gen",
    "concurrency",
    "attempt",
    "ctx_size",
    "parallel",
    "calibrated",
    "samples",
    "pp_tps",
    "tg_tps",
    "ttft_s",
    "itl_ms",
    "e2e_s",
    "client_pp_tps",
    "client_tg_tps",
    "aggregate_tg_tps",
    "pp_tps_cv",
    "tg_tps_cv",
    "load_seconds",
    "objective",
    "bytes_per_token",
    "bandwidth_gbs",
    "peak_gbs",
    "bandwidth_fraction",
    "noisy",
    "notes",
)
# Medians that tables.result_rows does not carry.
_EXTRA_MEDIANS = ("e2e_s", "client_pp_tps", "client_tg_tps")


def rows(run: Run, results: Sequence[Result]) -> list[dict[str, Any]]:
    """One flat row (keys ``COLUMNS``, scalar values, None when not measured) per result,
    in record order."""
    return [
        _flat(run, result, row) for result, row in zip(results, result_rows(results), strict=True)
    ]


def _flat(run: Run, result: Result, row: Mapping[str, Any]) -> dict[str, Any]:
    spec, metrics = result.spec, result.metrics
    summary = metrics.get("summary") or {}
    extra: dict[str, Any] = {
        "run": run.id,
        "kind": run.kind,
        "split": spec.get("split"),
        "attempt": spec.get("attempt"),
        "ctx_size": spec.get("ctx_size"),
        "parallel": spec.get("parallel"),
        "samples": _entry(summary, "tg_tps", "n") or _entry(summary, "pp_tps", "n"),
        "pp_tps_cv": row["cv"].get("pp_tps"),
        "tg_tps_cv": row["cv"].get("tg_tps"),
        "load_seconds": _float(metrics.get("load_seconds")),
        "objective": _float(metrics.get("objective")),
        "noisy": "; ".join(row["noisy"]) or None,
        "notes": "; ".join(row["notes"]) or None,
    }
    for name in _EXTRA_MEDIANS:
        extra[name] = _float(_entry(summary, name, "median"))
    merged = {**row, **extra}
    return {column: merged.get(column) for column in COLUMNS}


def _entry(summary: Mapping[str, Any], name: str, field: str) -> Any:
    entry = summary.get(name)
    return entry.get(field) if isinstance(entry, dict) else None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as CSV with a header: ``COLUMNS`` first, then any other keys sorted. None is
    an empty cell; lists are joined with ``; ``, mappings written as JSON."""
    extra = sorted({key for row in rows for key in row} - set(COLUMNS))
    fields = [*COLUMNS, *extra]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(row.get(key)) for key in fields})
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "; ".join(map(str, value))
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)
    return str(value)


def to_json(
    run: Run,
    results: Sequence[Result],
    attempts: Sequence[Attempt],
    events: Sequence[Event],
) -> str:
    """The whole record of the run as one JSON document (what ``show --json`` prints)."""
    return json.dumps(run_document(run, results, attempts, events), indent=2)
