"""The retry policy of a launch: what is retried, after how long, and what is not."""

from __future__ import annotations

import pytest

from cluster.llamacpp.logs import FailureClass
from cluster.orchestration.retry import NOT_RETRYABLE, after_failure, capped_backoff


@pytest.mark.parametrize("failure", [FailureClass.HANG, FailureClass.TRANSPORT_DROP])
def test_a_transient_failure_is_retried_with_doubling_backoff(failure: FailureClass) -> None:
    delays = [after_failure(failure, tried, 4, 5.0) for tried in (1, 2, 3)]
    assert [(d.retry, d.delay_s) for d in delays] == [(True, 5.0), (True, 10.0), (True, 20.0)]
    last = after_failure(failure, 4, 4, 5.0)
    assert not last.retry and last.reason == "all 4 attempt(s) failed"


@pytest.mark.parametrize("failure", sorted(NOT_RETRYABLE))
def test_what_cannot_change_is_not_retried(failure: FailureClass) -> None:
    decision = after_failure(failure, 1, 3, 5.0)
    assert not decision.retry and decision.reason.endswith("does not change on a retry")


def test_the_not_retryable_set_is_the_setup_problems() -> None:
    assert {c.value for c in NOT_RETRYABLE} == {
        "version_mismatch",
        "model_missing",
        "port_in_use",
        "alloc_failure",
    }


def test_capped_backoff_never_exceeds_the_cap() -> None:
    assert [capped_backoff(n, 10, 300) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    assert capped_backoff(0, 0.5) == 0.5 and capped_backoff(-3, 2) == 2
