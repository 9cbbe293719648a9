"""``clusterctl screen``: a stability screen, case by case, that survives its failures.

For each server configuration of the playbook the cluster is served with that
configuration, then every case runs once: PASS, or FAIL with a class and the log tails of
every component. After a failure the cluster is brought back (stopped and launched again)
and the screen goes on; a ``context_full`` refusal leaves the server healthy and is not
followed by a restart. With ``restart = "between_cases"`` every case after the first of a
configuration starts on a freshly launched cluster.

Every case is recorded the moment it ends. ``--resume RUN`` (or a controller killed and
started again) runs only the cases without a record. A configuration that cannot be
brought up records its remaining cases as failed with the launch's class, and the screen
goes on with the next configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cluster.config.models import Inventory, Profile
from cluster.errors import LaunchError
from cluster.llamacpp.logs import FailureClass
from cluster.measure.cases import CaseOutcome, CaseRunner
from cluster.measure.playbook import ScreenPlaybook, plan
from cluster.measure.progress import Progress
from cluster.measure.records import CaseSpec
from cluster.measure.serving import RequestLimits, Serving
from cluster.orchestration.failures import AttemptFailed
from cluster.records import ResultStatus, RunKind, RunStatus
from cluster.store import Store
from cluster.transport.pool import HostPool

# Failures after which the server is known to be healthy: no restart needed.
SERVER_SURVIVES = {FailureClass.CONTEXT_FULL}


@dataclass
class ScreenReport:
    run_id: int
    outcomes: list[CaseOutcome] = field(default_factory=list)
    skipped: int = 0  # recorded by an earlier run of the same screen

    @property
    def failed(self) -> list[CaseOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status == ResultStatus.FAIL]


class Screen:
    """Runs the cases of one screen playbook in one run."""

    def __init__(
        self,
        inventory: Inventory,
        playbook: ScreenPlaybook,
        playbook_path: Path,
        profiles: Mapping[str, Profile],
        pool: HostPool,
        store: Store,
        progress: Progress,
        *,
        environ: Mapping[str, str] | None = None,
        health_gate: bool = True,
    ) -> None:
        self.inventory = inventory
        self.playbook = playbook
        self.playbook_path = playbook_path
        self.pool = pool
        self.store = store
        self.progress = progress
        self.environ = dict(environ or {})
        self.health_gate = health_gate
        self.groups = plan(playbook, dict(profiles))
        self.limits = RequestLimits(playbook.stall_timeout_s, playbook.request_timeout_s)

    def run_config(self) -> dict[str, object]:
        return {
            "playbook": self.playbook.name,
            "playbook_path": str(self.playbook_path),
            "screen": self.playbook.model_dump(mode="json"),
            "profiles": {
                profile.name + "@" + config.name: profile.model_dump(mode="json")
                for config, profile, _ in self.groups
            },
        }

    async def run(self, resume: int | None = None) -> ScreenReport:
        profile_names = sorted({config.profile for config, _, _ in self.groups})
        with self.store.job(
            RunKind.SCREEN, ",".join(profile_names), self.run_config(), resume=resume
        ) as run_id:
            report = ScreenReport(run_id)
            done = self.store.result_keys(run_id)
            pending = [
                [case for case in cases if case.key not in done] for _, _, cases in self.groups
            ]
            report.skipped = sum(len(cases) for _, _, cases in self.groups) - sum(
                len(cases) for cases in pending
            )
            if report.skipped:
                self.progress.say(f"resuming run {run_id}: {report.skipped} case(s) recorded")
            self.progress.begin(sum(len(cases) for cases in pending), self.playbook.name)
            for (_, profile, _), cases in zip(self.groups, pending, strict=True):
                if cases:
                    report.outcomes += await self._configuration(run_id, profile, cases)
            passes = sum(1 for o in report.outcomes if o.status == ResultStatus.PASS)
            self.store.finish_run(
                run_id,
                RunStatus.OK if not report.failed else RunStatus.FAILED,
                {
                    "cases": len(report.outcomes) + report.skipped,
                    "pass": passes,
                    "fail": len(report.failed),
                    "resumed_past": report.skipped,
                },
            )
        return report

    async def _configuration(
        self, run_id: int, profile: Profile, cases: list[CaseSpec]
    ) -> list[CaseOutcome]:
        serving = Serving(
            self.inventory,
            profile,
            self.pool,
            self.store,
            run_id,
            environ=self.environ,
            say=self.progress.say,
        )
        outcomes: list[CaseOutcome] = []
        try:
            try:
                await serving.start(health_gate=self.health_gate)
            except LaunchError as exc:
                return self._unserved(run_id, cases, exc)
            runner = CaseRunner(
                serving,
                self.store,
                run_id,
                self.limits,
                shape_files=self.playbook.shape_paths(self.playbook_path.parent),
            )
            for index, case in enumerate(cases):
                if index and self.playbook.restart == "between_cases":
                    try:
                        await serving.restart()
                    except LaunchError as exc:
                        return outcomes + self._unserved(run_id, cases[index:], exc)
                outcome = await runner.run(case)
                outcomes.append(outcome)
                self._report(outcome)
                if outcome.failure is not None and outcome.failure.failure not in SERVER_SURVIVES:
                    self.progress.say("bringing the cluster back")
                    try:
                        await serving.restart()
                    except LaunchError as exc:
                        return outcomes + self._unserved(run_id, cases[index + 1 :], exc)
        finally:
            await serving.close()
        return outcomes

    def _report(self, outcome: CaseOutcome) -> None:
        if outcome.failure is None:
            self.progress.advance(f"{outcome.spec.key}: PASS")
        else:
            failure = outcome.failure
            self.progress.say(
                f"{outcome.spec.key}: FAIL {failure.failure.value}: {failure.evidence}"
            )
            self.progress.advance(f"{outcome.spec.key}: FAIL")

    def _unserved(
        self, run_id: int, cases: list[CaseSpec], error: LaunchError
    ) -> list[CaseOutcome]:
        """Record cases that cannot run because their configuration would not come up."""
        attempts = self.store.attempts(run_id)
        last = attempts[-1].failure_class if attempts else None
        cls = FailureClass(last) if last else FailureClass.UNKNOWN
        evidence = f"the cluster did not come up for this configuration: {error}"
        self.progress.say(evidence)
        outcomes = []
        for case in cases:
            self.store.record_result(
                run_id,
                case.key,
                ResultStatus.FAIL,
                spec=case.model_dump(),
                failure_class=cls.value,
                evidence=evidence,
            )
            outcome = CaseOutcome(case, ResultStatus.FAIL, AttemptFailed(cls, evidence), {})
            outcomes.append(outcome)
            self.progress.advance(f"{case.key}: FAIL")
        return outcomes
