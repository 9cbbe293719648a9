"""Summaries of repeated measurements: the median to report and how much to trust it.

A bench repeats each case a few times; the median is the figure reported (one slow
outlier does not move it), and the coefficient of variation (sample standard deviation
over the mean) says whether the repetitions agreed. A case whose CV is above ``NOISY_CV``
is flagged ``noisy``: the machine was busy, a link was shared, or the runs were too short.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

# Above this coefficient of variation (10%) repetitions disagree too much to trust.
NOISY_CV = 0.10


@dataclass(frozen=True)
class Summary:
    """The spread of one metric over ``n`` repetitions.

    ``stddev`` is the sample standard deviation (n - 1), 0.0 for a single value. ``cv`` is
    ``stddev / |mean|``, or None when it says nothing: a single value has no spread to
    measure, and a zero mean has no scale. ``noisy`` is True only for a measured ``cv``
    above the threshold; a None ``cv`` is not called noisy, since nothing showed noise (a
    caller that needs repetitions checks ``n``).
    """

    n: int
    median: float
    min: float
    max: float
    mean: float
    stddev: float
    cv: float | None
    noisy: bool

    def to_dict(self) -> dict[str, float | int | bool | None]:
        return asdict(self)


def summarize(values: Sequence[float], noisy_cv: float = NOISY_CV) -> Summary:
    """Summarize repeated measurements; ValueError when there are none or one is not finite.

    The median of an even count is the mean of the two middle values.
    """
    if not values:
        raise ValueError("no values to summarize")
    data = [float(value) for value in values]
    if not all(math.isfinite(value) for value in data):
        raise ValueError(f"values must be finite numbers: {data}")
    if noisy_cv < 0:
        raise ValueError(f"noisy_cv must be >= 0, not {noisy_cv}")
    mean = statistics.fmean(data)
    stddev = statistics.stdev(data) if len(data) > 1 else 0.0
    cv = stddev / abs(mean) if len(data) > 1 and mean != 0 else None
    return Summary(
        n=len(data),
        median=statistics.median(data),
        min=min(data),
        max=max(data),
        mean=mean,
        stddev=stddev,
        cv=cv,
        noisy=cv is not None and cv > noisy_cv,
    )
