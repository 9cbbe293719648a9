"""What a measurement records: the case asked for and the metrics measured.

Every bench point, screen case and ceiling probe is one row of the store's ``results``
table: its ``key`` (unique in the run, so a resumed job never measures a case twice), its
``spec`` (a ``CaseSpec``), its status (``pass`` or ``fail``), and ``metrics`` as built by
``case_metrics``. The report and ``show`` read these records and nothing else.

Metric names (medians and spreads in ``summary``; one entry per request in ``samples``):

- ``pp_tps``, ``tg_tps``: the server's prompt and generation tokens per second (its own
  ``timings``: compute only);
- ``ttft_s``, ``e2e_s``: client time to first token and to the last one;
- ``itl_ms``: client inter-token latency (each request's median gap);
- ``client_pp_tps``, ``client_tg_tps``: the same rates as the client sees them (prompt
  tokens over TTFT, tokens after the first over the rest of the stream), which include
  HTTP, tokenization and queueing. A large gap from the server's figures is flagged in
  ``disagreements``; a metric whose coefficient of variation is above 10% in ``noisy``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cluster.measure.calibrate import CalibratedPrompt
from cluster.measure.request import RequestSample
from cluster.measure.stats import summarize

METRICS = ("pp_tps", "tg_tps", "ttft_s", "itl_ms", "e2e_s", "client_pp_tps", "client_tg_tps")


class CaseSpec(BaseModel):
    """One case as asked: the server configuration and the request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: str  # a screen's configuration name; the profile name for bench and ceiling
    profile: str
    ctx_size: int
    parallel: int
    split: str
    shape: str
    target: int = Field(ge=1)
    gen: int = Field(ge=1)
    attempt: int = Field(default=1, ge=1)
    concurrency: int = Field(default=1, ge=1)

    @property
    def key(self) -> str:
        return (
            f"{self.config}/{self.shape}/{self.target}/g{self.gen}"
            f"/c{self.concurrency}/a{self.attempt}"
        )


def sample_record(sample: RequestSample) -> dict[str, Any]:
    """One request's numbers, flat, as kept in ``samples``."""
    timings = sample.timings
    return {
        "pp_tps": timings.prompt_per_second,
        # Not predicted_per_second: the two builds divide by n and n - 1 tokens.
        "tg_tps": timings.tg_tps,
        "ttft_s": sample.ttft_s,
        "e2e_s": sample.e2e_s,
        "itl_ms": statistics.median(sample.itl_s) * 1000 if sample.itl_s else None,
        "client_pp_tps": sample.client_pp_tps,
        "client_tg_tps": sample.client_tg_tps,
        "prompt_n": timings.prompt_n,
        "cache_n": timings.cache_n,
        "predicted_n": timings.predicted_n,
        "stop_type": sample.stop_type,
    }


def case_metrics(
    prompt: CalibratedPrompt | None,
    samples: Sequence[RequestSample],
    *,
    sent_tokens: Sequence[int] = (),
    wall_s: float | None = None,
) -> dict[str, Any]:
    """The metrics record of a case: calibration, per-request samples, and their summary.

    ``sent_tokens`` are the exact token counts of the prompts as sent (each with its own
    unique prefix); ``wall_s`` the wall time of concurrent requests, for the aggregate
    generation rate.
    """
    records = [sample_record(sample) for sample in samples]
    summary: dict[str, Any] = {}
    for name in METRICS:
        values = [float(r[name]) for r in records if r[name] is not None]
        if values:
            summary[name] = summarize(values).to_dict()
    disagreements = sorted({name for sample in samples for name in sample.disagreements()})
    metrics: dict[str, Any] = {
        "calibrated": max(sent_tokens) if sent_tokens else (prompt.tokens if prompt else None),
        "sent_tokens": sorted(set(sent_tokens)),
        "calibration_probes": prompt.probes if prompt else None,
        "prompt_n": max((r["prompt_n"] for r in records), default=None),
        "cache_n_max": max((r["cache_n"] for r in records), default=None),
        "predicted_n": min((r["predicted_n"] for r in records), default=None),
        "summary": summary,
        "noisy": sorted(name for name, s in summary.items() if s["noisy"]),
        "disagreements": disagreements,
        "samples": records,
    }
    if wall_s:
        metrics["aggregate_tg_tps"] = sum(r["predicted_n"] for r in records) / wall_s
    return metrics


def median_of(metrics: dict[str, Any], name: str) -> float | None:
    """The median of one metric in a metrics record, if it was measured."""
    entry = metrics.get("summary", {}).get(name)
    return float(entry["median"]) if entry else None
