"""Summaries of repeated measurements, checked on values worked out by hand."""

from __future__ import annotations

import math

import pytest

from cluster.measure.stats import NOISY_CV, Summary, summarize


def test_odd_count_median_and_sample_stddev() -> None:
    summary = summarize([4.0, 1.0, 3.0, 2.0, 10.0])
    assert summary.n == 5
    assert summary.median == 3.0
    assert (summary.min, summary.max) == (1.0, 10.0)
    assert summary.mean == 4.0
    # squared deviations 0 + 9 + 1 + 4 + 36 = 50; sample variance 50 / 4
    assert summary.stddev == pytest.approx(math.sqrt(12.5))
    assert summary.cv == pytest.approx(math.sqrt(12.5) / 4)
    assert summary.noisy


def test_even_count_median_is_the_mean_of_the_middle_two() -> None:
    summary = summarize([10.0, 40.0, 20.0, 30.0])
    assert summary.median == 25.0
    assert summary.mean == 25.0
    # squared deviations 225 + 25 + 25 + 225 = 500; sample variance 500 / 3 (not / 4)
    assert summary.stddev == pytest.approx(math.sqrt(500 / 3))


def test_noisy_threshold_on_both_sides() -> None:
    # 100 - d, 100, 100 + d: squared deviations 2 d^2 over n - 1 = 2, so stddev = d
    just_below = summarize([90.1, 100.0, 109.9])
    just_above = summarize([89.9, 100.0, 110.1])
    assert just_below.cv == pytest.approx(0.099)
    assert just_above.cv == pytest.approx(0.101)
    assert not just_below.noisy
    assert just_above.noisy
    assert NOISY_CV == 0.10


def test_custom_noisy_threshold() -> None:
    values = [90.0, 100.0, 110.0]  # cv 0.1
    assert summarize(values, noisy_cv=0.05).noisy
    assert not summarize(values, noisy_cv=0.2).noisy
    with pytest.raises(ValueError, match="noisy_cv"):
        summarize(values, noisy_cv=-1)


def test_a_single_value_has_no_spread_and_is_not_noisy() -> None:
    summary = summarize([7.5])
    assert summary == Summary(
        n=1, median=7.5, min=7.5, max=7.5, mean=7.5, stddev=0.0, cv=None, noisy=False
    )


def test_zero_mean_has_no_cv() -> None:
    summary = summarize([-1.0, 1.0])
    assert summary.mean == 0.0
    assert summary.stddev == pytest.approx(math.sqrt(2))
    assert summary.cv is None
    assert not summary.noisy


def test_negative_mean_gives_a_positive_cv() -> None:
    assert summarize([-90.0, -100.0, -110.0]).cv == pytest.approx(0.1)


def test_identical_values_are_quiet() -> None:
    summary = summarize([3, 3, 3])  # ints are accepted and become floats
    assert (summary.stddev, summary.cv, summary.noisy) == (0.0, 0.0, False)
    assert isinstance(summary.median, float)


@pytest.mark.parametrize("values", [[], [1.0, math.nan], [math.inf]])
def test_empty_or_not_finite_raises(values: list[float]) -> None:
    with pytest.raises(ValueError):
        summarize(values)


def test_to_dict_has_every_field() -> None:
    assert summarize([1.0, 3.0]).to_dict() == {
        "n": 2,
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "mean": 2.0,
        "stddev": pytest.approx(math.sqrt(2)),
        "cv": pytest.approx(math.sqrt(2) / 2),
        "noisy": True,
    }
