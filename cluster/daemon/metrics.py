"""Prometheus metrics of the daemon (the official client library), served at /metrics.

Serving state, restarts by incident class, load seconds, time to recover, the last
measured pp/tg per profile, the queue and the running job's progress. One registry per
daemon (not the library's global one), so tests can run several.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from cluster.daemon.models import ServingState


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.state = Gauge(
            "clusterctl_serving_state",
            "1 for the daemon's current serving state, 0 for the others",
            ["state"],
            registry=self.registry,
        )
        self.serving = Gauge(
            "clusterctl_serving", "1 while the desired profile serves", registry=self.registry
        )
        self.restarts = Counter(
            "clusterctl_restarts",
            "Restarts of the RPC group, by the class of the incident that caused them",
            ["cls"],
            registry=self.registry,
        )
        self.incidents = Counter(
            "clusterctl_incidents", "Incidents, by class", ["cls"], registry=self.registry
        )
        self.load_seconds = Histogram(
            "clusterctl_load_seconds",
            "Seconds from starting the group to serving",
            buckets=(1, 5, 15, 30, 60, 120, 240, 480, 900),
            registry=self.registry,
        )
        self.recover_seconds = Histogram(
            "clusterctl_time_to_recover_seconds",
            "Seconds from an incident to serving again",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800),
            registry=self.registry,
        )
        self.pp_tps = Gauge(
            "clusterctl_last_pp_tokens_per_second",
            "Prompt processing rate of the last bench of a profile",
            ["profile"],
            registry=self.registry,
        )
        self.tg_tps = Gauge(
            "clusterctl_last_tg_tokens_per_second",
            "Generation rate of the last bench of a profile",
            ["profile"],
            registry=self.registry,
        )
        self.queue = Gauge(
            "clusterctl_jobs_queued", "Jobs queued or waiting", registry=self.registry
        )
        self.job_progress = Gauge(
            "clusterctl_job_progress_ratio",
            "Done over total of the running job (0 when none runs)",
            registry=self.registry,
        )

        self.front_requests = Counter(
            "clusterctl_frontdoor_requests",
            "Requests through the front door, by the HTTP status the client got",
            ["status"],
            registry=self.registry,
        )
        self.front_waiting = Gauge(
            "clusterctl_frontdoor_waiting",
            "Requests waiting at the front door for the cluster to serve",
            registry=self.registry,
        )
        self.front_ttft = Histogram(
            "clusterctl_frontdoor_ttft_seconds",
            "Time to the first streamed chunk through the front door",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 120, 600),
            registry=self.registry,
        )
        self.front_tg_tps = Gauge(
            "clusterctl_frontdoor_last_tg_tokens_per_second",
            "Generation rate of the last request through the front door (llama-server's timings)",
            registry=self.registry,
        )

    def set_state(self, state: ServingState) -> None:
        for each in ServingState:
            self.state.labels(each.value).set(1 if each is state else 0)
        self.serving.set(1 if state is ServingState.SERVING else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
