"""A sweep's report: its points in split order, the best split, and the Markdown.

A sweep (``kind == "sweep"``) records one result per split (``key = "split=1.2/0.8"``),
passed, failed or pruned, with the point's medians, load time and objective, and a summary
(best split, the profile's own split as the baseline, coverage). ``sweep_markdown`` says
what was measured on what, lists every point in split order (with the bandwidth its
generation reads and that bandwidth's fraction of the split's peak, when the point recorded
the bytes a token reads: ``report.bandwidth``), says which split is best and by how much it
beats the profile's current split, why points were pruned or failed, and how much of the
plan was covered. The plot is ``report.plots``; the files ``report`` writes,
``report.files``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cluster.config.models import format_split, parse_split
from cluster.llamacpp.identity import BuildIdentity
from cluster.report import bandwidth
from cluster.report.tables import (
    NOISY_MARK,
    PASSED,
    duration,
    last_builds,
    local_time,
    result_word,
    run_title,
)
from cluster.store import Attempt, Result, Run

PRUNED = "pruned"
METRIC_LABELS = {"pp_tps": "pp t/s", "tg_tps": "tg t/s"}
STOPPED = {
    "done": "every planned split was evaluated",
    "until": "the time budget (--until) ran out",
    "interrupted": "the sweep was interrupted",
    "failed": "the sweep stopped on an error",
    "running": "the sweep is still running",
}


@dataclass(frozen=True)
class Point:
    """One split of a sweep as measured: its result and the numbers the report shows."""

    split: str
    proportions: tuple[float, ...]
    result: Result
    pp_tps: float | None
    tg_tps: float | None
    load_seconds: float | None
    objective: float | None

    @property
    def passed(self) -> bool:
        return self.result.status == PASSED


def points(run: Run, results: Sequence[Result], attempts: Sequence[Attempt] = ()) -> list[Point]:
    """Every result of a sweep as a point, in split order (by proportions)."""
    metric = _objective_config(run).get("metric")
    loads = {
        _normal(attempt.split): attempt.load_seconds
        for attempt in attempts
        if attempt.split and attempt.outcome == "ready" and attempt.load_seconds is not None
    }
    found = []
    for result in results:
        split = _split_of(result)
        metrics = result.metrics
        pp, tg = _median(metrics, "pp_tps"), _median(metrics, "tg_tps")
        objective = _float(metrics.get("objective"))
        if objective is None and result.status == PASSED:
            # Single-metric objectives can be read back; a mixed one is the sweep's own.
            objective = {"pp_tps": pp, "tg_tps": tg}.get(str(metric))
        load = _float(metrics.get("load_seconds"))
        found.append(
            Point(
                split=split,
                proportions=_proportions(result, split),
                result=result,
                pp_tps=pp,
                tg_tps=tg,
                load_seconds=load if load is not None else loads.get(split),
                objective=objective,
            )
        )
    return sorted(found, key=lambda point: (point.proportions, point.split))


def _split_of(result: Result) -> str:
    split = result.spec.get("split")
    if not isinstance(split, str):
        split = result.key.removeprefix("split=")
    return _normal(split)


def _normal(split: str | None) -> str:
    """``1.20/0.80`` and ``1.2/0.8`` are the same split."""
    if split is None:
        return ""
    try:
        return format_split(parse_split(split))
    except ValueError:
        return split


def _proportions(result: Result, split: str) -> tuple[float, ...]:
    given = result.spec.get("proportions")
    if isinstance(given, list) and all(isinstance(p, int | float) for p in given):
        return tuple(float(p) for p in given)
    try:
        return tuple(parse_split(split))
    except ValueError:
        return ()


def _median(metrics: Mapping[str, Any], name: str) -> float | None:
    entry = (metrics.get("summary") or {}).get(name)
    if isinstance(entry, dict) and entry.get("median") is not None:
        return float(entry["median"])
    return None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _objective_config(run: Run) -> dict[str, Any]:
    for source in (run.config.get("objective"), (run.config.get("sweep") or {}).get("objective")):
        if isinstance(source, dict):
            return source
    return {}


def _profile(run: Run) -> dict[str, Any]:
    profile = run.config.get("profile")
    return profile if isinstance(profile, dict) else {}


def _measure(run: Run) -> dict[str, Any]:
    sweep = run.config.get("sweep")
    measure = sweep.get("measure") if isinstance(sweep, dict) else None
    return measure if isinstance(measure, dict) else {}


def best_point(run: Run, found: Sequence[Point]) -> Point | None:
    """The best split: the one the sweep's summary names, else the highest objective."""
    best = run.summary.get("best")
    if isinstance(best, dict) and best.get("split"):
        named = _normal(str(best["split"]))
        for point in found:
            if point.split == named:
                return point
    scored = [p for p in found if p.passed and p.objective is not None]
    return max(scored, key=lambda p: p.objective or 0.0) if scored else None


def current_split(run: Run) -> str | None:
    """The profile's own split: the summary's baseline, else the profile's tensor_split."""
    baseline = run.summary.get("baseline")
    if isinstance(baseline, dict) and baseline.get("split"):
        return _normal(str(baseline["split"]))
    split = _profile(run).get("tensor_split")
    if split:
        try:
            return format_split(parse_split(split))
        except ValueError:
            return None
    return None


def device_labels(run: Run) -> list[str]:
    """Who each proportion of a split goes to, in llama.cpp's device order (RPC devices in
    ``rpc_hosts`` order, then the head's own GPUs); empty when the record cannot say."""
    hosts = run.config.get("hosts")
    rpc_hosts = _profile(run).get("rpc_hosts")
    if not isinstance(hosts, dict) or not isinstance(rpc_hosts, list):
        return []
    labels: list[str] = []
    for name in rpc_hosts:
        host = hosts.get(name)
        devices = (host.get("rpc_devices") or []) if isinstance(host, dict) else []
        if len(devices) > 1:
            labels += [f"{name}:{device}" for device in devices]
        else:
            labels.append(str(name))
    local = [
        (str(name), int(host.get("local_devices") or 0))
        for name, host in hosts.items()
        if isinstance(host, dict) and int(host.get("local_devices") or 0) > 0
    ]
    if len(local) == 1:
        name, count = local[0]
        labels += [f"{name}:gpu{index}" for index in range(count)]
    width = len(_profile(run).get("tensor_split") or [])
    return labels if len(labels) == width and len(local) <= 1 else []


# Markdown


def sweep_markdown(run: Run, results: Sequence[Result], attempts: Sequence[Attempt]) -> str:
    """The sweep as a Markdown document to publish: verdict, setup, every point in split
    order, why points were pruned or failed, and coverage."""
    found = points(run, results, attempts)
    best = best_point(run, found)
    current = current_split(run)
    lines = [f"# {run_title(run)}", "", verdict(run, found), "", "## Setup", ""]
    lines += _setup(run, found, attempts)
    lines += ["", "## Results", ""]
    walled = any(bandwidth.traffic_of(point.result.metrics) for point in found)
    if found:
        lines += [
            "| split | pp t/s | tg t/s | load s | objective |"
            + (" GB/s | % peak |" if walled else "")
            + " status |",
            "|---|---:|---:|---:|---:|" + ("---:|---:|" if walled else "") + "---|",
        ]
        lines += [_table_row(point, best, current, walled) for point in found]
        if any(point.result.metrics.get("noisy") for point in found):
            lines += ["", f"{NOISY_MARK} noisy: coefficient of variation above 10% across samples"]
    else:
        lines.append("No split was evaluated.")
    missed = [point for point in found if not point.passed]
    if missed:
        lines += ["", "## Pruned and failed", ""]
        for point in missed:
            evidence = " ".join((point.result.evidence or "no evidence recorded").split())
            lines.append(f"- `{point.split}`: {result_word(point.result).lower()}: {evidence}")
    lines += ["", "## Coverage", "", *_coverage(run, found)]
    return "\n".join(lines) + "\n"


def verdict(run: Run, found: Sequence[Point]) -> str:
    """One sentence: the best split, and how it compares with the profile's current one."""
    best = best_point(run, found)
    current = current_split(run)
    unit = _objective_unit(run)
    if best is None or best.objective is None:
        return "No split passed: there is no best split."
    text = f"Best split: `{best.split}` (objective {best.objective:.2f}{unit})"
    if current is None:
        return text + "."
    if best.split == current:
        return text + ", the profile's current split."
    baseline = next((point for point in found if point.split == current), None)
    if baseline is None:
        return text + f"; the current split `{current}` was not measured."
    if baseline.result.status == PRUNED:
        return text + f"; the current split `{current}` was pruned (it does not fit)."
    if not baseline.passed:
        why = baseline.result.failure_class or baseline.result.status
        return text + f"; the current split `{current}` failed ({why})."
    if baseline.objective is None:
        return text + f"; the current split `{current}` has no objective recorded."
    gain = gain_over_current(run, found)
    if gain is None:
        return text + f"; the current split `{current}` scored {baseline.objective:.2f}."
    return (
        text + f", {gain:+.1f}% over the current split `{current}` "
        f"({baseline.objective:.2f}{unit})."
    )


def gain_over_current(run: Run, found: Sequence[Point]) -> float | None:
    """How much the best split's objective beats the current split's, in percent; None when
    either is missing (or the current one scored 0)."""
    best = best_point(run, found)
    current = current_split(run)
    baseline = next((point for point in found if point.split == current), None)
    if best is None or baseline is None or not baseline.passed:
        return None
    if best.objective is None or not baseline.objective:
        return None
    return (best.objective - baseline.objective) / baseline.objective * 100


def _objective_unit(run: Run) -> str:
    metric = _objective_config(run).get("metric")
    return f" {METRIC_LABELS[metric]}" if metric in METRIC_LABELS else " t/s"


def objective_text(run: Run) -> str:
    """What the sweep maximised, in words."""
    objective = _objective_config(run)
    metric = objective.get("metric")
    if metric in METRIC_LABELS:
        return f"median {METRIC_LABELS[metric]}"
    if metric in ("mixed", "weighted"):
        weights = objective.get("weights")
        if isinstance(weights, dict) and weights:
            given = ", ".join(f"{key} {float(value):g}" for key, value in weights.items())
        else:
            measure = _measure(run)
            given = (
                f"pp {measure.get('tokens', '?')}, tg {measure.get('gen', '?')} "
                "(the prompt and generated token counts)"
            )
        return f"{metric}: weighted harmonic mean of pp and tg t/s, weights {given}"
    return str(metric) if metric else "not recorded"


def _setup(run: Run, found: Sequence[Point], attempts: Sequence[Attempt]) -> list[str]:
    profile = _profile(run)
    lines: list[str] = []
    if run.profile or profile.get("name"):
        lines.append(f"- profile: `{run.profile or profile.get('name')}`")
    hosts = run.config.get("hosts")
    builds = last_builds(attempts)
    names = list(profile.get("rpc_hosts") or [])
    names += [name for name in builds if name not in names]
    if not names and isinstance(hosts, dict):
        names = list(hosts)
    for name in names:
        build = builds.get(name)
        lines.append(f"- host `{name}`: " + (_build_text(build) if build else "build not recorded"))
    model = profile.get("model")
    if isinstance(model, str) and model:
        lines.append(f"- model: `{model.rstrip('/').rsplit('/', 1)[-1]}`")
    flags = [
        f"ctx size {profile['ctx_size']}" if "ctx_size" in profile else None,
        f"parallel {profile['parallel']}" if "parallel" in profile else None,
        f"flash attn {profile['flash_attn']}" if "flash_attn" in profile else None,
        f"direct I/O {'on' if profile['direct_io'] else 'off'}" if "direct_io" in profile else None,
    ]
    extra = profile.get("extra_args")
    if extra is not None:
        flags.append("extra args " + (f"`{' '.join(map(str, extra))}`" if extra else "none"))
    if any(flags):
        lines.append("- server: " + ", ".join(flag for flag in flags if flag))
    current = current_split(run)
    if current:
        labels = device_labels(run)
        order = f" (proportions for {', '.join(f'`{x}`' for x in labels)})" if labels else ""
        lines.append(f"- current split: `{current}`{order}")
    lines.append(f"- objective: {objective_text(run)}")
    lines.append(f"- measurement: {_measurement(run, found)}")
    lines += bandwidth.setup_lines((point.split, point.result.metrics) for point in found)
    lines.append(f"- started: {local_time(run.started_at)}")
    if run.finished_at is not None:
        took = duration(run.finished_at - run.started_at)
        lines.append(f"- finished: {local_time(run.finished_at)} ({took}, {run.shown_status})")
    else:
        lines.append(f"- finished: not yet ({run.shown_status})")
    return lines


def _build_text(build: Any) -> str:
    return BuildIdentity.from_record(build).describe()


def _measurement(run: Run, found: Sequence[Point]) -> str:
    measure = _measure(run)
    spec = next((p.result.spec for p in found if p.passed), None) or (
        found[0].result.spec if found else {}
    )
    shape = measure.get("shape", spec.get("shape"))
    tokens = measure.get("tokens", spec.get("target"))
    gen = measure.get("gen", spec.get("gen"))
    parts = [f"shape `{shape}`" if shape else "shape not recorded"]
    if tokens is not None:
        calibrated = next(
            (
                p.result.metrics.get("calibrated")
                for p in found
                if p.result.metrics.get("calibrated")
            ),
            None,
        )
        sent = f" (sent {calibrated})" if calibrated and calibrated != tokens else ""
        parts.append(f"{tokens} prompt tokens{sent}")
    if gen is not None:
        parts.append(f"{gen} generated")
    if "repeat" in measure:
        warmup = int(measure.get("warmup") or 0)
        after = f" after {warmup} warm-up{'s' if warmup != 1 else ''}" if warmup else ""
        repeat = int(measure["repeat"])
        parts.append(f"median of {repeat} repeat{'s' if repeat != 1 else ''}{after}")
    return ", ".join(parts)


def _number(value: float | None, digits: int, noisy: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" + (NOISY_MARK if noisy else "")


def _table_row(point: Point, best: Point | None, current: str | None, walled: bool) -> str:
    noisy = point.result.metrics.get("noisy") or []
    marks = [
        word
        for word, applies in (("best", point is best), ("current", point.split == current))
        if applies
    ]
    status = ", ".join([result_word(point.result), *marks])
    cells = [
        point.split,
        _number(point.pp_tps, 1, "pp_tps" in noisy),
        _number(point.tg_tps, 2, "tg_tps" in noisy),
        _number(point.load_seconds, 1),
        _number(point.objective, 2),
    ]
    if walled:
        wall = bandwidth.fields(point.result.metrics, point.tg_tps if point.passed else None)
        gbs = wall["bandwidth_gbs"]
        cells += [bandwidth.gbs_text(gbs), bandwidth.fraction_text(wall["bandwidth_fraction"], gbs)]
    cells.append(status)
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _coverage(run: Run, found: Sequence[Point]) -> list[str]:
    summary = run.summary
    covered = summary.get("covered", len(found))
    planned = summary.get("planned")
    counts = {
        word: sum(1 for p in found if p.result.status == word) for word in (PASSED, "fail", PRUNED)
    }
    made = f"{counts[PASSED]} passed, {counts['fail']} failed, {counts[PRUNED]} pruned"
    if isinstance(planned, int):
        lines = [f"- covered {covered} of {planned} planned splits ({made})"]
    else:
        lines = [f"- covered {covered} splits, adaptive search with no fixed plan ({made})"]
    stopped = summary.get("stopped")
    if stopped in (None, "running") and run.shown_status != "running":
        stopped = run.shown_status
    if stopped:
        lines.append(
            f"- stopped: {stopped}" + (f" ({STOPPED[stopped]})" if stopped in STOPPED else "")
        )
    return lines
