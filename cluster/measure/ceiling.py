"""``clusterctl ceiling``: the largest prompt of a shape that passes, by ladder and bisection.

The search is pure (``CeilingSearch``): climb a ladder of targets from ``start``,
multiplying by ``factor`` up to ``limit`` (one slot's context minus the generation, by
default); at the first failure, bisect between the last pass and that failure until they
are ``resolution`` tokens apart. The largest passing target is the ceiling; every probe is
kept as the ladder. ``run_ceiling`` feeds it real cases: each probe is a recorded case
(PASS needs every attempt to pass), the cluster is brought back after a failure, and a
resumed run replays recorded probes instead of measuring them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import Field

from cluster.config.models import Inventory, Profile, StrictModel
from cluster.errors import ConfigError, LaunchError
from cluster.measure.cases import CaseOutcome, CaseRunner
from cluster.measure.progress import Progress
from cluster.measure.records import CaseSpec
from cluster.measure.screen import SERVER_SURVIVES
from cluster.measure.serving import RequestLimits, Serving
from cluster.records import ResultStatus, RunKind, RunStatus
from cluster.store import Store
from cluster.transport.pool import HostPool

MIN_TARGET = 64


@dataclass
class CeilingSearch:
    """Ladder up, then bisect; ``next_target`` is None when the search is over."""

    start: int
    limit: int
    resolution: int
    factor: float = 2.0
    ladder: list[tuple[int, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.limit < MIN_TARGET:
            raise ValueError(f"the limit {self.limit} is below the smallest target {MIN_TARGET}")
        self.start = max(MIN_TARGET, min(self.start, self.limit))
        self.resolution = max(1, self.resolution)

    @property
    def best_pass(self) -> int | None:
        passes = [target for target, passed in self.ladder if passed]
        return max(passes) if passes else None

    @property
    def first_fail(self) -> int | None:
        fails = [target for target, passed in self.ladder if not passed]
        return min(fails) if fails else None

    @property
    def ceiling(self) -> int | None:
        return self.best_pass

    def record(self, target: int, passed: bool) -> None:
        self.ladder.append((target, passed))

    def next_target(self) -> int | None:
        if not self.ladder:
            return self.start
        low, high = self.best_pass, self.first_fail
        if high is None:  # still climbing
            assert low is not None
            if low >= self.limit:
                return None
            return min(self.limit, max(low + 1, int(low * self.factor)))
        floor = low if low is not None else MIN_TARGET - 1
        if high - floor <= self.resolution:
            # Nothing passed yet: the smallest target still decides between some and none.
            tried = {target for target, _ in self.ladder}
            if low is None and high > MIN_TARGET and MIN_TARGET not in tried:
                return MIN_TARGET
            return None
        middle = (floor + high) // 2
        return middle if middle > floor else None


class CeilingRequest(StrictModel):
    shape: str
    gen: int = Field(default=32, ge=1)
    start: int | None = Field(default=None, ge=1)
    limit: int | None = Field(default=None, ge=1)
    resolution: int | None = Field(default=None, ge=1)
    factor: float = Field(default=2.0, gt=1)
    attempts: int = Field(default=1, ge=1)
    stall_timeout_s: float = Field(default=300.0, gt=0)
    request_timeout_s: float = Field(default=7200.0, gt=0)


@dataclass(frozen=True)
class CeilingReport:
    run_id: int
    ceiling: int | None
    ladder: list[tuple[int, bool]]
    limit: int


async def run_ceiling(
    inventory: Inventory,
    profile: Profile,
    pool: HostPool,
    store: Store,
    request: CeilingRequest,
    progress: Progress,
    *,
    environ: Mapping[str, str] | None = None,
    health_gate: bool = True,
    resume: int | None = None,
) -> CeilingReport:
    config = {"profile": profile.model_dump(mode="json"), "request": request.model_dump()}
    with store.job(RunKind.CEILING, profile.name, config, resume=resume) as run_id:
        serving = Serving(
            inventory, profile, pool, store, run_id, environ=environ, say=progress.say
        )
        try:
            await serving.start(health_gate=health_gate)
            assert serving.info is not None
            limit = request.limit or serving.info.slot_ctx - request.gen
            try:
                search = CeilingSearch(
                    start=request.start or limit // 8,
                    limit=limit,
                    resolution=request.resolution or max(16, limit // 100),
                    factor=request.factor,
                )
            except ValueError as exc:
                raise ConfigError(f"ceiling for {profile.name}: {exc}", key="--limit") from None
            limits = RequestLimits(request.stall_timeout_s, request.request_timeout_s)
            runner = CaseRunner(serving, store, run_id, limits)
            progress.begin(None, f"ceiling {request.shape} up to {limit}")
            while (target := search.next_target()) is not None:
                passed = await _probe(runner, serving, profile, request, target, progress)
                search.record(target, passed)
                store.update_summary(run_id, _summary(request, search))
        finally:
            await serving.close()
        store.finish_run(run_id, RunStatus.OK, _summary(request, search))
    return CeilingReport(run_id, search.ceiling, search.ladder, search.limit)


async def _probe(
    runner: CaseRunner,
    serving: Serving,
    profile: Profile,
    request: CeilingRequest,
    target: int,
    progress: Progress,
) -> bool:
    """Run (or replay) every attempt at one target; True when all pass."""
    for attempt in range(1, request.attempts + 1):
        spec = CaseSpec(
            config=profile.name,
            profile=profile.name,
            ctx_size=profile.ctx_size,
            parallel=profile.parallel,
            split=serving.split_text,
            shape=request.shape,
            target=target,
            gen=request.gen,
            attempt=attempt,
        )
        outcome: CaseOutcome | None = runner.recorded(spec)
        if outcome is None:
            outcome = await runner.run(spec)
        word = "PASS" if outcome.status == ResultStatus.PASS else f"FAIL {_class(outcome)}"
        progress.advance(f"{target} tokens: {word}")
        progress.say(f"{request.shape} at {target} tokens (attempt {attempt}): {word}")
        if outcome.failure is not None:
            if outcome.failure.failure not in SERVER_SURVIVES:
                try:
                    await serving.restart()
                except LaunchError as exc:
                    raise LaunchError(
                        f"the cluster did not come back after a probe: {exc}"
                    ) from exc
            return False
    return True


def _class(outcome: CaseOutcome) -> str:
    return outcome.failure.failure.value if outcome.failure else ""


def _summary(request: CeilingRequest, search: CeilingSearch) -> dict[str, object]:
    return {
        "shape": request.shape,
        "ceiling": search.ceiling,
        "limit": search.limit,
        "resolution": search.resolution,
        "ladder": [{"target": t, "status": "pass" if ok else "fail"} for t, ok in search.ladder],
    }
