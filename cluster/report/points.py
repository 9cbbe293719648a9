"""A sweep's results as points: each split's numbers and noise, the best, the current.

A sweep (``kind == "sweep"``) records one result per split (``key = "split=1.2/0.8"``),
passed, failed or pruned, with the point's medians and spreads, load time and objective,
and a summary (best split, the profile's own split as the baseline, coverage). ``points``
reads them back in split order; ``best_point`` and ``current_split`` name the two splits a
report compares, and ``judgement`` says whether the best is better than the noise of the
repeats (``report.noise``). The Markdown is ``report.sweep``, the plot ``report.plots``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cluster.config.models import format_split, parse_split
from cluster.records import AttemptOutcome, ResultStatus
from cluster.report import noise
from cluster.store import Attempt, Result, Run

METRIC_LABELS = {"pp_tps": "pp t/s", "tg_tps": "tg t/s"}


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
    # The spread of the objective's repeats (``report.noise``): None when not measured.
    cv: float | None = None
    repeats: int = 0

    @property
    def passed(self) -> bool:
        return self.result.status == ResultStatus.PASS

    def scored(self) -> noise.Scored | None:
        """The point as the noise rule sees it; None without an objective."""
        if self.objective is None or not self.passed:
            return None
        return noise.Scored(self.split, self.objective, self.cv, self.repeats)


def points(run: Run, results: Sequence[Result], attempts: Sequence[Attempt] = ()) -> list[Point]:
    """Every result of a sweep as a point, in split order (by proportions)."""
    metric = objective_config(run).get("metric")
    loads = {
        _normal(attempt.split): attempt.load_seconds
        for attempt in attempts
        if attempt.split
        and attempt.outcome is AttemptOutcome.READY
        and attempt.load_seconds is not None
    }
    found = []
    for result in results:
        split = _split_of(result)
        metrics = result.metrics
        pp, tg = _median(metrics, "pp_tps"), _median(metrics, "tg_tps")
        objective = _float(metrics.get("objective"))
        if objective is None and result.status == ResultStatus.PASS:
            # Single-metric objectives can be read back; a mixed one is the sweep's own.
            objective = {"pp_tps": pp, "tg_tps": tg}.get(str(metric))
        load = _float(metrics.get("load_seconds"))
        cv, repeats = _noise(metrics, metric)
        found.append(
            Point(
                split=split,
                proportions=_proportions(result, split),
                result=result,
                pp_tps=pp,
                tg_tps=tg,
                load_seconds=load if load is not None else loads.get(split),
                objective=objective,
                cv=cv,
                repeats=repeats,
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


def _noise(metrics: Mapping[str, Any], metric: Any) -> tuple[float | None, int]:
    """The coefficient of variation of the objective's repeats and how many there were; a
    mixed objective takes the larger CV of pp and tg (and the fewer repeats)."""
    names = (metric,) if metric in METRIC_LABELS else tuple(METRIC_LABELS)
    entries = [(metrics.get("summary") or {}).get(name) or {} for name in names]
    repeats = min(int(entry.get("n") or 0) for entry in entries)
    cvs = [float(entry["cv"]) for entry in entries if entry.get("cv") is not None]
    if repeats < 2 or len(cvs) < len(entries):
        return None, repeats
    return max(cvs), repeats


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def objective_config(run: Run) -> dict[str, Any]:
    for source in (run.config.get("objective"), (run.config.get("sweep") or {}).get("objective")):
        if isinstance(source, dict):
            return source
    return {}


def profile_of(run: Run) -> dict[str, Any]:
    profile = run.config.get("profile")
    return profile if isinstance(profile, dict) else {}


def measure_of(run: Run) -> dict[str, Any]:
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
    split = profile_of(run).get("tensor_split")
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
    rpc_hosts = profile_of(run).get("rpc_hosts")
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
    width = len(profile_of(run).get("tensor_split") or [])
    return labels if len(labels) == width and len(local) <= 1 else []


def judgement(run: Run, found: Sequence[Point]) -> noise.Judgement:
    """Whether the best split beats every other passed split by more than the noise."""
    best = best_point(run, found)
    scored = best.scored() if best is not None else None
    others = [s for p in found if p is not best and (s := p.scored()) is not None]
    return noise.judge(scored, others)


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


def objective_unit(run: Run) -> str:
    metric = objective_config(run).get("metric")
    return f" {METRIC_LABELS[metric]}" if metric in METRIC_LABELS else " t/s"


def objective_text(run: Run) -> str:
    """What the sweep maximised, in words."""
    objective = objective_config(run)
    metric = objective.get("metric")
    if metric in METRIC_LABELS:
        return f"median {METRIC_LABELS[metric]}"
    if metric in ("mixed", "weighted"):
        weights = objective.get("weights")
        if isinstance(weights, dict) and weights:
            given = ", ".join(f"{key} {float(value):g}" for key, value in weights.items())
        else:
            measure = measure_of(run)
            given = (
                f"pp {measure.get('tokens', '?')}, tg {measure.get('gen', '?')} "
                "(the prompt and generated token counts)"
            )
        return f"{metric}: weighted harmonic mean of pp and tg t/s, weights {given}"
    return str(metric) if metric else "not recorded"
