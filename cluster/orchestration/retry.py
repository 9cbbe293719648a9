"""What to do after a failed launch attempt: retry after a backoff, or stop.

Some failures cannot change by retrying (a version mismatch, a missing model, a taken
port, an allocation that does not fit): they stop at once. Others (a hang, a crash, a
transport drop) are retried after ``backoff_s``, doubling each time, until the attempts
run out. ``capped_backoff`` is the same doubling with a ceiling, for a supervisor that
never gives up (the daemon). Pure, so the policy is unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.llamacpp.logs import FailureClass

NOT_RETRYABLE = frozenset(
    {
        FailureClass.VERSION_MISMATCH,
        FailureClass.MODEL_MISSING,
        FailureClass.PORT_IN_USE,
        FailureClass.ALLOC_FAILURE,
    }
)


@dataclass(frozen=True)
class Decision:
    retry: bool
    delay_s: float = 0.0
    reason: str = ""


def after_failure(failure: FailureClass, tried: int, total: int, backoff_s: float) -> Decision:
    """After attempt ``tried`` (1-based) of ``total`` failed with ``failure``."""
    if failure in NOT_RETRYABLE:
        return Decision(False, reason=f"{failure.value} does not change on a retry")
    if tried >= total:
        return Decision(False, reason=f"all {total} attempt(s) failed")
    return Decision(True, capped_backoff(tried - 1, backoff_s))


def capped_backoff(failures_before: int, base_s: float, cap_s: float | None = None) -> float:
    """``base_s`` doubled for each earlier failure, never above ``cap_s``."""
    delay = base_s * float(2 ** max(0, failures_before))
    return delay if cap_s is None else min(cap_s, delay)
