"""Where the loads' time went, in reports: each worker's link during a recorded load.

Every attempt that loaded records, per worker, the bytes its link carried, the load's
seconds and the link's measured capacity (``orchestration.linkstats.LinkLoad``). A report
shows the first load that became ready (the cold one, for a sweep) and the last one when it
is another (a sweep's reload with the rpc-server caches warm), one line per worker.
``status`` shows the load of the launch that serves now (``serving_load``), each worker's
link as ``LinkFigures``: the figures and the verdicts ``LinkLoad`` derives from them.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from cluster.orchestration.linkstats import JUDGED_BYTES, Bottleneck, LinkLoad
from cluster.records import AttemptOutcome
from cluster.store import Attempt, Store


def shown_loads(attempts: Sequence[Attempt]) -> list[Attempt]:
    """The first and the last ready attempt that recorded links (once when the same)."""
    loaded = [a for a in attempts if a.outcome is AttemptOutcome.READY and a.links]
    if not loaded:
        return []
    return [loaded[0]] if len(loaded) == 1 else [loaded[0], loaded[-1]]


def link_lines(attempts: Sequence[Attempt]) -> list[str]:
    """Markdown setup lines: ``- link during the load of attempt 1 (12.3 s): bee: ...``."""
    lines = []
    for attempt in shown_loads(attempts):
        seconds = f", {attempt.load_seconds:.1f} s" if attempt.load_seconds is not None else ""
        for link in attempt.links:
            lines.append(f"- link during load {attempt.number}{seconds}: {link.describe()}")
    return lines


class LinkFigures(BaseModel):
    """One worker's link during one load: what it carried, how fast against its measured
    capacity, which was the bottleneck, and whether the rpc-server cache pays on it."""

    model_config = ConfigDict(frozen=True)

    worker: str
    interface: str
    shared: bool  # the interface also counts other serving hosts' traffic
    bytes: int  # the transfer: the larger direction
    seconds: float
    throughput_bps: float
    capacity_bps: float | None  # health's last iperf3 measurement; None: never measured
    capacity_at: float | None
    utilisation: float | None
    bottleneck: Bottleneck
    cache_pays: bool | None  # None: no capacity, or too little moved to judge
    hash_s: float  # what hashing the bytes costs the head
    transfer_s: float | None  # what sending them takes at the capacity
    verdict: str

    @classmethod
    def of(cls, link: LinkLoad) -> LinkFigures:
        judged = link.bytes >= JUDGED_BYTES
        return cls(
            worker=link.worker,
            interface=link.interface,
            shared=link.shared,
            bytes=link.bytes,
            seconds=link.seconds,
            throughput_bps=link.throughput_bps,
            capacity_bps=link.capacity_bps,
            capacity_at=link.capacity_at,
            utilisation=link.utilisation,
            bottleneck=link.bottleneck,
            cache_pays=link.cache_pays if judged else None,
            hash_s=link.hash_s,
            transfer_s=link.transfer_s,
            verdict=link.verdict(),
        )


class ServingLoad(BaseModel):
    """The load of the attempt whose llama-server serves now, as the record kept it."""

    model_config = ConfigDict(frozen=True)

    run_id: int
    attempt: int
    load_seconds: float | None
    links: list[LinkFigures]


def serving_load(store: Store, run_id: int, attempt: int) -> ServingLoad | None:
    """Attempt ``attempt`` of run ``run_id``, with each worker's link figures; None when the
    record does not hold it (another state directory, or another controller's)."""
    found = next((a for a in store.attempts(run_id) if a.number == attempt), None)
    if found is None:
        return None
    return ServingLoad(
        run_id=run_id,
        attempt=attempt,
        load_seconds=found.load_seconds,
        links=[LinkFigures.of(link) for link in found.links],
    )
