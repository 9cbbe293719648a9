"""The pictures of a report: a sweep's pp and tg against the split, a screen's or bench's
cases as bars. matplotlib is imported only when a plot is drawn."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.records import ResultStatus
from cluster.report import export
from cluster.report.points import (
    METRIC_LABELS,
    Point,
    best_point,
    current_split,
    device_labels,
    gain_over_current,
    judgement,
    objective_text,
    points,
)
from cluster.report.sanitize import Sanitizer
from cluster.report.tables import run_title
from cluster.store import Result, Run

if TYPE_CHECKING:
    from matplotlib.axes import Axes

FIGSIZE = (8.0, 5.0)
DPI = 120
PASS_COLOR = {"pp_tps": "tab:blue", "tg_tps": "tab:green"}
FAIL_COLOR = "tab:red"
PRUNED_COLOR = "0.55"
BEST_COLOR = "gold"


def sweep_plot(
    run: Run, results: Sequence[Result], path: Path, *, sanitizer: Sanitizer | None = None
) -> Path:
    """pp and tg t/s against the split, as a PNG at ``path``: two panels sharing the split
    axis; failed (red x) and pruned (grey triangle) points at the foot of each panel; the
    best split starred (labelled "highest (within noise)" when no split is better than the
    noise) and the profile's current split drawn as a dashed line."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    clean = sanitizer.text if sanitizer else (lambda s: s)
    found = points(run, results)
    best = best_point(run, found)
    settled = judgement(run, found).settled
    current = current_split(run)
    two = all(len(p.proportions) == 2 for p in found) and bool(found)
    xs = {p.split: (p.proportions[0] if two else float(index)) for index, p in enumerate(found)}

    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    axes = figure.subplots(2, 1, sharex=True)
    for ax, metric in zip(axes, ("pp_tps", "tg_tps"), strict=True):
        passed = [p for p in found if p.passed and _value(p, metric) is not None]
        low, high = _spread(passed, metric)
        ax.errorbar(
            [xs[p.split] for p in passed],
            [_value(p, metric) for p in passed],
            yerr=[low, high],
            color=PASS_COLOR[metric],
            marker="o",
            markersize=5,
            capsize=3,
            linewidth=1.5,
        )
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.grid(True, alpha=0.3)
        _foot_markers(ax, [p for p in found if not p.passed], xs, labelled=metric == "tg_tps")
        if current in xs:
            ax.axvline(xs[current], color="0.35", linestyle="--", linewidth=1)
        if best is not None and (value := _value(best, metric)) is not None:
            ax.plot(
                [xs[best.split]],
                [value],
                marker="*",
                markersize=18,
                color=BEST_COLOR,
                markeredgecolor="black",
                linestyle="none",
                zorder=5,
            )
            ax.annotate(
                f"{value:.1f}" if metric == "pp_tps" else f"{value:.2f}",
                (xs[best.split], value),
                textcoords="offset points",
                xytext=(9, 7),
                ha="left",
                fontsize=9,
                fontweight="bold",
            )
        if not passed:
            ax.text(0.5, 0.5, "no split passed", transform=ax.transAxes, ha="center", color="0.4")
            ax.set_yticks([])
        ax.margins(y=0.2)
    bottom = axes[-1]
    bottom.set_xticks([xs[p.split] for p in found], [p.split for p in found])
    if len(found) > 8 or not two:
        for label in bottom.get_xticklabels():
            label.set_rotation(40)
            label.set_horizontalalignment("right")
    labels = device_labels(run)
    bottom.set_xlabel(clean("tensor split" + (f" ({'/'.join(labels)})" if labels else "")))
    legend = []
    if any(p.passed for p in found):
        legend.append(Line2D([], [], color="0.3", marker="o", label="pass (min-max bars)"))
    if best is not None:
        legend.append(
            Line2D(
                [],
                [],
                color=BEST_COLOR,
                marker="*",
                markersize=12,
                markeredgecolor="black",
                linestyle="none",
                label=f"{'best' if settled else 'highest (within noise)'} {best.split}",
            )
        )
    if current in xs:
        legend.append(Line2D([], [], color="0.35", linestyle="--", label=f"current {current}"))
    if any(p.result.status == ResultStatus.PRUNED for p in found):
        legend.append(_foot_handle(ResultStatus.PRUNED))
    if any(not p.passed and p.result.status != ResultStatus.PRUNED for p in found):
        legend.append(_foot_handle("fail"))
    axes[0].legend(handles=legend, loc="best", fontsize=8, framealpha=0.9)
    headline = f"objective: {objective_text(run)}"
    gain = gain_over_current(run, found)
    if best is not None and not settled:
        headline += "; no split is better than the noise"
    elif best is not None and gain is not None:
        headline += f"; best {best.split}, {gain:+.1f}% over current {current}"
    figure.suptitle(clean(f"{run_title(run)}\n{headline}"), fontsize=10)
    return _save(figure, path)


def _value(point: Point, metric: str) -> float | None:
    return point.pp_tps if metric == "pp_tps" else point.tg_tps


def _spread(passed: Sequence[Point], metric: str) -> tuple[list[float], list[float]]:
    """Distances from each median to its min and max (zero where not recorded)."""
    low, high = [], []
    for point in passed:
        entry = (point.result.metrics.get("summary") or {}).get(metric) or {}
        median = _value(point, metric) or 0.0
        low.append(max(0.0, median - float(entry.get("min", median))))
        high.append(max(0.0, float(entry.get("max", median)) - median))
    return low, high


def _foot_markers(
    ax: Axes, missed: Sequence[Point], xs: Mapping[str, float], *, labelled: bool
) -> None:
    """Points without numbers (failed, pruned), drawn at the foot of the panel; with
    ``labelled``, each with its failure class or ``pruned`` above it."""
    foot = ax.get_xaxis_transform()  # x in data, y in axes fractions
    for point in missed:
        kind = ResultStatus.PRUNED if point.result.status == ResultStatus.PRUNED else "fail"
        style = _foot_style(kind)
        ax.plot([xs[point.split]], [0.05], transform=foot, linestyle="none", **style)
        if labelled:
            word = (
                ResultStatus.PRUNED
                if kind == ResultStatus.PRUNED
                else point.result.failure_class or "fail"
            )
            ax.text(
                xs[point.split],
                0.12,
                word,
                transform=foot,
                ha="center",
                fontsize=8,
                color=style["color"],
            )


def _foot_style(kind: str) -> dict[str, Any]:
    if kind == ResultStatus.PRUNED:
        return {"marker": "v", "markersize": 9, "color": PRUNED_COLOR}
    return {"marker": "x", "markersize": 10, "markeredgewidth": 2.5, "color": FAIL_COLOR}


def _foot_handle(kind: str) -> Any:
    from matplotlib.lines import Line2D

    label = "pruned (did not fit)" if kind == ResultStatus.PRUNED else "failed"
    return Line2D([], [], linestyle="none", label=label, **_foot_style(kind))


def cases_plot(
    run: Run, results: Sequence[Result], path: Path, *, sanitizer: Sanitizer | None = None
) -> Path:
    """pp and tg t/s per case (screens, benches, ceilings) as horizontal bars with min-max
    whiskers, side by side; a failed case has no bar and is labelled with its class."""
    from matplotlib.figure import Figure

    clean = sanitizer.text if sanitizer else (lambda s: s)
    rows = export.rows(run, results)
    labels = [clean(_case_label(result)) for result in results]
    height = min(30.0, max(3.5, 1.6 + 0.34 * len(rows)))
    figure = Figure(figsize=(10.0, height), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    positions = list(range(len(rows)))
    for ax, metric in zip(axes, ("pp_tps", "tg_tps"), strict=True):
        values = [row[metric] if row[metric] is not None else 0.0 for row in rows]
        low, high = [], []
        for result, value in zip(results, values, strict=True):
            entry = (result.metrics.get("summary") or {}).get(metric) or {}
            low.append(max(0.0, value - float(entry.get("min", value))))
            high.append(max(0.0, float(entry.get("max", value)) - value))
        ax.barh(
            positions,
            values,
            xerr=[low, high],
            color=PASS_COLOR[metric],
            capsize=3,
            height=0.6,
        )
        top = max(values, default=0.0) or 1.0
        for position, row, value in zip(positions, rows, values, strict=True):
            if row["status"] != ResultStatus.PASS:
                word = str(row["status"]).upper()
                if row["failure_class"]:
                    word += f" ({row['failure_class']})"
                ax.text(
                    top * 0.02,
                    position,
                    clean(word),
                    va="center",
                    color=FAIL_COLOR,
                    fontweight="bold",
                    fontsize=8,
                )
            elif row[metric] is not None:
                digits = 1 if metric == "pp_tps" else 2
                ax.text(
                    value + top * 0.01, position, f" {value:.{digits}f}", va="center", fontsize=8
                )
        ax.set_xlabel(METRIC_LABELS[metric])
        ax.set_xlim(0, top * 1.18)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(positions, labels, fontsize=8)
    axes[0].invert_yaxis()
    passed = sum(1 for row in rows if row["status"] == ResultStatus.PASS)
    figure.suptitle(clean(f"{run_title(run)}: {passed} of {len(rows)} passed"), fontsize=10)
    return _save(figure, path)


def _case_label(result: Result) -> str:
    spec = result.spec
    if not all(key in spec for key in ("config", "shape", "target")):
        return result.key
    label = f"{spec['config']} {spec['shape']} {spec['target']}"
    if int(spec.get("concurrency") or 1) > 1:
        label += f" c{spec['concurrency']}"
    if int(spec.get("attempt") or 1) > 1:
        label += f" a{spec['attempt']}"
    return label


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
