"""Two runs side by side (``compare RUN_A RUN_B``): every point or case of either run, and
what differs in their setup.

Results are matched by what they measured: a sweep's points by split (``1.20/0.80`` and
``1.2/0.8`` are one split), a bench's or ceiling's by shape, target, generation, concurrency
and attempt (so two profiles' benches line up), a screen's by case key. Each row has both
statuses, both pp and tg medians and the change from A to B in percent. The setup
differences are the profile values that differ, the builds that differ per host and the
measurement settings that differ; comparing two kinds of run is allowed, with a warning.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table
from rich.text import Text

from cluster.config.models import format_split, parse_split
from cluster.llamacpp.identity import BuildIdentity
from cluster.records import ResultStatus
from cluster.report.tables import last_builds, result_word, run_title
from cluster.store import Attempt, Result, Run

METRICS = ("pp_tps", "tg_tps")
# The sections of a run's configuration compared key by key, besides the profile: a bench's
# or ceiling's request, a sweep's playbook (its objective and measurement), a screen's.
_SETTINGS = ("request", "sweep", "screen")


@dataclass(frozen=True)
class Side:
    """One run's result under a key: its status word and medians (None: not in this run)."""

    status: str | None = None
    pp_tps: float | None = None
    tg_tps: float | None = None


@dataclass(frozen=True)
class Row:
    key: str
    a: Side
    b: Side

    def change(self, metric: str) -> float | None:
        """B against A in percent; None unless both were measured (and A is not zero)."""
        before, after = getattr(self.a, metric), getattr(self.b, metric)
        if before is None or after is None or before == 0:
            return None
        return float((after - before) / before * 100)


@dataclass(frozen=True)
class Difference:
    """A setup value that differs: where (``profile.ctx_size``, ``build evo``) and both."""

    what: str
    a: str
    b: str


@dataclass(frozen=True)
class Comparison:
    title_a: str
    title_b: str
    rows: list[Row]
    differences: list[Difference] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def compare(
    run_a: Run,
    results_a: Sequence[Result],
    attempts_a: Sequence[Attempt],
    run_b: Run,
    results_b: Sequence[Result],
    attempts_b: Sequence[Attempt],
) -> Comparison:
    """Match the two runs' results by key and collect their setup differences."""
    keyed_a = _keyed(run_a, results_a)
    keyed_b = _keyed(run_b, results_b)
    keys = list(keyed_a) + [key for key in keyed_b if key not in keyed_a]
    if run_a.kind == "sweep" and run_b.kind == "sweep":
        keys.sort(key=_split_order)
    rows = [Row(key, _side(keyed_a.get(key)), _side(keyed_b.get(key))) for key in keys]
    warnings = []
    if run_a.kind != run_b.kind:
        warnings.append(
            f"run {run_a.id} is a {run_a.kind} and run {run_b.id} a {run_b.kind}: "
            "only results measured the same way line up"
        )
    if rows and not any(row.a.status and row.b.status for row in rows):
        warnings.append("no result of one run matches a result of the other")
    differences = _profile_differences(run_a, run_b)
    differences += _build_differences(attempts_a, attempts_b)
    for section in _SETTINGS:
        a, b = run_a.config.get(section), run_b.config.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += _differences(section, a, b)
    return Comparison(run_title(run_a), run_title(run_b), rows, differences, warnings)


def _keyed(run: Run, results: Sequence[Result]) -> dict[str, Result]:
    keyed: dict[str, Result] = {}
    for result in results:
        keyed.setdefault(match_key(run, result), result)
    return keyed


def match_key(run: Run, result: Result) -> str:
    """What a result is matched by in the other run."""
    spec = result.spec
    if run.kind == "sweep":
        split = spec.get("split")
        if not isinstance(split, str):
            split = result.key.removeprefix("split=")
        try:
            return format_split(parse_split(split))
        except ValueError:
            return split
    if run.kind in ("bench", "ceiling") and all(k in spec for k in ("shape", "target", "gen")):
        # The config name is the profile's: leave it out so two profiles' runs line up.
        return (
            f"{spec['shape']}/{spec['target']}/g{spec['gen']}"
            f"/c{spec.get('concurrency', 1)}/a{spec.get('attempt', 1)}"
        )
    return result.key


def _split_order(key: str) -> tuple[tuple[float, ...], str]:
    try:
        return tuple(parse_split(key)), key
    except ValueError:
        return (), key


def _side(result: Result | None) -> Side:
    if result is None:
        return Side()
    summary = result.metrics.get("summary") or {}
    medians: list[float | None] = []
    for name in METRICS:
        entry = summary.get(name)
        if isinstance(entry, dict) and entry.get("median") is not None:
            medians.append(float(entry["median"]))
        else:
            medians.append(None)
    return Side(result_word(result), *medians)


def _profiles(run: Run) -> dict[str, dict[str, Any]]:
    profile = run.config.get("profile")
    if isinstance(profile, dict):
        return {"": profile}
    profiles = run.config.get("profiles")
    if isinstance(profiles, dict):
        return {str(k): v for k, v in profiles.items() if isinstance(v, dict)}
    return {}


def _profile_differences(run_a: Run, run_b: Run) -> list[Difference]:
    a, b = _profiles(run_a), _profiles(run_b)
    if len(a) == 1 and len(b) == 1:
        # One profile each (bench, sweep, ceiling): compare them whatever their names.
        return _differences("profile", next(iter(a.values())), next(iter(b.values())))
    found: list[Difference] = []
    for name in list(a) + [name for name in b if name not in a]:
        if name not in a or name not in b:
            found.append(Difference(f"profile {name}", _present(a, name), _present(b, name)))
        else:
            found += _differences(f"profile {name}", a[name], b[name])
    return found


def _present(profiles: Mapping[str, Any], name: str) -> str:
    return "present" if name in profiles else "absent"


def _differences(prefix: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Difference]:
    found = []
    for key in list(a) + [key for key in b if key not in a]:
        value_a, value_b = a.get(key), b.get(key)
        if value_a == value_b:
            continue
        if isinstance(value_a, dict) and isinstance(value_b, dict):
            found += _differences(f"{prefix}.{key}", value_a, value_b)
        else:
            found.append(Difference(f"{prefix}.{key}", _shown(value_a), _shown(value_b)))
    return found


def _shown(value: Any) -> str:
    """A setup value in one short line: a split as ``1.2/0.8``, arguments space-separated."""
    if value is None:
        return "-"
    if isinstance(value, list):
        if not value:
            return "none"
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            return format_split([float(v) for v in value])
        if all(isinstance(v, str) for v in value):
            return " ".join(value)
        return json.dumps(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _build_word(build: Any) -> str:
    if build is None:
        return "-"
    return BuildIdentity.from_record(build).describe()


def _build_differences(a: Sequence[Attempt], b: Sequence[Attempt]) -> list[Difference]:
    builds_a, builds_b = last_builds(a), last_builds(b)
    if not builds_a or not builds_b:
        return []  # a run that loaded nothing says nothing about builds
    found = []
    for host in sorted(set(builds_a) | set(builds_b)):
        word_a, word_b = _build_word(builds_a.get(host)), _build_word(builds_b.get(host))
        if word_a != word_b:
            found.append(Difference(f"build on {host}", word_a, word_b))
    return found


# rendering


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _change(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def _cells(row: Row) -> list[str]:
    return [
        row.key,
        row.a.status or "-",
        row.b.status or "-",
        _number(row.a.pp_tps, 1),
        _number(row.b.pp_tps, 1),
        _change(row.change("pp_tps")),
        _number(row.a.tg_tps, 2),
        _number(row.b.tg_tps, 2),
        _change(row.change("tg_tps")),
    ]


HEADINGS = ("key", "A", "B", "pp A", "pp B", "pp Δ", "tg A", "tg B", "tg Δ")


def comparison_table(c: Comparison) -> Table:
    """The comparison for a terminal; differences and warnings in the caption."""
    caption = [f"A: {c.title_a}", f"B: {c.title_b}"]
    caption += [f"{d.what}: {d.a} → {d.b}" for d in c.differences]
    caption += [f"warning: {warning}" for warning in c.warnings]
    table = Table(
        title=f"{c.title_a} vs {c.title_b}",
        title_justify="left",
        caption="\n".join(caption),
        caption_justify="left",
    )
    for heading in HEADINGS:
        table.add_column(heading, justify="left" if heading in ("key", "A", "B") else "right")
    for row in c.rows:
        cells = [Text(cell) for cell in _cells(row)]
        for index, status in ((1, row.a.status), (2, row.b.status)):
            if status:
                cells[index].stylize("green" if status == ResultStatus.PASS.upper() else "bold red")
        for index, metric in ((5, "pp_tps"), (8, "tg_tps")):
            change = row.change(metric)
            if change is not None and abs(change) >= 1:
                cells[index].stylize("green" if change > 0 else "red")
        table.add_row(*cells)
    return table


def comparison_markdown(c: Comparison) -> str:
    """The comparison as Markdown: warnings, setup differences, then the table."""
    lines = [f"# {c.title_a} vs {c.title_b}", ""]
    if c.warnings:
        lines += [f"> warning: {warning}" for warning in c.warnings]
        lines.append("")
    lines += ["## Setup differences", ""]
    if c.differences:
        lines += [f"- {d.what}: `{d.a}` → `{d.b}`" for d in c.differences]
    else:
        lines.append("None recorded.")
    lines += ["", "## Results", ""]
    if c.rows:
        lines.append("| " + " | ".join(HEADINGS) + " |")
        lines.append("|---|---|---|" + "---:|" * (len(HEADINGS) - 3))
        for row in c.rows:
            cells = [cell.replace("|", "\\|") for cell in _cells(row)]
            lines.append("| " + " | ".join(cells) + " |")
    else:
        lines.append("Neither run recorded results.")
    return "\n".join(lines) + "\n"
