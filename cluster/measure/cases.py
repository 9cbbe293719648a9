"""Running one case against a serving cluster and recording it, exactly once.

A case (a bench point, a screen case, a ceiling probe) is: calibrate the prompt for its
shape and target with the server's own tokenizer (cached per shape and target while the
server's tokenizer cannot change), then send it ``warmup + repeat`` times, ``concurrency``
requests at a time, each with its own unique prefix and ``cache_prompt: false`` so the
prompt cache never matches, and keep what the server evaluated (``prompt_n``, ``cache_n``).

The result goes into the store as soon as the case ends, before anything else happens,
under a key unique in the run; a key already recorded is never run again. A failed case
keeps its class, its evidence line and the log tails of every component.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.errors import ClusterError, ConfigError
from cluster.llamacpp.logs import FailureClass
from cluster.measure.calibrate import CalibratedPrompt, ServerTokenizer, calibrate
from cluster.measure.records import CaseSpec, case_metrics
from cluster.measure.request import RequestSample, build_payload
from cluster.measure.serving import RequestLimits, Serving
from cluster.measure.shapes import PromptBody, PromptKind, get_shape
from cluster.orchestration.control import LLAMA_SERVER
from cluster.orchestration.failures import AttemptFailed
from cluster.records import ResultStatus
from cluster.store import Store

# Example of the per-request prefix the calibration counts in: "[r12 c0003 q01 9f2c41d0]".
_PREFIX_EXAMPLE = "[r0 c0000 q00 00000000]"
PREFIX_TOKENS = 8


@dataclass(frozen=True)
class CaseOutcome:
    spec: CaseSpec
    status: ResultStatus
    failure: AttemptFailed | None
    metrics: dict[str, Any]


class CaseRunner:
    """Runs cases on one Serving and records them in its run."""

    def __init__(
        self,
        serving: Serving,
        store: Store,
        run_id: int,
        limits: RequestLimits,
        *,
        shape_files: Mapping[str, Path] | None = None,
        on_request: Callable[[], None] = lambda: None,
    ) -> None:
        self.serving = serving
        self.store = store
        self.run_id = run_id
        self.limits = limits
        self.shape_files = dict(shape_files or {})
        self.on_request = on_request
        self._prompts: dict[tuple[str, int], CalibratedPrompt] = {}
        self._pool: list[int] | None = None
        self._counter = 0

    def forget_calibrations(self) -> None:
        """Call when the served model may have changed (another profile)."""
        self._prompts.clear()
        self._pool = None

    @property
    def tokenizer(self) -> ServerTokenizer:
        return ServerTokenizer(self.serving.client)

    async def prompt(self, shape_name: str, target: int) -> CalibratedPrompt:
        """The calibrated prompt for a shape and target (calibrated once, then reused)."""
        cached = self._prompts.get((shape_name, target))
        if cached is not None:
            return cached
        tokenizer = self.tokenizer
        pool = None
        if shape_name == "random":
            if self._pool is None:
                self._pool = await tokenizer.token_pool()
            pool = self._pool
        shape = get_shape(shape_name, self.shape_files, token_pool=pool)
        prompt = await calibrate(
            shape,
            target,
            tokenizer,
            prefix=_PREFIX_EXAMPLE,
            prefix_tokens=self._prefix_tokens(0) if shape.kind is PromptKind.TOKENS else (),
        )
        self.store.event(
            self.run_id,
            "calibrated",
            shape=shape_name,
            target=target,
            tokens=prompt.tokens,
            size=prompt.size,
            probes=prompt.probes,
        )
        self._prompts[(shape_name, target)] = prompt
        return prompt

    async def _calibrated(self, spec: CaseSpec) -> CalibratedPrompt:
        """The case's prompt; a server that stops answering meanwhile is a failed case."""
        try:
            return await self.prompt(spec.shape, spec.target)
        except ClusterError as exc:
            dead = await self.serving.failure()
            if dead is not None:
                raise dead from exc
            raise AttemptFailed(
                FailureClass.HTTP_ERROR, f"calibrating: {exc}", LLAMA_SERVER
            ) from exc
        except ValueError as exc:
            raise ConfigError(f"case {spec.key}: {exc}") from None

    def recorded(self, spec: CaseSpec, key: str | None = None) -> CaseOutcome | None:
        """The case as already recorded in this run (a resumed job), or None."""
        result = self.store.result(self.run_id, key or spec.key)
        if result is None:
            return None
        failure = None
        if result.failure_class is not None:
            failure = AttemptFailed(FailureClass(result.failure_class), result.evidence or "", "")
        return CaseOutcome(spec, result.status, failure, result.metrics)

    def _prefix_tokens(self, seed: int) -> list[int]:
        pool = self._pool or []
        chooser = random.Random(seed)  # noqa: S311 - a cache-busting prefix, not a secret
        return [chooser.choice(pool) for _ in range(PREFIX_TOKENS)] if pool else []

    async def _payload(self, body: PromptBody, spec: CaseSpec) -> tuple[dict[str, Any], int]:
        """A unique request for the body and the exact number of tokens it sends."""
        self._counter += 1
        nonce = secrets.token_hex(4)
        prefix = f"[r{self.run_id} c{self._counter:04d} q{spec.attempt:02d} {nonce}]"
        unique = body.with_prefix(prefix, self._prefix_tokens(int(nonce, 16)))
        tokenizer = self.tokenizer
        prompt = await tokenizer.render(unique)
        sent = await tokenizer.count_prompt(prompt)
        return build_payload(prompt, spec.gen), sent

    async def _round(
        self, prompt: CalibratedPrompt, spec: CaseSpec
    ) -> tuple[list[RequestSample], list[int], float]:
        payloads = [await self._payload(prompt.body, spec) for _ in range(spec.concurrency)]
        start = time.monotonic()
        samples = await asyncio.gather(
            *(self.serving.request(payload, self.limits) for payload, _ in payloads)
        )
        for sample in samples:
            self.on_request()
            if sample.timings.predicted_n < spec.gen:
                raise AttemptFailed(
                    FailureClass.CONTEXT_FULL,
                    f"generated {sample.timings.predicted_n} of {spec.gen} tokens after a "
                    f"{sample.timings.prompt_n}-token prompt: the slot's context is full",
                    LLAMA_SERVER,
                )
        return list(samples), [sent for _, sent in payloads], time.monotonic() - start

    async def run(
        self,
        spec: CaseSpec,
        *,
        repeat: int = 1,
        warmup: int = 0,
        key: str | None = None,
        annotate: Callable[[dict[str, Any]], dict[str, Any]] = lambda metrics: {},
    ) -> CaseOutcome:
        """Run and record one case under ``key`` (default: the spec's); a failure is
        recorded and returned, not raised. ``annotate`` adds fields to the metrics (a
        sweep's load time and objective) before they are written."""
        key = key or spec.key
        samples: list[RequestSample] = []
        sent: list[int] = []
        wall = 0.0
        prompt: CalibratedPrompt | None = None
        try:
            prompt = await self._calibrated(spec)
            for _ in range(warmup):
                await self._round(prompt, spec)
            for _ in range(repeat):
                round_samples, round_sent, round_wall = await self._round(prompt, spec)
                samples += round_samples
                sent += round_sent
                wall += round_wall
        except AttemptFailed as failure:
            metrics = case_metrics(prompt, samples, sent_tokens=sent)
            metrics.update(annotate(metrics))
            self.store.record_result(
                self.run_id,
                key,
                ResultStatus.FAIL,
                spec=spec.model_dump(),
                metrics=metrics,
                failure_class=failure.failure.value,
                evidence=failure.evidence,
                log_tails=await self.serving.log_tails(),
            )
            return CaseOutcome(spec, ResultStatus.FAIL, failure, metrics)
        metrics = case_metrics(
            prompt, samples, sent_tokens=sent, wall_s=wall if spec.concurrency > 1 else None
        )
        metrics.update(annotate(metrics))
        self.store.record_result(
            self.run_id, key, ResultStatus.PASS, spec=spec.model_dump(), metrics=metrics
        )
        return CaseOutcome(spec, ResultStatus.PASS, None, metrics)
