"""Which tensor splits to evaluate: grids of splits, and strategies that propose the next one.

A split is a list of non-negative proportions, one per device (``1.2/0.8``). Loading a
model with a new split takes minutes, so a sweep is judged by how few splits it evaluates.
Everything here is pure and deterministic: no I/O, no clock, no randomness.

Grids. ``split_range`` is the two-device range a person writes ("0.6/1.4 to 1.4/0.6 step
0.1"); ``split_grid`` is every split of N devices on a grid of ``step``. ``normalise`` is
the canonical form (scaled to sum to the device count, six decimals) that makes ``1/1``
and ``2/2`` the same split, for de-duplication and for looking results up.

Strategies. A ``Strategy`` only proposes; the caller evaluates and records::

    while (split := strategy.propose()) is not None:
        strategy.record(split, measure(split))  # None: failed to load, or pruned

Both strategies are a function of what has been recorded: ``propose`` returns the first
point of their plan whose value is not yet known. A resumed job therefore replays the
results it already stored (``record`` for each, in any order) and the strategy carries on
where it stopped, without re-measuring anything. Calling ``propose`` again before
``record`` returns the same split. A failed or pruned split (``None``) counts as worse than
any measured one; it is still an evaluation and is never proposed again.

``GridStrategy`` proposes the given splits once each, in order. ``AdaptiveStrategy``:

* Two devices: ``coarse`` evenly spaced values of the first proportion over
  ``[lower, upper]`` (the second keeps the total), then a golden-section search in the
  bracket between the best coarse point's neighbours, stopping when the bracket is no wider
  than ``tolerance``. Golden-section search needs a unimodal objective, and tokens/s
  against the split is one in practice: a single hump, rising while load moves off the
  slower device and falling once the other device becomes the bottleneck (or stops
  fitting, which is a failure, i.e. the bottom). The coarse pass finds the bracket that
  holds the hump wherever it is, and a peak at either end of the range is a bracket with
  the best point at its end. Each golden step probes the larger of the two parts beside
  the best point, 0.382 of the way into it, so the bracket narrows by about 0.618 per
  evaluation: the best rate for a search that only compares values and reuses the point
  it keeps (bisection needs two evaluations per halving).
* More devices: the coarse grid over the simplex (each proportion in ``[lower, upper]``,
  ``coarse`` values along each: at most C(coarse + N - 2, N - 1) splits), then a compass
  search around the best point: move ``step`` of proportion from one device to another,
  take the first move that improves and poll again from there, and halve ``step`` when no
  move improves. It starts at half the coarse spacing; the last round is the first whose
  step is at most ``tolerance`` (or one grid step). Moves between pairs of devices cannot
  unload two devices at once, so on a ridge where two devices are the bottleneck together
  the search can stop up to one step short of the peak.

With ``grid_step``, every proposal lies on the grid ``lower + k * grid_step`` (for two
devices, of the first proportion; for more, of each), so results compare with a grid sweep.
A golden step that would round onto the point kept is moved one grid step off it; when
that lands on an end of the bracket, no grid point is left to try inside it and the search
has converged. A point already recorded is never proposed again: the plan takes its
recorded value. Without ``grid_step`` the grid is the six-decimal rounding every split
gets anyway.

Flat and noisy objectives. A difference of at most ``noise`` (relative) is a tie, and a tie
keeps the point already found (the earlier one), so the search never chases noise. If all
measured coarse points tie, the objective is flat at the resolution that can be measured:
the search stops after the coarse pass, and any of them is as good as the best. On a noisy
hump a comparison can go the wrong way only between points whose true values differ by
less than the spread of two measurements; the bracket may then close next to the peak
rather than on it, on a point within that spread of the peak (the tests hold it to 4%
for +-2% noise). With the default ``noise`` of 0 only exact ties count.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator, Sequence
from typing import Protocol

from cluster.config.models import format_split

# Splits are rounded to this many decimals: well below any difference that matters.
DECIMALS = 6
# Slack for comparing proportions computed in floating point.
EPSILON = 1e-9
# No sweep of splits that each take minutes to load is this large; it is a typo in a step.
MAX_GRID_POINTS = 100_000
# The fraction of the larger part of the bracket where a golden-section step probes.
GOLDEN = (3 - math.sqrt(5)) / 2

# A search plan yields splits and is sent their values (None: failed or pruned).
Plan = Generator[list[float], float | None, None]


def _round(value: float) -> float:
    # Adding 0.0 turns -0.0 into 0.0, so equal splits are equal tuples.
    return round(value, DECIMALS) + 0.0


def _nearest(value: float) -> int:
    # Round half up: Python's round() goes to even, which is harder to predict by hand.
    return math.floor(value + 0.5)


def _show(split: Sequence[float]) -> str:
    return format_split(list(split)) if split else "(empty)"


def split_range(start: Sequence[float], stop: Sequence[float], step: float) -> list[list[float]]:
    """The two-device splits from ``start`` to ``stop``: "0.6/1.4 to 1.4/0.6 step 0.1".

    The first proportion moves by ``step`` towards ``stop``, the second keeps the total;
    ``stop`` is included when it lies on the grid (within 1e-9). Proportions are rounded to
    six decimals. ValueError when either end is not two proportions >= 0, their sums
    differ, or ``step`` is not positive.
    """
    if len(start) != 2 or len(stop) != 2:
        raise ValueError(
            f"a split range is for two devices; {_show(start)} to {_show(stop)} is not"
        )
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"the step of a split range must be > 0, not {step:g}")
    if any(not (math.isfinite(part) and part >= 0) for part in (*start, *stop)):
        raise ValueError(f"proportions must be >= 0: {_show(start)} to {_show(stop)}")
    total = start[0] + start[1]
    if total <= 0:
        raise ValueError(f"{_show(start)} gives the devices nothing")
    if abs(total - (stop[0] + stop[1])) > EPSILON:
        raise ValueError(
            f"{_show(start)} sums to {total:g} but {_show(stop)} to {stop[0] + stop[1]:g}: "
            "the second proportion keeps the total, so both ends need the same sum"
        )
    span = stop[0] - start[0]
    direction = 1.0 if span >= 0 else -1.0
    steps = math.floor((abs(span) + EPSILON) / step)
    if steps + 1 > MAX_GRID_POINTS:
        raise ValueError(f"{steps + 1} splits from {_show(start)} to {_show(stop)}: step too small")
    splits = []
    for index in range(steps + 1):
        first = _round(start[0] + direction * index * step)
        splits.append([first, _round(total - first)])
    return splits


def _compositions(total: int, parts: int) -> Iterator[tuple[int, ...]]:
    """Every way to write ``total`` as ``parts`` non-negative integers, ascending."""
    if parts == 1:
        yield (total,)
        return
    for first in range(total + 1):
        for rest in _compositions(total - first, parts - 1):
            yield (first, *rest)


def split_grid(
    n_devices: int, step: float, total: float | None = None, minimum: float | None = None
) -> list[list[float]]:
    """Every split of ``n_devices`` whose proportions are multiples of ``step`` summing to
    ``total`` (default ``n_devices``, the ``1/1`` style), each at least ``minimum``.

    ``minimum`` defaults to one ``step``, so every device gets part of the model: a zero
    leaves a device connected but unused, which is a different deployment from the one
    being tuned (pass ``minimum=0`` to include those). The splits are sorted ascending
    (first proportion, then the next...), so for two devices this is
    ``split_range([m, total - m], [total - m, m], step)`` with ``m`` the smallest
    multiple of ``step`` that is at least ``minimum``. ValueError when ``total`` is not a
    whole number of steps, when no split satisfies ``minimum``, or when the grid would
    have more than ``MAX_GRID_POINTS`` splits.
    """
    if n_devices < 1:
        raise ValueError(f"a split needs at least one device, not {n_devices}")
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"the step of a split grid must be > 0, not {step:g}")
    total = float(n_devices) if total is None else total
    minimum = step if minimum is None else minimum
    if not (math.isfinite(total) and total > 0):
        raise ValueError(f"the total of a split must be > 0, not {total:g}")
    if not (math.isfinite(minimum) and minimum >= 0):
        raise ValueError(f"the minimum proportion must be >= 0, not {minimum:g}")
    units = _nearest(total / step)
    if units == 0 or abs(units * step - total) > EPSILON * max(1.0, total):
        raise ValueError(f"a total of {total:g} is not a whole number of steps of {step:g}")
    least = max(0, math.ceil(minimum / step - EPSILON))
    free = units - n_devices * least
    if free < 0:
        raise ValueError(
            f"{n_devices} devices with at least {least * step:g} each need more than {total:g}"
        )
    count = math.comb(free + n_devices - 1, n_devices - 1)
    if count > MAX_GRID_POINTS:
        raise ValueError(
            f"a grid of {n_devices} devices at step {step:g} has {count} splits; "
            "use a coarser step or the adaptive search"
        )
    return [
        [_round((least + part) * step) for part in parts]
        for parts in _compositions(free, n_devices)
    ]


def normalise(split: Sequence[float]) -> tuple[float, ...]:
    """The canonical form of a split: scaled to sum to its device count, six decimals.

    Two splits are the same split when their forms are equal (``1/1``, ``2/2``, ``0.5/0.5``).
    """
    if not split:
        raise ValueError("a split needs at least one proportion")
    if any(not (math.isfinite(part) and part >= 0) for part in split):
        raise ValueError(f"proportions must be finite and >= 0: {_show(split)}")
    total = math.fsum(split)
    if total <= 0:
        raise ValueError(f"{_show(split)} gives the devices nothing")
    scale = len(split) / total
    return tuple(_round(part * scale) for part in split)


class Strategy(Protocol):
    """Proposes splits to evaluate; the caller evaluates them and records the values."""

    def propose(self) -> list[float] | None:
        """The next split to evaluate, or None when the search is done."""
        ...

    def record(self, split: Sequence[float], value: float | None) -> None:
        """The objective at ``split`` (higher is better); None when it failed or was pruned."""
        ...

    @property
    def best(self) -> tuple[list[float], float] | None:
        """The best split recorded and its value; None until one succeeded."""
        ...

    @property
    def evaluations(self) -> int:
        """How many distinct splits have been recorded, failures included."""
        ...


class _Recorder:
    """What both strategies share: the recorded results, keyed by canonical split."""

    def __init__(self, n_devices: int | None) -> None:
        self._n_devices = n_devices
        # Insertion order is recording order; re-recording a split keeps its place.
        self._results: dict[tuple[float, ...], tuple[list[float], float | None]] = {}

    def record(self, split: Sequence[float], value: float | None) -> None:
        """Record the objective at ``split``; None when it failed or was pruned.

        Recording a split again replaces its value (the later measurement wins).
        """
        if self._n_devices is not None and len(split) != self._n_devices:
            raise ValueError(f"{_show(split)} is not a split of {self._n_devices} devices")
        if value is not None and not math.isfinite(value):
            raise ValueError(f"a measured value must be finite, not {value}; None is a failure")
        self._results[normalise(split)] = (list(split), value)

    def _known(self, split: Sequence[float]) -> bool:
        return normalise(split) in self._results

    @property
    def best(self) -> tuple[list[float], float] | None:
        """The highest value recorded and its split (the earliest on a tie)."""
        best: tuple[list[float], float] | None = None
        for split, value in self._results.values():
            if value is not None and (best is None or value > best[1]):
                best = (list(split), value)
        return best

    @property
    def evaluations(self) -> int:
        """How many distinct splits have been recorded, failures included."""
        return len(self._results)


class GridStrategy(_Recorder):
    """Proposes each of ``splits`` once, in order (duplicates such as 1/1 and 2/2 once)."""

    def __init__(self, splits: Sequence[Sequence[float]]) -> None:
        super().__init__(len(splits[0]) if splits else None)
        self._plan: list[list[float]] = []
        seen: set[tuple[float, ...]] = set()
        for split in splits:
            if len(split) != self._n_devices:
                raise ValueError(f"{_show(split)} is not a split of {self._n_devices} devices")
            key = normalise(split)
            if key not in seen:
                seen.add(key)
                self._plan.append(list(split))

    def propose(self) -> list[float] | None:
        """The first split of the grid not yet recorded; None when all are."""
        for split in self._plan:
            if not self._known(split):
                return list(split)
        return None


class AdaptiveStrategy(_Recorder):
    """A coarse pass, then golden-section (two devices) or compass search (more).

    ``lower`` and ``upper`` bound the first proportion for two devices, and every
    proportion for more; proportions sum to ``total`` (default ``n_devices``). The module
    docstring describes the search, ``tolerance``, ``grid_step`` and ``noise``.
    """

    def __init__(
        self,
        n_devices: int,
        *,
        lower: float,
        upper: float,
        tolerance: float,
        coarse: int = 5,
        grid_step: float | None = None,
        total: float | None = None,
        noise: float = 0.0,
    ) -> None:
        super().__init__(n_devices)
        if n_devices < 2:
            raise ValueError(f"a split search needs at least two devices, not {n_devices}")
        self._total = float(n_devices) if total is None else total
        if not (math.isfinite(self._total) and self._total > 0):
            raise ValueError(f"the total of a split must be > 0, not {self._total:g}")
        if not (0 <= lower < upper):
            raise ValueError(f"the bounds need 0 <= lower < upper, not {lower:g} and {upper:g}")
        if n_devices == 2 and upper > self._total + EPSILON:
            raise ValueError(f"upper {upper:g} is more than the total {self._total:g}")
        if n_devices > 2 and not (n_devices * lower < self._total <= n_devices * upper):
            raise ValueError(
                f"{n_devices} proportions between {lower:g} and {upper:g} "
                f"cannot sum to {self._total:g}"
            )
        if not (math.isfinite(tolerance) and tolerance > 0):
            raise ValueError(f"the tolerance must be > 0, not {tolerance:g}")
        if coarse < 2:
            raise ValueError(f"the coarse pass needs at least two points, not {coarse}")
        if grid_step is not None and not (math.isfinite(grid_step) and grid_step > 0):
            raise ValueError(f"the grid step must be > 0, not {grid_step:g}")
        if not (math.isfinite(noise) and noise >= 0):
            raise ValueError(f"the noise must be >= 0, not {noise:g}")
        self._lower = lower
        self._upper = upper
        self._tolerance = tolerance
        self._coarse = coarse
        self._noise = noise
        # Positions are whole numbers of this unit above ``lower``.
        self._unit = 10.0**-DECIMALS if grid_step is None else grid_step
        # The lattice: positions 0..span of the first proportion (two devices), or the
        # units shared above ``lower`` by all proportions (more devices).
        if n_devices == 2:
            self._span = math.floor((upper - lower + EPSILON) / self._unit)
            what = f"the range {lower:g} to {upper:g}"
        else:
            free = self._total - n_devices * lower
            self._span = _nearest(free / self._unit)
            if grid_step is not None and abs(self._span * grid_step - free) > EPSILON:
                raise ValueError(
                    f"{n_devices} proportions of at least {lower:g} leave {free:g} to share, "
                    f"not a whole number of grid steps of {grid_step:g}"
                )
            what = f"the {free:g} to share above {lower:g} each"
        if self._span < 1:
            raise ValueError(f"{what} is narrower than one grid step of {self._unit:g}")

    def propose(self) -> list[float] | None:
        """The first split of the plan whose value is not recorded; None when converged."""
        plan = self._plan()
        try:
            split = next(plan)
            while self._known(split):
                split = plan.send(self._results[normalise(split)][1])
        except StopIteration:
            return None
        finally:
            plan.close()
        return split

    def _plan(self) -> Plan:
        return self._plan_two() if self._n_devices == 2 else self._plan_many()

    def _better(self, value: float, than: float) -> bool:
        """Whether ``value`` beats ``than`` by more than the noise (a tie keeps ``than``)."""
        if than == -math.inf:
            return value > than
        return value - than > self._noise * abs(than)

    def _flat(self, values: Sequence[float]) -> bool:
        measured = [value for value in values if value != -math.inf]
        if len(measured) < 2:
            return False
        return not self._better(max(measured), min(measured))

    def _done(self, width: int) -> bool:
        return width * self._unit <= self._tolerance + EPSILON

    def _two(self, position: int) -> list[float]:
        first = _round(self._lower + position * self._unit)
        return [first, _round(self._total - first)]

    def _plan_two(self) -> Plan:
        last = self._coarse - 1
        points = sorted({_nearest(index * self._span / last) for index in range(last + 1)})
        values: list[float] = []
        for point in points:
            values.append(_score((yield self._two(point))))
        if self._flat(values):
            return
        at = values.index(max(values))
        if values[at] == -math.inf:
            return
        low, mid, high = points[max(at - 1, 0)], points[at], points[min(at + 1, len(points) - 1)]
        mid_value = values[at]
        while not self._done(high - low):
            # Probe the larger part of the bracket, at least one grid step from ``mid``.
            if high - mid >= mid - low:
                probe = mid + max(1, _nearest(GOLDEN * (high - mid)))
                if probe >= high:
                    return
            else:
                probe = mid - max(1, _nearest(GOLDEN * (mid - low)))
                if probe <= low:
                    return
            value = _score((yield self._two(probe)))
            if self._better(value, mid_value):
                low, high = (mid, high) if probe > mid else (low, mid)
                mid, mid_value = probe, value
            else:
                low, high = (low, probe) if probe > mid else (probe, high)

    def _many(self, position: Sequence[int]) -> list[float]:
        return [_round(self._lower + units * self._unit) for units in position]

    def _allowed(self, position: Sequence[int]) -> bool:
        return all(
            units >= 0 and self._lower + units * self._unit <= self._upper + EPSILON
            for units in position
        )

    def _plan_many(self) -> Plan:
        devices = self._n_devices or 0
        last = self._coarse - 1
        points: list[tuple[int, ...]] = []
        for parts in _compositions(last, devices):
            point = _apportion([part * self._span / last for part in parts], self._span)
            if point not in points and self._allowed(point):
                points.append(point)
        values: list[float] = []
        for point in points:
            values.append(_score((yield self._many(point))))
        if not values or self._flat(values):
            return
        at = values.index(max(values))
        if values[at] == -math.inf:
            return
        best, best_value = points[at], values[at]
        moves = [(give, take) for give in range(devices) for take in range(devices) if give != take]
        step = max(1, _nearest(self._span / last / 2))
        while True:
            improved = True
            while improved:
                improved = False
                for give, take in moves:
                    moved = list(best)
                    moved[give] -= step
                    moved[take] += step
                    if not self._allowed(moved):
                        continue
                    value = _score((yield self._many(moved)))
                    if self._better(value, best_value):
                        best, best_value = tuple(moved), value
                        improved = True
                        break
            if step == 1 or self._done(step):
                return
            step //= 2


def _score(value: float | None) -> float:
    return -math.inf if value is None else value


def _apportion(shares: Sequence[float], total: int) -> tuple[int, ...]:
    """Whole numbers near ``shares`` that sum to ``total`` (largest remainders round up)."""
    floors = [math.floor(share + EPSILON) for share in shares]
    order = sorted(range(len(shares)), key=lambda index: (floors[index] - shares[index], index))
    for index in order[: total - sum(floors)]:
        floors[index] += 1
    return tuple(floors)
