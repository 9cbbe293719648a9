"""What ``runs`` and ``show`` print, built from the store's records and nothing else.

Every function here is pure: ``Run``, ``Attempt`` and ``Result`` records in, rich
renderables, strings and JSON-ready dicts out. The CLI decides where they go (tables to the
console, ``--json`` documents and Markdown to stdout), so the same record always reads the
same whichever way it is shown.

- ``runs_table`` (``runs``): one line per run with its status as shown (a run left
  ``running`` by a controller that died reads ``interrupted``), when it started, how long
  it took and how many cases passed;
- ``result_rows``: one flat row per result. It is the one place that reads a metrics
  record, so the terminal table, the Markdown and any program agree on the numbers and on
  the notes (noisy metrics, client/server disagreement, a prompt cache hit that makes a
  prompt rate meaningless, a generation that stopped short);
- ``results_table`` (``show``): those rows for a terminal, with the failures' evidence;
- ``results_markdown`` (``show --markdown``): the document users publish. Its table reads
  config | target | shape | calibrated | result, then throughput: what was served and
  asked, the prompt length actually sent (a target is only approximated by calibration,
  and the sent length is the number that matters), pass or the failure class, then the
  server's medians. The setup list above it (profiles, splits, builds, load times and
  what each worker's link carried during a load) is what makes the numbers reproducible;
  failures and, for a ceiling, the ladder follow;
- ``run_document`` (``show --json``): the whole record of a run as one JSON document;
- ``log_tails_text`` (``show --logs``): every failing case's component log tails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from cluster.llamacpp.identity import BuildIdentity
from cluster.records import AttemptOutcome, ResultStatus
from cluster.report import bandwidth
from cluster.report.links import link_lines
from cluster.store import Attempt, Result, Run

# The status of a passing case (``cluster.measure.records.PASS``; not imported so that
# reading the record does not pull in the measuring machinery).
# The medians shown for every case, in column order: heading and decimals.
COLUMNS = {
    "pp_tps": ("pp t/s", 1),
    "tg_tps": ("tg t/s", 1),
    "ttft_s": ("TTFT s", 3),
    "itl_ms": ("ITL ms", 2),
}
SHOWN = tuple(COLUMNS)
# The medians in the published Markdown table.
PUBLISHED = ("pp_tps", "tg_tps", "ttft_s")
EVIDENCE_WIDTH = 80
NOISY_MARK = "†"

Event = tuple[float, str, dict[str, Any]]

_STATUS_STYLE = {
    "ok": "green",
    "done": "green",
    "pass": "green",
    "running": "cyan",
    "interrupted": "yellow",
    "failed": "bold red",
    "fail": "bold red",
}


# runs


def runs_table(runs: Sequence[Run], counts: Mapping[int, tuple[int, int]]) -> Table:
    """One line per run; ``counts`` maps a run id to its (passed, failed) result counts."""
    table = Table(title="runs", title_justify="left")
    for column in ("run", "kind", "profile", "status", "started", "duration", "results"):
        table.add_column(column, justify="right" if column == "run" else "left")
    for run in runs:
        status = run.shown_status
        finished = run.finished_at
        table.add_row(
            str(run.id),
            run.kind,
            Text(run_subject(run) or "-"),
            Text(status, style=_STATUS_STYLE.get(status, "")),
            local_time(run.started_at),
            duration(None if finished is None else finished - run.started_at),
            _counts_text(counts.get(run.id)),
        )
    return table


def run_subject(run: Run) -> str | None:
    """What a run was about: a screen's playbook, otherwise its profile's name."""
    playbook = run.config.get("playbook")
    if run.kind == "screen" and isinstance(playbook, str):
        return playbook
    if run.profile:
        return run.profile
    profile = run.config.get("profile")
    if isinstance(profile, str):
        return profile
    # A launch records the whole resolved profile.
    if isinstance(profile, dict) and isinstance(profile.get("name"), str):
        return str(profile["name"])
    return playbook if isinstance(playbook, str) else None


def run_title(run: Run) -> str:
    subject = run_subject(run)
    return f"{run.kind} run {run.id}" + (f": {subject}" if subject else "")


def local_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def duration(seconds: float | None) -> str:
    """``42s``, ``3m12s``, ``1h03m00s``; ``-`` for a run not finished."""
    if seconds is None:
        return "-"
    hours, rest = divmod(round(max(seconds, 0.0)), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _counts_text(counts: tuple[int, int] | None) -> str:
    if not counts or counts == (0, 0):
        return "-"
    passed, failed = counts
    return f"{passed} pass / {failed} fail"


# results


def result_word(result: Result) -> str:
    """``PASS``, or ``FAIL (transport_drop)``: the status with the failure class."""
    word = result.status.upper()
    if result.status != ResultStatus.PASS and result.failure_class:
        return f"{word} ({result.failure_class})"
    return word


def summary_line(results: Sequence[Result]) -> str:
    """``N cases: P pass, F fail``."""
    passed = sum(1 for r in results if r.status == ResultStatus.PASS)
    total = len(results)
    return f"{total} case{'' if total == 1 else 's'}: {passed} pass, {total - passed} fail"


def result_rows(results: Sequence[Result]) -> list[dict[str, Any]]:
    """One flat row per result, in record order.

    Keys: key, status, failure_class, result, config, profile, shape, target, gen,
    concurrency, calibrated; the medians ``pp_tps``, ``tg_tps``, ``ttft_s``, ``itl_ms`` and
    ``aggregate_tg_tps`` (None when not measured); ``bytes_per_token``, ``bandwidth_gbs``,
    ``peak_gbs`` and ``bandwidth_fraction`` (the memory-bandwidth wall,
    ``report.bandwidth``; None without a traffic record); ``cv`` (each shown metric's coefficient
    of variation), ``noisy`` (the metrics flagged noisy), ``notes`` (strings for people)
    and ``evidence`` (a failure's evidence line, None for a pass).
    """
    return [_row(result) for result in results]


def _row(result: Result) -> dict[str, Any]:
    spec, metrics = result.spec, result.metrics
    summary = metrics.get("summary") or {}
    row: dict[str, Any] = {
        "key": result.key,
        "status": result.status,
        "failure_class": result.failure_class,
        "result": result_word(result),
        "config": spec.get("config"),
        "profile": spec.get("profile"),
        "shape": spec.get("shape"),
        "target": spec.get("target"),
        "gen": spec.get("gen"),
        "concurrency": spec.get("concurrency", 1),
        "calibrated": metrics.get("calibrated"),
    }
    for name in SHOWN:
        row[name] = _median(summary, name)
    row["aggregate_tg_tps"] = metrics.get("aggregate_tg_tps")
    row.update(bandwidth.fields(metrics, row["tg_tps"]))
    row["cv"] = {
        name: summary[name].get("cv") for name in SHOWN if isinstance(summary.get(name), dict)
    }
    row["noisy"] = list(metrics.get("noisy") or [])
    row["notes"] = _notes(spec, metrics)
    row["evidence"] = None if result.status == ResultStatus.PASS else result.evidence
    return row


def _median(summary: Mapping[str, Any], name: str) -> float | None:
    entry = summary.get(name)
    if isinstance(entry, dict) and entry.get("median") is not None:
        return float(entry["median"])
    return None


def _notes(spec: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[str]:
    notes: list[str] = []
    if noisy := metrics.get("noisy"):
        notes.append("noisy: " + ", ".join(map(str, noisy)))
    if disagreements := metrics.get("disagreements"):
        notes.append("client/server disagree: " + ", ".join(map(str, disagreements)))
    cache = metrics.get("cache_n_max")
    if isinstance(cache, int) and cache > 0:
        # The server reused a cached prefix: the prompt rate covers only the rest.
        notes.append(f"prompt cache hit: cache_n={cache}")
    predicted, gen = metrics.get("predicted_n"), spec.get("gen")
    if isinstance(predicted, int) and isinstance(gen, int) and predicted < gen:
        notes.append(f"short generation: {predicted}/{gen}")
    return notes


def _number(value: Any, digits: int) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _plain(value: Any) -> str:
    return "-" if value is None else str(value)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _truncate(text: str, width: int) -> str:
    text = _one_line(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def results_table(run: Run, results: Sequence[Result]) -> Table:
    """The results of a run for a terminal: medians, notes, and failures' evidence."""
    rows = result_rows(results)
    concurrent = any((row["concurrency"] or 1) > 1 for row in rows)
    failing = any(row["status"] != ResultStatus.PASS for row in rows)
    walled = any(row["bandwidth_gbs"] is not None for row in rows)
    table = Table(
        title=run_title(run),
        title_justify="left",
        caption=summary_line(results),
        caption_justify="left",
    )
    table.add_column("config", overflow="fold")
    table.add_column("shape")
    table.add_column("target", justify="right")
    table.add_column("calibrated", justify="right")
    table.add_column("result", no_wrap=True)
    if concurrent:
        table.add_column("conc", justify="right")
        table.add_column("agg tg t/s", justify="right", no_wrap=True)
    for heading, _ in COLUMNS.values():
        table.add_column(heading, justify="right", no_wrap=True)
    if walled:
        table.add_column("GB/s", justify="right", no_wrap=True)
        table.add_column("% peak", justify="right", no_wrap=True)
    table.add_column("notes")
    if failing:
        table.add_column("evidence", overflow="fold")
    for row in rows:
        passed = row["status"] == ResultStatus.PASS
        cells: list[Text] = [
            Text(_plain(row["config"])),
            Text(_plain(row["shape"])),
            Text(_plain(row["target"])),
            Text(_plain(row["calibrated"])),
            Text(row["result"], style="green" if passed else "bold red"),
        ]
        if concurrent:
            cells.append(Text(_plain(row["concurrency"])))
            cells.append(Text(_number(row["aggregate_tg_tps"], 1)))
        for name, (_, digits) in COLUMNS.items():
            style = "yellow" if name in row["noisy"] else ""
            cells.append(Text(_number(row[name], digits), style=style))
        if walled:
            cells += [Text(text) for text in _wall_cells(row)]
        cells.append(Text("\n".join(row["notes"]) or "-"))
        if failing:
            evidence = row["evidence"]
            cells.append(Text(_truncate(evidence, EVIDENCE_WIDTH) if evidence else "-"))
        table.add_row(*cells)
    return table


def _wall_cells(row: Mapping[str, Any]) -> list[str]:
    """The effective bandwidth and its fraction of the split's peak, as two cells."""
    gbs = row["bandwidth_gbs"]
    return [bandwidth.gbs_text(gbs), bandwidth.fraction_text(row["bandwidth_fraction"], gbs)]


# Markdown

_MD_HEADER = "| config | target | shape | calibrated | result | pp t/s | tg t/s | TTFT s |"
_MD_RULE = "|---|---:|---|---:|---|---:|---:|---:|"
_MD_WALL = (" GB/s | % peak |", "---:|---:|")


def _cell(value: Any) -> str:
    """A table cell's text: one line, pipes escaped so they do not split the cell."""
    return _one_line(_plain(value)).replace("|", "\\|")


def results_markdown(run: Run, results: Sequence[Result], attempts: Sequence[Attempt]) -> str:
    """The run as a Markdown document to publish: setup, results table, failures, ceiling."""
    rows = result_rows(results)
    lines = [f"# {run_title(run)}", "", summary_line(results), "", "## Setup", ""]
    lines += _setup(run, results, attempts)
    lines += ["", "## Results", ""]
    if rows:
        walled = any(row["bandwidth_gbs"] is not None for row in rows)
        extra = _MD_WALL if walled else ("", "")
        lines += [_MD_HEADER + extra[0], _MD_RULE + extra[1]]
        lines += [_markdown_row(row, walled) for row in rows]
        if any(row["noisy"] for row in rows):
            lines += ["", f"{NOISY_MARK} noisy: coefficient of variation above 10% across samples"]
    else:
        lines.append("No cases were recorded.")
    noted = [row for row in rows if row["notes"]]
    if noted:
        lines += ["", "## Notes", ""]
        lines += [f"- `{row['key']}`: {'; '.join(row['notes'])}" for row in noted]
    failed = [row for row in rows if row["status"] != ResultStatus.PASS]
    if failed:
        lines += ["", "## Failures", ""]
        for row in failed:
            evidence = _one_line(row["evidence"]) if row["evidence"] else "no evidence recorded"
            lines.append(f"- `{row['key']}`: {row['failure_class'] or row['status']}: {evidence}")
    if run.kind == "ceiling":
        lines += ["", "## Ceiling", "", *_ceiling(run)]
    return "\n".join(lines) + "\n"


def _markdown_row(row: Mapping[str, Any], walled: bool = False) -> str:
    medians = []
    for name in PUBLISHED:
        text = _number(row[name], COLUMNS[name][1])
        noisy = name in row["noisy"] and row[name] is not None
        medians.append(text + NOISY_MARK if noisy else text)
    if walled:
        medians += _wall_cells(row)
    cells = [row["config"], row["target"], row["shape"], row["calibrated"], row["result"]]
    return "| " + " | ".join(_cell(value) for value in [*cells, *medians]) + " |"


def _distinct(values: Iterable[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        if value is not None and value != "":
            seen.setdefault(str(value), None)
    return list(seen)


def _setup(run: Run, results: Sequence[Result], attempts: Sequence[Attempt]) -> list[str]:
    specs = [result.spec for result in results]
    lines: list[str] = []
    profiles = _distinct(spec.get("profile") for spec in specs) or _distinct([run.profile])
    if profiles:
        lines.append(_listed("profile", profiles))
    splits = _distinct(spec.get("split") for spec in specs) or _distinct(
        attempt.split for attempt in attempts
    )
    if splits:
        lines.append(_listed("split", splits))
    slots = _distinct(
        f"{spec['ctx_size']} / {spec['parallel']}"
        for spec in specs
        if "ctx_size" in spec and "parallel" in spec
    )
    if slots:
        lines.append("- ctx size / parallel slots: " + ", ".join(slots))
    builds = last_builds(attempts)
    for host in sorted(builds):
        lines.append(f"- build on `{host}`: {_build_text(builds[host])}")
    lines += bandwidth.setup_lines(
        (str(result.spec.get("split", "")), result.metrics) for result in results
    )
    loads = [
        f"{attempt.load_seconds:.1f}s (attempt {attempt.number})"
        for attempt in attempts
        if attempt.outcome is AttemptOutcome.READY and attempt.load_seconds is not None
    ]
    if loads:
        lines.append("- load time: " + ", ".join(loads))
    lines += link_lines(attempts)
    failed = [
        f"attempt {attempt.number} ({attempt.failure_class or 'unclassified'})"
        for attempt in attempts
        if attempt.outcome is AttemptOutcome.FAILED
    ]
    if failed:
        lines.append("- failed loads: " + ", ".join(failed))
    lines.append(f"- started: {local_time(run.started_at)}")
    if run.finished_at is None:
        lines.append(f"- finished: not yet ({run.shown_status})")
    else:
        took = duration(run.finished_at - run.started_at)
        lines.append(f"- finished: {local_time(run.finished_at)} ({took}, {run.shown_status})")
    return lines


def _listed(noun: str, values: Sequence[str]) -> str:
    plural = "s" if len(values) > 1 else ""
    return f"- {noun}{plural}: " + ", ".join(f"`{value}`" for value in values)


def _build_text(build: Any) -> str:
    return BuildIdentity.from_record(build).describe()


def _ceiling(run: Run) -> list[str]:
    summary = run.summary
    if "ceiling" not in summary:
        return [f"Ceiling: not determined (run {run.shown_status})"]
    shape = f" (shape `{summary['shape']}`)" if summary.get("shape") else ""
    ceiling = summary["ceiling"]
    found = f"{ceiling} tokens" if ceiling is not None else "none (no target passed)"
    lines = [f"Ceiling: {found}{shape}", ""]
    for step in summary.get("ladder") or []:
        failure = f" ({step['failure_class']})" if step.get("failure_class") else ""
        lines.append(f"- {step.get('target')}: {step.get('status')}{failure}")
    return lines


# JSON and logs


def last_builds(attempts: Sequence[Attempt]) -> dict[str, Any]:
    """The builds per host as the latest attempt that recorded any saw them."""
    return next((attempt.builds for attempt in reversed(attempts) if attempt.builds), {})


def run_document(
    run: Run,
    results: Sequence[Result],
    attempts: Sequence[Attempt],
    events: Sequence[Event],
) -> dict[str, Any]:
    """The whole record of a run as one JSON-ready document (``show --json``)."""
    return {
        "run": {**run.model_dump(mode="json"), "shown_status": run.shown_status},
        "attempts": [attempt.model_dump(mode="json") for attempt in attempts],
        "results": [result.model_dump(mode="json") for result in results],
        "events": [{"at": at, "kind": kind, "data": data} for at, kind, data in events],
    }


def log_tails_text(results: Sequence[Result]) -> str:
    """Every failing case's evidence and component log tails (``show --logs``)."""
    failing = [result for result in results if result.status != ResultStatus.PASS]
    if not failing:
        return "no failing cases\n"
    blocks = []
    for result in failing:
        lines = [f"=== {result.key}: {result_word(result)} ==="]
        if result.evidence:
            lines.append(f"evidence: {result.evidence}")
        if not result.log_tails:
            lines.append("(no log tails recorded)")
        for component, tail in result.log_tails.items():
            lines.append(f"--- {component} ---")
            lines.append(tail.rstrip("\n") or "(empty)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
