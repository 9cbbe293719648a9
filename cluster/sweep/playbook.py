"""Sweep playbooks (playbooks/sweeps/NAME.toml): which splits to try, and what "best" means.

::

    profile = "minimax-q8"
    strategy = "grid"                  # or "adaptive": coarse pass, then golden section
    range = { start = "0.6/1.4", stop = "1.4/0.6", step = 0.1 }
    # splits = ["1/1", "1.2/0.8"]      # an explicit list instead
    # grid_step = 0.25                 # N devices: every split on this grid (sum = N)
    tolerance = 0.05                   # adaptive: stop when the bracket is this narrow

    [objective]
    metric = "tg_tps"                  # or "pp_tps", or "mixed"

    [measure]                          # each point, as `clusterctl bench` measures it
    shape = "random"
    tokens = 512
    gen = 128
    repeat = 3

``mixed`` scores a split by how fast it serves the measured request as a whole: the
weighted harmonic mean ``(w_pp + w_tg) / (w_pp / pp + w_tg / tg)``, with the weights the
prompt and generated token counts unless ``[objective.weights]`` gives ``pp`` and ``tg``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cluster.config.loader import find_named, read_toml, validate
from cluster.config.models import Name, StrictModel, parse_split
from cluster.measure.bench import BenchRequest
from cluster.sweep.search import split_grid, split_range


class SplitRange(StrictModel):
    start: list[float]
    stop: list[float]
    step: float = Field(gt=0)

    @field_validator("start", "stop", mode="before")
    @classmethod
    def _split(cls, value: object) -> list[float]:
        return parse_split(value)


class Objective(StrictModel):
    metric: Literal["tg_tps", "pp_tps", "mixed"] = "tg_tps"
    weights: dict[Literal["pp", "tg"], float] | None = None

    def score(self, pp: float | None, tg: float | None, tokens: int, gen: int) -> float | None:
        """The value to maximise, from a point's median rates; None if not measured."""
        if self.metric == "tg_tps":
            return tg
        if self.metric == "pp_tps":
            return pp
        if not pp or not tg:
            return None
        weights = self.weights or {"pp": float(tokens), "tg": float(gen)}
        w_pp, w_tg = weights.get("pp", 0.0), weights.get("tg", 0.0)
        return (w_pp + w_tg) / (w_pp / pp + w_tg / tg)


class SweepPlaybook(StrictModel):
    name: Name
    description: str = ""
    profile: Name
    strategy: Literal["grid", "adaptive"] = "grid"
    splits: list[list[float]] | None = None
    range: SplitRange | None = None
    grid_step: float | None = Field(default=None, gt=0)
    tolerance: float = Field(default=0.05, gt=0)
    # Also measure the profile's own split, so the report can say how much the best beats it.
    include_current: bool = True
    prune: bool = True
    objective: Objective = Field(default_factory=Objective)
    measure: BenchRequest = Field(default_factory=BenchRequest)

    @field_validator("splits", mode="before")
    @classmethod
    def _splits(cls, value: object) -> list[list[float]] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            raise ValueError("splits is a non-empty list such as ['1/1', '1.2/0.8']")
        return [parse_split(item) for item in value]

    @model_validator(mode="after")
    def _one_source(self) -> SweepPlaybook:
        given = [key for key in ("splits", "range", "grid_step") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of splits, range or grid_step")
        if self.strategy == "adaptive" and self.splits is not None:
            raise ValueError("strategy 'adaptive' searches a range or grid, not a list of splits")
        if self.measure.concurrency != 1:
            raise ValueError("a sweep measures one request at a time (measure.concurrency = 1)")
        if self.range is not None:
            split_range(self.range.start, self.range.stop, self.range.step)  # raises if unusable
        return self

    def candidates(self, n_devices: int) -> list[list[float]]:
        """The splits a grid sweep measures, in order."""
        if self.splits is not None:
            return [list(split) for split in self.splits]
        if self.range is not None:
            return split_range(self.range.start, self.range.stop, self.range.step)
        assert self.grid_step is not None
        return split_grid(n_devices, self.grid_step)


def load_sweep(playbooks_dir: Path, name: str) -> SweepPlaybook:
    """A sweep by name from playbooks/sweeps/, or from a .toml path."""
    path = find_named(playbooks_dir / "sweeps", name, "sweep playbook", "sweeps")
    data = read_toml(path)
    data.setdefault("name", path.stem)
    return validate(SweepPlaybook, data, str(path))


def deadline(until: str, now: float) -> float:
    """The time (epoch seconds) a sweep must stop by: ``07:00`` is the next 07:00 local
    time, ``6h``, ``90m``, ``1h30m`` or ``45s`` a duration from ``now``."""
    text = until.strip()
    clock = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if clock:
        hour, minute = int(clock.group(1)), int(clock.group(2))
        if hour > 23 or minute > 59:
            raise ValueError(f"{until!r} is not a time of day (HH:MM)")
        today = datetime.fromtimestamp(now).replace(
            hour=hour, minute=minute, second=0, microsecond=0
        )
        when = today if today.timestamp() > now else today + timedelta(days=1)
        return when.timestamp()
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not text or parts is None:
        raise ValueError(f"{until!r} is neither a time of day (07:00) nor a duration (6h, 90m)")
    hours, minutes, seconds = (int(group or 0) for group in parts.groups())
    return now + hours * 3600 + minutes * 60 + seconds
