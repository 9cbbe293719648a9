"""Split grids and the search strategies, on synthetic objectives with known optima.

Every adaptive search is compared with the full grid over the same range: it must reach the
grid's best (within the stated tolerance) with clearly fewer evaluations, never propose a
split twice, and, with a grid step, only propose splits of that grid. The bounds on the
number of evaluations are the measured counts, so a search that gets worse fails here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from cluster.sweep.search import (
    MAX_GRID_POINTS,
    AdaptiveStrategy,
    GridStrategy,
    Strategy,
    normalise,
    split_grid,
    split_range,
)

Objective = Callable[[list[float]], float | None]

# The two-device range of the adaptive tests: 0.6/1.4 to 1.4/0.6 step 0.05, 17 splits.
LOWER, UPPER, GRID_STEP, TOLERANCE = 0.6, 1.4, 0.05, 0.05
GRID = split_range([LOWER, 2 - LOWER], [UPPER, 2 - UPPER], GRID_STEP)


def run(strategy: Strategy, objective: Objective) -> list[list[float]]:
    """Drive a strategy to the end as a sweep job would; the splits it evaluated, in order."""
    evaluated: list[list[float]] = []
    recorded_before = strategy.evaluations
    while (split := strategy.propose()) is not None:
        assert strategy.propose() == split, "propose changed its mind before a record"
        assert normalise(split) not in {normalise(done) for done in evaluated}, split
        evaluated.append(split)
        strategy.record(split, objective(split))
        assert len(evaluated) <= 2000, "the search does not end"
    assert strategy.evaluations == recorded_before + len(evaluated)
    return evaluated


def grid_best(objective: Objective, grid: Sequence[list[float]]) -> tuple[list[float], float]:
    measured = [(split, value) for split in grid if (value := objective(split)) is not None]
    return max(measured, key=lambda pair: pair[1])


def adaptive_two(noise: float = 0.0) -> AdaptiveStrategy:
    return AdaptiveStrategy(
        2, lower=LOWER, upper=UPPER, tolerance=TOLERANCE, grid_step=GRID_STEP, noise=noise
    )


def hump(split: list[float]) -> float:
    return 20 - 30 * (split[0] - 1.23) ** 2


# --- split_range -------------------------------------------------------------------------


def test_split_range_moves_the_first_proportion_and_keeps_the_sum() -> None:
    splits = split_range([0.6, 1.4], [1.4, 0.6], 0.1)
    assert splits[:3] == [[0.6, 1.4], [0.7, 1.3], [0.8, 1.2]]
    assert splits[-1] == [1.4, 0.6]
    assert len(splits) == 9
    assert all(first + second == pytest.approx(2.0) for first, second in splits)
    # Rounded, not 0.7000000000000001.
    assert all(part == round(part, 6) for split in splits for part in split)


def test_split_range_runs_downwards_and_keeps_other_totals() -> None:
    assert split_range([1.5, 0.5], [1.0, 1.0], 0.25) == [[1.5, 0.5], [1.25, 0.75], [1.0, 1.0]]
    assert split_range([3, 1], [1, 3], 1) == [[3, 1], [2, 2], [1, 3]]
    assert split_range([1, 1], [1, 1], 0.1) == [[1, 1]]


def test_split_range_includes_the_end_only_when_it_is_on_the_grid() -> None:
    # 0.8 / 0.05 is 15.999999999999998 in floating point: the end is still on the grid.
    assert split_range([0.6, 1.4], [1.4, 0.6], 0.05)[-1] == [1.4, 0.6]
    assert len(GRID) == 17
    assert split_range([0.6, 1.4], [1.0, 1.0], 0.15) == [[0.6, 1.4], [0.75, 1.25], [0.9, 1.1]]


@pytest.mark.parametrize(
    ("start", "stop", "step", "message"),
    [
        ([0.6, 1.4], [1.5, 0.6], 0.1, "sums to 2 but 1.5/0.6 to 2.1"),
        ([0.6, 1.4], [1.4, 0.6], 0.0, "must be > 0"),
        ([0.6, 1.4], [1.4, 0.6], -0.1, "must be > 0"),
        ([0.6, 1.4, 1.0], [1.4, 0.6, 1.0], 0.1, "for two devices"),
        ([2.0], [2.0], 0.1, "for two devices"),
        ([-0.2, 2.2], [1.0, 1.0], 0.1, ">= 0"),
        ([0.0, 0.0], [0.0, 0.0], 0.1, "nothing"),
        ([1.0, 1.0], [0.0, 2.0], 1e-6, "step too small"),
    ],
)
def test_split_range_errors(
    start: list[float], stop: list[float], step: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        split_range(start, stop, step)


# --- split_grid --------------------------------------------------------------------------


def test_split_grid_for_two_devices_is_the_full_range() -> None:
    grid = split_grid(2, 0.1)
    # The default minimum is one step: every device gets part of the model.
    assert grid[0] == [0.1, 1.9]
    assert grid[-1] == [1.9, 0.1]
    assert grid == split_range([0.1, 1.9], [1.9, 0.1], 0.1)
    assert split_grid(2, 0.05, minimum=0.6) == GRID
    assert split_grid(2, 0.5, minimum=0) == [[0, 2], [0.5, 1.5], [1, 1], [1.5, 0.5], [2, 0]]


def test_split_grid_for_three_devices() -> None:
    grid = split_grid(3, 0.25)
    # 12 steps of 0.25 make the total 3; each device takes at least one: 9 free steps over
    # 3 devices, C(11, 2) = 55 splits.
    assert len(grid) == math.comb(11, 2) == 55
    assert all(math.fsum(split) == pytest.approx(3.0, abs=1e-9) for split in grid)
    assert all(min(split) >= 0.25 for split in grid)
    assert grid == sorted(grid)
    assert len({normalise(split) for split in grid}) == len(grid)
    assert [1.0, 1.0, 1.0] in grid
    assert grid[0] == [0.25, 0.25, 2.5]


def test_split_grid_total_and_minimum() -> None:
    grid = split_grid(3, 0.1, total=1.0, minimum=0.3)
    assert grid == [[0.3, 0.3, 0.4], [0.3, 0.4, 0.3], [0.4, 0.3, 0.3]]
    # A minimum off the grid rounds up to the next grid value.
    assert split_grid(2, 0.5, minimum=0.2) == [[0.5, 1.5], [1, 1], [1.5, 0.5]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_devices": 2, "step": 0.3}, "not a whole number of steps of 0.3"),
        ({"n_devices": 2, "step": 0.0}, "must be > 0"),
        ({"n_devices": 0, "step": 0.1}, "at least one device"),
        ({"n_devices": 3, "step": 0.5, "minimum": 1.5}, "need more than 3"),
        ({"n_devices": 2, "step": 0.1, "minimum": -1.0}, "minimum"),
        ({"n_devices": 2, "step": 0.1, "total": 0.0}, "total"),
        ({"n_devices": 8, "step": 0.05}, "splits; use a coarser step"),
    ],
)
def test_split_grid_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_grid(**kwargs)


def test_split_grid_limit_is_what_refuses_the_large_grid() -> None:
    # 8 devices at 0.05: 160 steps, 152 free over 8 devices.
    assert math.comb(152 + 7, 7) > MAX_GRID_POINTS


# --- normalise ---------------------------------------------------------------------------


def test_normalise_makes_equal_splits_equal() -> None:
    assert normalise([1, 1]) == normalise([2, 2]) == normalise([0.5, 0.5]) == (1.0, 1.0)
    assert normalise([1.2, 0.8]) == normalise([0.6, 0.4]) == (1.2, 0.8)
    assert normalise([3, 1, 0]) == (2.25, 0.75, 0.0)
    assert normalise([1, 2]) == (0.666667, 1.333333)
    assert normalise([1.2, 0.8]) != normalise([0.8, 1.2])
    splits: list[list[float]] = [[1, 1], [2, 2], [1.2, 0.8], [0.6, 0.4], [0.8, 1.2]]
    assert len({normalise(split) for split in splits}) == 3


@pytest.mark.parametrize("split", [[], [0, 0], [1, -1], [1, math.nan], [1, math.inf]])
def test_normalise_errors(split: list[float]) -> None:
    with pytest.raises(ValueError):
        normalise(split)


# --- GridStrategy ------------------------------------------------------------------------


def test_grid_proposes_each_split_once_in_order() -> None:
    splits: list[list[float]] = [[0.8, 1.2], [1, 1], [2, 2], [1.2, 0.8]]
    strategy: Strategy = GridStrategy(splits)
    values = {0.8: 10.0, 1.0: 12.0, 1.2: 11.0}
    evaluated = run(strategy, lambda split: values[split[0]])
    # 2/2 is 1/1 again.
    assert evaluated == [[0.8, 1.2], [1, 1], [1.2, 0.8]]
    assert strategy.best == ([1, 1], 12.0)
    assert strategy.evaluations == 3
    assert strategy.propose() is None


def test_grid_ignores_failures_and_prefers_the_earliest_tie() -> None:
    strategy = GridStrategy(GRID)
    assert strategy.best is None
    evaluated = run(strategy, lambda split: None if split[0] > 1.0 else 7.0)
    assert len(evaluated) == 17
    assert strategy.best == ([0.6, 1.4], 7.0)
    everything_fails = GridStrategy(GRID)
    run(everything_fails, lambda split: None)
    assert everything_fails.best is None
    assert everything_fails.evaluations == 17


def test_grid_skips_what_was_recorded_before() -> None:
    strategy = GridStrategy(GRID)
    strategy.record([1.2, 0.8], 5.0)
    strategy.record([0.6, 1.4], None)
    assert strategy.propose() == [0.65, 1.35]
    evaluated = run(strategy, lambda split: 1.0)
    assert len(evaluated) == 15
    assert strategy.evaluations == 17
    assert strategy.best == ([1.2, 0.8], 5.0)


def test_record_checks_its_input() -> None:
    strategy = GridStrategy(GRID)
    with pytest.raises(ValueError, match="not a split of 2 devices"):
        strategy.record([1, 1, 1], 1.0)
    with pytest.raises(ValueError, match="finite"):
        strategy.record([1, 1], math.nan)
    with pytest.raises(ValueError, match="not a split of 2 devices"):
        GridStrategy([[1, 1], [1, 1, 1]])


def test_recording_again_replaces_the_value() -> None:
    strategy = GridStrategy([[1, 1], [1.2, 0.8]])
    strategy.record([1, 1], 10.0)
    strategy.record([1.2, 0.8], 11.0)
    strategy.record([2, 2], 12.0)
    assert strategy.best == ([2, 2], 12.0)
    assert strategy.evaluations == 2


# --- AdaptiveStrategy, two devices -------------------------------------------------------


def monotone(split: list[float]) -> float:
    return 10 + 5 * split[0]


def low_fails(split: list[float]) -> float | None:
    return None if split[0] < 0.8 else hump(split)


def memory_edge(split: list[float]) -> float | None:
    # Faster the more the first device takes, until it no longer fits (pruned).
    return None if split[0] > 1.27 else monotone(split)


def bottleneck(split: list[float]) -> float:
    # A kinked hump: tokens/s limited by whichever device is slower for its share.
    return 1 / max(split[0] / 1.0, split[1] / 1.6)


def peak_low(split: list[float]) -> float:
    return 20 - 30 * (split[0] - 0.71) ** 2


# name, objective, most evaluations allowed (the measured count), relative gap to the grid
CASES: list[tuple[str, Objective, int, float]] = [
    ("unimodal", hump, 8, 0.01),
    ("monotone, peak at the boundary", monotone, 7, 0.01),
    ("failures below 0.8", low_fails, 8, 0.01),
    ("pruned above 1.27", memory_edge, 8, 0.01),
    ("bottleneck kink", bottleneck, 9, 0.01),
    ("peak near the lower end", peak_low, 9, 0.01),
]


@pytest.mark.parametrize(
    ("objective", "most", "gap"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_adaptive_reaches_the_grid_best_with_fewer_evaluations(
    objective: Objective, most: int, gap: float
) -> None:
    strategy = adaptive_two()
    evaluated = run(strategy, objective)
    _, grid_value = grid_best(objective, GRID)
    assert strategy.best is not None
    best_split, best_value = strategy.best
    counts = f"adaptive {len(evaluated)} evaluations vs grid {len(GRID)}: {evaluated}"
    assert len(evaluated) <= most, counts
    assert best_value >= grid_value - gap * abs(grid_value), counts
    # Every proposal is a point of the grid sweep, so the results compare.
    grid_keys = {normalise(split) for split in GRID}
    assert all(normalise(split) in grid_keys for split in evaluated)
    assert objective(best_split) == best_value


def test_adaptive_finds_the_exact_grid_optimum_of_the_hump() -> None:
    strategy = adaptive_two()
    evaluated = run(strategy, hump)
    # The coarse pass, then three golden steps: 1.3, 1.1, and 1.25 (the grid's best).
    assert [split[0] for split in evaluated] == [0.6, 0.8, 1.0, 1.2, 1.4, 1.3, 1.1, 1.25]
    assert strategy.best is not None
    assert strategy.best[0] == [1.25, 0.75]
    assert strategy.best[1] == pytest.approx(19.988)


def test_adaptive_stops_after_the_coarse_pass_on_a_flat_objective() -> None:
    strategy = adaptive_two()
    evaluated = run(strategy, lambda split: 10.0)
    assert [split[0] for split in evaluated] == [0.6, 0.8, 1.0, 1.2, 1.4]
    assert strategy.best == ([0.6, 1.4], 10.0)


def test_adaptive_treats_differences_within_the_noise_as_flat() -> None:
    def nearly_flat(split: list[float]) -> float:
        return 10.0 * (1 + 0.01 * math.sin(7 * split[0]))

    assert len(run(adaptive_two(noise=0.03), nearly_flat)) == 5
    assert len(run(adaptive_two(), nearly_flat)) > 5


def test_adaptive_on_a_noisy_hump_lands_within_the_noise() -> None:
    # +-2% multiplicative noise: two measurements can disagree by up to 4% of the value,
    # so that is how far below the true grid optimum (20 - 30 * 0.02 ** 2) the split the
    # search settles on may be, by its true value.
    true_optimum = hump([1.25, 0.75])
    for noise in (0.0, 0.02):
        counts = []
        for seed in range(50):
            rng = random.Random(seed)

            def noisy(split: list[float], rng: random.Random = rng) -> float:
                return hump(split) * (1 + rng.uniform(-0.02, 0.02))

            strategy = adaptive_two(noise=noise)
            counts.append(len(run(strategy, noisy)))
            assert strategy.best is not None
            found = hump(strategy.best[0])
            assert found >= true_optimum * (1 - 0.04), (noise, seed, strategy.best)
        assert max(counts) <= 9, counts


def test_adaptive_without_a_grid_step_converges_within_the_tolerance() -> None:
    strategy = AdaptiveStrategy(2, lower=0.6, upper=1.4, tolerance=0.01)
    evaluated = run(strategy, hump)
    assert strategy.best is not None
    assert strategy.best[0][0] == pytest.approx(1.23, abs=0.01)
    assert len(evaluated) <= 13


def test_adaptive_when_everything_fails_stops_after_the_coarse_pass() -> None:
    strategy = adaptive_two()
    assert len(run(strategy, lambda split: None)) == 5
    assert strategy.best is None


def test_adaptive_total_other_than_the_device_count() -> None:
    strategy = AdaptiveStrategy(2, lower=3, upper=7, total=10, tolerance=0.5, grid_step=0.5)
    evaluated = run(strategy, lambda split: -((split[0] - 6.2) ** 2))
    assert all(sum(split) == pytest.approx(10) for split in evaluated)
    assert strategy.best is not None
    assert strategy.best[0] == [6.0, 4.0]


def test_a_resumed_search_replays_its_records_and_measures_only_new_splits() -> None:
    history: list[tuple[list[float], float | None]] = []
    complete = adaptive_two()
    for split in run(complete, low_fails):
        history.append((split, low_fails(split)))
    for crashed_after in range(len(history) + 1):
        resumed = adaptive_two()
        # The stored results come back in any order.
        for split, value in reversed(history[:crashed_after]):
            resumed.record(split, value)
        remaining = run(resumed, low_fails)
        assert remaining == [split for split, _ in history[crashed_after:]], crashed_after
        assert resumed.best == complete.best


@pytest.mark.parametrize(
    ("n_devices", "kwargs", "message"),
    [
        (1, {"lower": 0.5, "upper": 1.0}, "at least two devices"),
        (2, {"lower": 1.4, "upper": 0.6}, "lower < upper"),
        (2, {"lower": 0.6, "upper": 2.4}, "more than the total"),
        (2, {"lower": 0.6, "upper": 1.4, "tolerance": 0}, "tolerance"),
        (2, {"lower": 0.6, "upper": 1.4, "coarse": 1}, "two points"),
        (2, {"lower": 0.6, "upper": 1.4, "grid_step": 0}, "grid step"),
        (2, {"lower": 0.6, "upper": 0.62, "grid_step": 0.05}, "narrower than one grid step"),
        (2, {"lower": 0.6, "upper": 1.4, "noise": -0.1}, "noise"),
        (3, {"lower": 1.1, "upper": 2.0}, "cannot sum to 3"),
        (3, {"lower": 0.1, "upper": 0.9}, "cannot sum to 3"),
        (3, {"lower": 0.3, "upper": 2.0, "grid_step": 0.4}, "whole number of grid steps"),
    ],
)
def test_adaptive_errors(n_devices: int, kwargs: dict[str, Any], message: str) -> None:
    options: dict[str, Any] = {"tolerance": 0.05, **kwargs}
    with pytest.raises(ValueError, match=message):
        AdaptiveStrategy(n_devices, **options)


# --- AdaptiveStrategy, three devices -----------------------------------------------------

TARGET = (1.2, 1.05, 0.75)
FINE = [split for split in split_grid(3, 0.05, minimum=0.3) if max(split) <= 2.0]


def bowl(split: list[float]) -> float:
    return 30 - 10 * sum((part - target) ** 2 for part, target in zip(split, TARGET, strict=True))


def adaptive_three(grid_step: float | None = None) -> AdaptiveStrategy:
    return AdaptiveStrategy(3, lower=0.3, upper=2.0, tolerance=0.05, grid_step=grid_step)


def test_three_devices_reach_the_fine_grid_optimum() -> None:
    strategy = adaptive_three(grid_step=0.05)
    evaluated = run(strategy, bowl)
    grid_split, grid_value = grid_best(bowl, FINE)
    assert grid_split == list(TARGET)
    assert strategy.best is not None
    counts = f"adaptive {len(evaluated)} evaluations vs fine grid {len(FINE)}"
    assert len(FINE) == 838
    assert len(evaluated) <= 33, counts
    assert strategy.best == (list(TARGET), grid_value), counts
    fine_keys = {normalise(split) for split in FINE}
    assert all(normalise(split) in fine_keys for split in evaluated)
    assert all(math.fsum(split) == pytest.approx(3.0) for split in evaluated)


def test_three_devices_without_a_grid_step() -> None:
    strategy = adaptive_three()
    evaluated = run(strategy, bowl)
    assert strategy.best is not None
    for part, target in zip(strategy.best[0], TARGET, strict=True):
        assert part == pytest.approx(target, abs=0.05)
    assert len(evaluated) <= 42


def test_three_devices_up_to_a_pruned_region() -> None:
    def edge(split: list[float]) -> float | None:
        return None if split[0] > 1.62 else split[0] + 0.5 * split[1] + 0.2 * split[2]

    strategy = adaptive_three(grid_step=0.05)
    evaluated = run(strategy, edge)
    _, grid_value = grid_best(edge, FINE)
    assert strategy.best is not None
    assert strategy.best[1] == pytest.approx(grid_value)
    assert len(evaluated) <= 26


def test_three_devices_flat_stops_after_the_coarse_pass() -> None:
    strategy = adaptive_three(grid_step=0.05)
    evaluated = run(strategy, lambda split: 1.0)
    # 5 values along each proportion; the three corners (2.4 each) are above the bound.
    assert len(evaluated) == math.comb(6, 2) - 3
    assert all(max(split) <= 2.0 for split in evaluated)
