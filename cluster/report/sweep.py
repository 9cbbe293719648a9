"""A sweep's report in Markdown.

``sweep_markdown`` says what was measured on what, lists every point in split order (with
the bandwidth its generation reads and that bandwidth's fraction of the split's peak, when
the point recorded the bytes a token reads: ``report.bandwidth``), says which split is best
and by how much it beats the profile's current split, or that no split is better than the
noise of the repeats (``report.noise``), why points were pruned or failed, and how much of
the plan was covered. The points themselves are ``report.points``; the plot is
``report.plots``; the files ``report`` writes, ``report.files``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cluster.llamacpp.identity import BuildIdentity
from cluster.records import ResultStatus
from cluster.report import bandwidth, noise
from cluster.report.links import link_lines
from cluster.report.points import (
    Point,
    best_point,
    current_split,
    device_labels,
    gain_over_current,
    judgement,
    measure_of,
    objective_text,
    objective_unit,
    points,
    profile_of,
)
from cluster.report.tables import (
    NOISY_MARK,
    duration,
    last_builds,
    local_time,
    result_word,
    run_title,
)
from cluster.store import Attempt, Result, Run

STOPPED = {
    "done": "every planned split was evaluated",
    "until": "the time budget (--until) ran out",
    "interrupted": "the sweep was interrupted",
    "failed": "the sweep stopped on an error",
    "running": "the sweep is still running",
}


def sweep_markdown(run: Run, results: Sequence[Result], attempts: Sequence[Attempt]) -> str:
    """The sweep as a Markdown document to publish: verdict, setup, every point in split
    order, why points were pruned or failed, and coverage."""
    found = points(run, results, attempts)
    best = best_point(run, found)
    current = current_split(run)
    judged = judgement(run, found)
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
        lines += [_table_row(point, best, current, walled, judged) for point in found]
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
    """One sentence: the best split, and how it compares with the profile's current one;
    or, when its lead is within the noise, that no split is better than the noise."""
    best = best_point(run, found)
    current = current_split(run)
    unit = objective_unit(run)
    if best is None or best.objective is None:
        return "No split passed: there is no best split."
    judged = judgement(run, found)
    if not judged.settled:
        text = noise.unsettled_text(judged, unit)
        tied = {tie.point.split for tie in judged.ties} | {best.split}
        if current in tied:
            text += f" The profile's current split `{current}` is among them: keep it."
        return text
    text = f"Best split: `{best.split}` (objective {best.objective:.2f}{unit})"
    if current is None:
        return text + "."
    if best.split == current:
        return text + ", the profile's current split."
    baseline = next((point for point in found if point.split == current), None)
    if baseline is None:
        return text + f"; the current split `{current}` was not measured."
    if baseline.result.status == ResultStatus.PRUNED:
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


def _setup(run: Run, found: Sequence[Point], attempts: Sequence[Attempt]) -> list[str]:
    profile = profile_of(run)
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
    lines += link_lines(attempts)
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
    measure = measure_of(run)
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


def _table_row(
    point: Point, best: Point | None, current: str | None, walled: bool, judged: noise.Judgement
) -> str:
    noisy = point.result.metrics.get("noisy") or []
    tied = {tie.point.split for tie in judged.ties}
    marks = [
        word
        for word, applies in (
            ("best" if judged.settled else "highest", point is best),
            ("within noise", point.split in tied),
            ("current", point.split == current),
        )
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
    counts = {word: sum(1 for p in found if p.result.status is word) for word in ResultStatus}
    made = (
        f"{counts[ResultStatus.PASS]} passed, {counts[ResultStatus.FAIL]} failed, "
        f"{counts[ResultStatus.PRUNED]} pruned"
    )
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
