"""``clusterctl bench``: throughput of a serving profile for one prompt shape and size.

The profile is served (a running server with the same profile and split is reused), the
prompt is calibrated to the target with the server's tokenizer, then ``warmup`` rounds
are sent and not kept, and ``repeat`` rounds are measured, each ``concurrency`` requests
at once (at most the profile's parallel slots). The run keeps one result: every request's
numbers and their median, min, max, stddev and coefficient of variation.

The model's GGUF headers are read from the head once per run (``read_model``), so the
result also records the bytes of weights a generated token reads on each device of the
split (``measure.bandwidth``): reports turn the generation rate into a bandwidth and its
fraction of the split's peak.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from cluster.config.models import Inventory, Profile, StrictModel
from cluster.errors import ConfigError
from cluster.llamacpp.gguf_info import ModelFileError, ModelInfo
from cluster.measure.bandwidth import TokenTraffic, traffic_for
from cluster.measure.cases import CaseOutcome, CaseRunner
from cluster.measure.progress import Progress
from cluster.measure.records import CaseSpec, median_of
from cluster.measure.serving import RequestLimits, Serving
from cluster.orchestration.modelcheck import read_head_model
from cluster.records import RunKind, RunStatus
from cluster.store import Store
from cluster.transport.pool import HostPool


class BenchRequest(StrictModel):
    """What to measure: the command line's options, or a sweep playbook's ``[measure]``."""

    shape: str = "random"
    tokens: int = Field(default=512, ge=1)
    gen: int = Field(default=128, ge=1)
    repeat: int = Field(default=5, ge=1)
    warmup: int = Field(default=1, ge=0)
    concurrency: int = Field(default=1, ge=1)
    stall_timeout_s: float = Field(default=300.0, gt=0)
    request_timeout_s: float = Field(default=3600.0, gt=0)


@dataclass(frozen=True)
class BenchReport:
    run_id: int
    outcome: CaseOutcome
    reused_server: bool
    traffic: TokenTraffic | None = None  # bytes per token per device; None: headers unread


def bench_spec(profile: Profile, split: str, request: BenchRequest) -> CaseSpec:
    return CaseSpec(
        config=profile.name,
        profile=profile.name,
        ctx_size=profile.ctx_size,
        parallel=profile.parallel,
        split=split,
        shape=request.shape,
        target=request.tokens,
        gen=request.gen,
        concurrency=request.concurrency,
    )


async def read_model(
    pool: HostPool, inventory: Inventory, profile: Profile, say: Callable[[str], None]
) -> ModelInfo | None:
    """The profile's model from its headers on the head; None (and why, said) when it
    cannot be read: the measurement goes on without bandwidth figures."""
    try:
        return await read_head_model(pool, inventory, profile)
    except ModelFileError as exc:
        say(f"no bandwidth figures: {exc}")
        return None


def traffic_fields(traffic: TokenTraffic | None, tg_tps: float | None) -> dict[str, Any]:
    """What a run's summary says about the bandwidth wall: bytes per token, and for a
    measured generation rate its bandwidth and fraction of the split's peak."""
    if traffic is None:
        return {}
    fields: dict[str, Any] = {
        "bytes_per_token": traffic.bytes_per_token,
        "peak_gbs": traffic.peak_gbs,
    }
    if tg_tps is not None:
        fields["bandwidth_gbs"] = traffic.effective_gbs(tg_tps)
        fields["bandwidth_fraction"] = traffic.fraction(tg_tps)
    return fields


async def run_bench(
    inventory: Inventory,
    profile: Profile,
    pool: HostPool,
    store: Store,
    request: BenchRequest,
    progress: Progress,
    *,
    split: list[float] | None = None,
    environ: Mapping[str, str] | None = None,
    health_gate: bool = True,
) -> BenchReport:
    if request.concurrency > profile.parallel:
        raise ConfigError(
            f"concurrency {request.concurrency} is more than the profile's "
            f"{profile.parallel} parallel slot(s)",
            key="--concurrency",
        )
    config = {"profile": profile.model_dump(mode="json"), "request": request.model_dump()}
    with store.job(RunKind.BENCH, profile.name, config) as run_id:
        serving = Serving(
            inventory, profile, pool, store, run_id, split=split, environ=environ, say=progress.say
        )
        try:
            await serving.start(health_gate=health_gate)
            spec = bench_spec(profile, serving.split_text, request)
            info = await read_model(pool, inventory, profile, progress.say)
            traffic = (
                traffic_for(info, inventory, profile, serving.launcher.split) if info else None
            )
            limits = RequestLimits(request.stall_timeout_s, request.request_timeout_s)
            runner = CaseRunner(serving, store, run_id, limits, on_request=progress.advance)
            progress.begin((request.warmup + request.repeat) * request.concurrency, spec.key)
            outcome = await runner.run(
                spec,
                repeat=request.repeat,
                warmup=request.warmup,
                annotate=lambda metrics: {"traffic": traffic.model_dump()} if traffic else {},
            )
        finally:
            await serving.close()
        store.finish_run(
            run_id,
            RunStatus.OK if outcome.failure is None else RunStatus.FAILED,
            {
                "key": spec.key,
                "result": outcome.status,
                "failure_class": outcome.failure.failure.value if outcome.failure else None,
                "pp_tps": median_of(outcome.metrics, "pp_tps"),
                "tg_tps": median_of(outcome.metrics, "tg_tps"),
                "reused_server": serving.reused,
                **traffic_fields(traffic, median_of(outcome.metrics, "tg_tps")),
            },
        )
    return BenchReport(run_id, outcome, serving.reused, traffic)
