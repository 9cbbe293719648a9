"""The rule that says whether a sweep's best split is better than the noise."""

from __future__ import annotations

import math

import pytest

from cluster.report.noise import (
    UNKNOWN_NOISE_LEAD,
    Judgement,
    Scored,
    judge,
    needed_lead,
    unsettled_text,
)


def point(split: str, objective: float, cv: float | None = 0.01, repeats: int = 3) -> Scored:
    return Scored(split, objective, cv, repeats)


def test_the_lead_needed_is_two_standard_errors_of_the_difference() -> None:
    needed, measured = needed_lead(point("a", 10, 0.03, 3), point("b", 9, 0.04, 4))
    assert measured and needed == pytest.approx(2 * math.sqrt(0.03**2 / 3 + 0.04**2 / 4))


def test_more_repeats_narrow_what_counts() -> None:
    few, _ = needed_lead(point("a", 10, 0.02, 3), point("b", 9, 0.02, 3))
    many, _ = needed_lead(point("a", 10, 0.02, 12), point("b", 9, 0.02, 12))
    assert many == pytest.approx(few / 2)


@pytest.mark.parametrize(
    ("best", "other"),
    [
        (point("a", 10, None, 1), point("b", 9)),
        (point("a", 10), point("b", 9, None, 1)),
        (point("a", 10, 0.01, 1), point("b", 9)),  # a cv from one value is no measurement
        (point("a", 10), point("b", 9, None, 3)),  # a zero mean has no cv
    ],
)
def test_without_measured_noise_a_lead_needs_ten_percent(best: Scored, other: Scored) -> None:
    assert needed_lead(best, other) == (UNKNOWN_NOISE_LEAD, False)
    assert UNKNOWN_NOISE_LEAD == 0.10


def test_a_lead_beyond_the_noise_settles_the_best() -> None:
    # 5% lead; needed 2 * sqrt(2 * 0.01**2 / 3) = 1.6%.
    judged = judge(point("a", 10.5), [point("b", 10.0), point("c", 8.0)])
    assert judged.settled and judged.best is not None and judged.best.split == "a"


def test_points_within_the_noise_are_ties_closest_first() -> None:
    judged = judge(
        point("a", 10.1, 0.05), [point("b", 9.5, 0.05), point("c", 10.0, 0.05), point("d", 5.0)]
    )
    assert not judged.settled
    assert [tie.point.split for tie in judged.ties] == ["c", "b"]
    assert judged.ties[0].lead == pytest.approx(0.01)
    assert all(tie.measured for tie in judged.ties)


def test_a_lead_equal_to_what_counts_is_still_a_tie() -> None:
    judged = judge(point("a", 11.0, None, 1), [point("b", 10.0, None, 1)])
    assert [tie.point.split for tie in judged.ties] == ["b"]  # exactly 10%
    assert judge(point("a", 11.01, None, 1), [point("b", 10.0, None, 1)]).settled


def test_one_passed_point_is_settled_and_none_is_not() -> None:
    assert judge(point("a", 10), []).settled
    assert not Judgement(None).settled and not judge(None, [point("b", 1)]).settled


def test_a_point_that_scored_zero_is_beaten() -> None:
    assert judge(point("a", 1.0, None, 1), [point("b", 0.0, None, 1)]).settled


def test_the_sentence_names_the_ties_and_the_rule_that_applied() -> None:
    measured = judge(point("a", 10.1, 0.05), [point("b", 10.0, 0.05)])
    assert unsettled_text(measured, " tg t/s") == (
        "No split is better than the noise: `a` scored highest (objective 10.10 tg t/s), but "
        "`b` (10.00, 1.0% lower; a lead counts above 8.2%) is within the noise of it. A lead "
        "counts when it is more than 2 standard errors of the difference, from the repeats' "
        "coefficients of variation."
    )
    unknown = judge(
        point("a", 10.1, None, 1), [point("b", 10.0, None, 1), point("c", 9.5, None, 1)]
    )
    text = unsettled_text(unknown, " t/s")
    assert "`b` (10.00, 1.0% lower; a lead counts above 10.0%), `c` (9.50, 6.3% lower" in text
    assert "are within the noise of it. With a single repeat the noise is unknown" in text
