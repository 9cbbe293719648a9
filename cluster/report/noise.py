"""Is a sweep's best split better than the noise of its measurements?

Each point of a sweep is the median of ``repeat`` measurements, and the repeats of one
split disagree, by a percent or two on a big model and by more on a tiny model's short
runs. The highest objective names the best split only when its lead over every other
split is larger than that disagreement explains; otherwise the report says that no split
is better than the noise, and names the splits within it.

The rule (docs/sweeps.md). A point's noise is the coefficient of variation (CV: standard
deviation over mean) of its repeats, for the metric of the objective (for ``mixed``, the
larger of the pp and tg CVs), and ``n`` its number of measured requests. The lead of the
highest point B over another point P is ``(B - P) / P``. When both have at least two
repeats, the lead counts when it is more than

    Z * sqrt(cv_B**2 / n_B + cv_P**2 / n_P)

that is, more than ``Z`` (2) relative standard errors of the difference of the two means.
With a single repeat at either point nothing measured the noise: the lead counts only when
it is more than ``UNKNOWN_NOISE_LEAD`` (10%, the CV above which ``measure.stats`` calls
repeats too noisy to trust). The best split is settled when its lead over every other
split that passed counts; the others are its ties.

Pure: numbers in, a ``Judgement`` and its sentences out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cluster.measure.stats import NOISY_CV

# How many relative standard errors of the difference a lead must exceed.
Z = 2.0
# The lead that counts when a point's noise was not measured (a single repeat).
UNKNOWN_NOISE_LEAD = NOISY_CV


@dataclass(frozen=True)
class Scored:
    """One passed point: its split, objective, and the noise of its repeats."""

    split: str
    objective: float
    cv: float | None  # None: not measured (one repeat, or a zero mean)
    repeats: int


@dataclass(frozen=True)
class Tie:
    """A point the best does not beat by more than the noise."""

    point: Scored
    lead: float  # the best's relative lead over it
    needed: float  # the lead that would have counted
    measured: bool  # False: the noise was unknown and the fixed margin applied


@dataclass(frozen=True)
class Judgement:
    best: Scored | None
    ties: tuple[Tie, ...] = ()

    @property
    def settled(self) -> bool:
        """There is a best split and it beats every other by more than the noise."""
        return self.best is not None and not self.ties


def needed_lead(best: Scored, other: Scored) -> tuple[float, bool]:
    """The relative lead of ``best`` over ``other`` that counts, and whether it comes from
    measured noise (else the fixed ``UNKNOWN_NOISE_LEAD``)."""
    if best.cv is None or other.cv is None or best.repeats < 2 or other.repeats < 2:
        return UNKNOWN_NOISE_LEAD, False
    return Z * math.sqrt(best.cv**2 / best.repeats + other.cv**2 / other.repeats), True


def judge(best: Scored | None, others: Sequence[Scored]) -> Judgement:
    """Whether ``best`` beats each of ``others`` by more than the noise."""
    if best is None:
        return Judgement(None)
    ties = []
    for other in others:
        lead = (
            (best.objective - other.objective) / other.objective
            if other.objective > 0
            else math.inf
        )
        needed, measured = needed_lead(best, other)
        if lead <= needed:
            ties.append(Tie(other, lead, needed, measured))
    return Judgement(best, tuple(sorted(ties, key=lambda tie: tie.lead)))


def unsettled_text(judgement: Judgement, unit: str) -> str:
    """The report's verdict when no split is better than the noise: the highest, the
    splits within its noise (how far behind, and what lead would have counted), and the
    rule that applied."""
    best = judgement.best
    assert best is not None and judgement.ties
    within = ", ".join(
        f"`{tie.point.split}` ({tie.point.objective:.2f}, {tie.lead * 100:.1f}% lower; "
        f"a lead counts above {tie.needed * 100:.1f}%)"
        for tie in judgement.ties
    )
    verb = "is" if len(judgement.ties) == 1 else "are"
    text = (
        f"No split is better than the noise: `{best.split}` scored highest (objective "
        f"{best.objective:.2f}{unit}), but {within} {verb} within the noise of it."
    )
    if any(not tie.measured for tie in judgement.ties):
        text += (
            " With a single repeat the noise is unknown, so a lead must be more than "
            f"{UNKNOWN_NOISE_LEAD * 100:.0f}% to count; measure with repeat = 3 or more."
        )
    else:
        text += (
            f" A lead counts when it is more than {Z:g} standard errors of the difference, "
            "from the repeats' coefficients of variation."
        )
    return text
