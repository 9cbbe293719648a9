"""``clusterctl sweep``: the tensor-split sweep that cannot lose a night's work.

The strategy (``search.py``) proposes splits; for each one the job:

1. replays it from the record if the run already has it (``--resume``, or a resume after
   the controller was killed): nothing finished is measured twice;
2. prunes it when the memory estimate says a host cannot hold its share (recorded as
   ``pruned`` with the reason, never loaded);
3. reloads llama-server with that split while the rpc-servers keep running with their
   tensor caches (the ``up`` machinery: hang watchdog, retries), and records the load time;
4. measures it as ``clusterctl bench`` would, and records the point the moment it ends,
   with the objective and the bytes of weights a token reads on each device of that split
   (``measure.bandwidth``, from the GGUF headers read once per run); a point whose load or
   measurement fails is recorded with its class and log tails, and the sweep goes on.

Before each new point the time budget (``--until``) is checked against the time points
have taken so far; a sweep that would overrun stops gracefully and says what it covered.
The run's summary (best split, the profile's own split, coverage) is rewritten after
every point, so ``report`` shows the state of a sweep that is still running or was killed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cluster.config.models import Inventory, Profile, format_split
from cluster.config.resolve import devices_for
from cluster.errors import LaunchError
from cluster.llamacpp.gguf_info import ModelInfo
from cluster.llamacpp.logs import FailureClass
from cluster.measure.bandwidth import traffic_for
from cluster.measure.bench import bench_spec, read_model
from cluster.measure.cases import CaseRunner
from cluster.measure.progress import Progress
from cluster.measure.records import median_of
from cluster.measure.serving import RequestLimits, Serving
from cluster.records import ResultStatus, RunKind, RunStatus
from cluster.store import Result, Store
from cluster.sweep.playbook import SweepPlaybook
from cluster.sweep.prune import MemoryModel, memory_model
from cluster.sweep.search import AdaptiveStrategy, GridStrategy, Strategy, normalise
from cluster.transport.pool import HostPool


def point_key(split: list[float]) -> str:
    return f"split={format_split(split)}"


@dataclass
class SweepReport:
    run_id: int
    stopped: str  # done, until
    covered: int
    measured_now: int
    best: tuple[str, float] | None


class Sweep:
    """One sweep playbook run (or resumed) in one run of the record."""

    def __init__(
        self,
        inventory: Inventory,
        playbook: SweepPlaybook,
        profile: Profile,
        pool: HostPool,
        store: Store,
        progress: Progress,
        *,
        environ: Mapping[str, str] | None = None,
        health_gate: bool = True,
        until: float | None = None,
    ) -> None:
        self.inventory = inventory
        self.playbook = playbook
        self.profile = profile
        self.pool = pool
        self.store = store
        self.progress = progress
        self.environ = dict(environ or {})
        self.health_gate = health_gate
        self.until = until
        self.n_devices = len(devices_for(inventory, profile))
        self.limits = RequestLimits(
            playbook.measure.stall_timeout_s, playbook.measure.request_timeout_s
        )
        self._serving: Serving | None = None
        self._runner: CaseRunner | None = None
        self._memory: MemoryModel | None = None
        self._model: ModelInfo | None = None
        self._point_seconds: list[float] = []
        # Every point of the run by key, as recorded: read once, then kept up to date.
        self._recorded: dict[str, Result] = {}

    def run_config(self) -> dict[str, Any]:
        return {
            "sweep": self.playbook.model_dump(mode="json"),
            "profile": self.profile.model_dump(mode="json"),
            "hosts": {
                name: host.model_dump(mode="json") for name, host in self.inventory.hosts.items()
            },
            "objective": self.playbook.objective.model_dump(mode="json"),
        }

    def strategy(self) -> tuple[Strategy, int | None]:
        """The search and how many points it plans (None: adaptive, it decides as it goes)."""
        book = self.playbook
        if book.strategy == "adaptive":
            step: float | None
            if book.range is not None:
                ends = sorted([normalise(book.range.start)[0], normalise(book.range.stop)[0]])
                lower, upper, step = ends[0], ends[1], book.range.step
            else:  # a grid over every device: each keeps at least one step
                step = book.grid_step
                lower = step or 0.05
                upper = float(self.n_devices) - lower * (self.n_devices - 1)
            strategy = AdaptiveStrategy(
                self.n_devices,
                lower=lower,
                upper=upper,
                tolerance=book.tolerance,
                grid_step=step,
            )
            return strategy, None
        splits = book.candidates(self.n_devices)
        current = list(self.profile.tensor_split)
        if book.include_current and normalise(current) not in {normalise(s) for s in splits}:
            splits = [current, *splits]
        return GridStrategy(splits), len({normalise(split) for split in splits})

    async def run(self, resume: int | None = None) -> SweepReport:
        book = self.playbook
        with self.store.job(
            RunKind.SWEEP, self.profile.name, self.run_config(), resume=resume
        ) as run_id:
            strategy, planned = self.strategy()
            recorded = self._recorded = {r.key: r for r in self.store.results(run_id)}
            if recorded:
                self.progress.say(f"resuming run {run_id}: {len(recorded)} point(s) recorded")
            # Points recorded before a resume count: a resumed bar ends at planned/planned.
            done = min(len(recorded), planned) if planned is not None else len(recorded)
            self.progress.begin(planned, f"sweep {book.name}", done=done)
            if book.prune:
                self._memory, why = await memory_model(self.pool, self.inventory, self.profile)
                if self._memory is None:
                    self.progress.say(f"no memory pruning: {why}")
            if self._memory is not None:
                self._model = self._memory.info
            else:
                self._model = await read_model(
                    self.pool, self.inventory, self.profile, self.progress.say
                )
            stopped, measured_now = "done", 0
            try:
                if book.include_current and book.strategy == "adaptive":  # a grid lists it
                    await self._point(run_id, list(self.profile.tensor_split))
                while (split := strategy.propose()) is not None:
                    key = point_key(split)
                    if key not in recorded and self._out_of_time():
                        stopped = "until"
                        break
                    value, fresh = await self._point(run_id, split)
                    measured_now += int(fresh)
                    strategy.record(split, value)
                    self.store.update_summary(run_id, self._summary(planned, "running"))
            finally:
                if self._serving is not None:
                    await self._serving.close()
            summary = self._summary(planned, stopped)
            self.store.finish_run(run_id, RunStatus.OK, summary)
        best = summary["best"]
        return SweepReport(
            run_id,
            stopped,
            summary["covered"],
            measured_now,
            (best["split"], best["objective"]) if best else None,
        )

    def _out_of_time(self) -> bool:
        if self.until is None:
            return False
        per_point = statistics.median(self._point_seconds) if self._point_seconds else 0.0
        return time.time() + per_point > self.until

    async def _point(
        self,
        run_id: int,
        split: list[float],
    ) -> tuple[float | None, bool]:
        """Evaluate (or replay) one split; returns its objective and whether it was measured."""
        key = point_key(split)
        if key in self._recorded:
            return self._recorded[key].metrics.get("objective"), False
        started = time.monotonic()
        text = format_split(split)
        best_so_far = self._best()
        self.progress.describe(
            f"split {text}"
            + (f" | best {best_so_far[0]} {best_so_far[1]:.2f}" if best_so_far else "")
        )
        if self._memory is not None:
            misfits = self._memory.misfits(self.inventory, self.profile, split)
            if misfits:
                reason = "; ".join(misfits)
                self.store.record_result(
                    run_id, key, ResultStatus.PRUNED, spec=self._spec(split), evidence=reason
                )
                self._recorded[key] = self._stored(run_id, key)
                self.progress.say(f"split {text}: pruned, {reason}")
                self.progress.advance(f"split {text}: pruned")
                return None, True
        value = await self._measure(run_id, split, key)
        self._recorded[key] = self._stored(run_id, key)
        self._point_seconds.append(time.monotonic() - started)
        best = self._best()
        shown = f"{value:.2f}" if value is not None else "failed"
        best_text = f"best {best[0]} {best[1]:.2f}" if best else "no best yet"
        self.progress.advance(f"split {text}: {shown} | {best_text}")
        return value, True

    def _spec(self, split: list[float]) -> dict[str, Any]:
        spec = bench_spec(self.profile, format_split(split), self.playbook.measure)
        return {**spec.model_dump(), "proportions": split}

    async def _measure(self, run_id: int, split: list[float], key: str) -> float | None:
        measure = self.playbook.measure
        load_seconds: float | None = None
        try:
            if self._serving is None:
                self._serving = Serving(
                    self.inventory,
                    self.profile,
                    self.pool,
                    self.store,
                    run_id,
                    split=split,
                    environ=self.environ,
                    say=self.progress.say,
                )
                await self._serving.start(health_gate=self.health_gate)
                load_seconds = self._serving.loads[-1].load_seconds if self._serving.loads else None
            else:
                load_seconds = (await self._serving.reload(split)).load_seconds
        except LaunchError as exc:
            attempts = self.store.attempts(run_id)
            last = attempts[-1] if attempts else None
            cls = last.failure_class if last and last.failure_class else FailureClass.UNKNOWN.value
            self.store.record_result(
                run_id,
                key,
                ResultStatus.FAIL,
                spec=self._spec(split),
                metrics={"load_seconds": None, "objective": None},
                failure_class=cls,
                evidence=str(exc),
                log_tails=last.log_tails if last else {},
            )
            self.progress.say(f"split {format_split(split)}: did not load: {exc}")
            return None
        if self._runner is None:
            self._runner = CaseRunner(self._serving, self.store, run_id, self.limits)

        traffic = (
            traffic_for(self._model, self.inventory, self.profile, split) if self._model else None
        )

        def annotate(metrics: dict[str, Any]) -> dict[str, Any]:
            return {
                **({"traffic": traffic.model_dump()} if traffic else {}),
                "load_seconds": load_seconds,
                "objective": self.playbook.objective.score(
                    median_of(metrics, "pp_tps"),
                    median_of(metrics, "tg_tps"),
                    measure.tokens,
                    measure.gen,
                ),
            }

        spec = bench_spec(self.profile, format_split(split), measure)
        outcome = await self._runner.run(
            spec, repeat=measure.repeat, warmup=measure.warmup, key=key, annotate=annotate
        )
        if outcome.failure is not None:
            self.progress.say(
                f"split {format_split(split)}: FAIL {outcome.failure.failure.value}: "
                f"{outcome.failure.evidence}"
            )
            return None
        objective = outcome.metrics.get("objective")
        return float(objective) if objective is not None else None

    def _stored(self, run_id: int, key: str) -> Result:
        result = self.store.result(run_id, key)
        assert result is not None, key
        return result

    def _best(self) -> tuple[str, float] | None:
        """The best measured split so far and its objective, from the run's records."""
        scored = [
            (r.spec.get("split", ""), float(r.metrics["objective"]))
            for r in self._recorded.values()
            if r.status == ResultStatus.PASS and r.metrics.get("objective") is not None
        ]
        return max(scored, key=lambda item: item[1]) if scored else None

    def _summary(self, planned: int | None, stopped: str) -> dict[str, Any]:
        results = list(self._recorded.values())
        best = self._best()
        current = point_key(list(self.profile.tensor_split))
        baseline = self._recorded.get(current)
        best_result = next((r for r in results if best and r.spec.get("split") == best[0]), None)
        return {
            "best": {
                "split": best[0],
                "objective": best[1],
                "pp_tps": median_of(best_result.metrics, "pp_tps") if best_result else None,
                "tg_tps": median_of(best_result.metrics, "tg_tps") if best_result else None,
            }
            if best
            else None,
            "baseline": {
                "split": format_split(list(self.profile.tensor_split)),
                "objective": baseline.metrics.get("objective") if baseline else None,
            },
            "planned": planned,
            "covered": len(results),
            "pass": sum(1 for r in results if r.status == ResultStatus.PASS),
            "fail": sum(1 for r in results if r.status == ResultStatus.FAIL),
            "pruned": sum(1 for r in results if r.status == ResultStatus.PRUNED),
            "stopped": stopped,
        }
