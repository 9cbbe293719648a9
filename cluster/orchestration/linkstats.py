"""Where a load's time goes: the bytes each worker's link carried, against its capacity.

Over RPC, llama-server on the head reads every weight, hashes each tensor over 10 MiB
(FNV-1a, one core, for the rpc-server tensor cache, whether the cache is on or not) and
sends it to the rpc-server that holds it. Either the link or that single-threaded head
path is the bottleneck, and the two call for different fixes (a faster link; a cached
reload, a build that skips hashing). Per launch, each worker's link interface byte
counters (``/sys/class/net/IFACE/statistics/{rx,tx}_bytes``) are read before the
rpc-servers start and again when the load is done (``counters_command`` builds the
command, ``parse_counters`` only parses, as in ``cluster.facts``); the difference over the
load's seconds is the link's effective throughput, set against the link's capacity as
``health`` last measured it with iperf3 (bits per second, from the record).

``LinkLoad`` is that record, kept with every attempt, and says:

- which is the bottleneck: effective throughput at ``LINK_BOUND`` (80%) of capacity or
  more, the link; under ``HEAD_BOUND`` (50%), the head (read, hash, send); in between,
  unclear; no capacity measured, unknown; above ``STALE_ABOVE`` (125%), the capacity is out
  of date (measured before the link changed); under ``JUDGED_BYTES`` moved (a tiny model,
  or a reload served by the rpc-server cache), too little to judge;
- whether the rpc-server tensor cache pays on this link: a cached reload costs the head a
  hash of the bytes (``HASH_BYTES_PER_S``, 0.9 GB/s on one core) and saves sending them
  (bytes at the link's capacity). Builds of this era hash whether the cache is on or not,
  so there the cache is free; the verdict says whether hashing is worth its cost where a
  build lets it be switched off (``GGML_RPC_CACHE_MIN_SIZE``): it is when the link is
  slower than the hash, 7.2 Gbit/s.

A link's bytes count in both directions; the weights are what the worker receives, so the
transfer is the larger direction. Hosts that share one interface (local-transport hosts
on one machine, on ``lo``) share its counters: each then counts every host's traffic
(``shared``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from cluster.errors import ClusterError

if TYPE_CHECKING:  # the record (LinkLoad) is read by the store: keep its imports light
    from cluster.config.models import HostConfig
    from cluster.store import Store
    from cluster.transport.pool import HostPool

# FNV-1a over a tensor on one core of the head (LLAMACPP.md: 0.87 GB/s measured).
HASH_BYTES_PER_S = 0.9e9
LINK_BOUND = 0.8
HEAD_BOUND = 0.5
# More than this over the capacity (headers count in the counters, a few percent at most,
# not in iperf3's goodput) says the capacity was measured on another link, or another rate.
STALE_ABOVE = 1.25
# Less than this moved in a load says nothing about the link or the head.
JUDGED_BYTES = 16 * 1024**2
_STATISTICS = "/sys/class/net/{}/statistics"


class Bottleneck(StrEnum):
    LINK = "link"
    HEAD = "head"
    UNCLEAR = "unclear"
    UNKNOWN = "unknown"  # no capacity measured
    STALE = "stale capacity"  # the link carried more than its measured capacity
    TOO_LITTLE = "too little moved"


@dataclass(frozen=True)
class Counters:
    """An interface's byte counters at one moment."""

    rx: int
    tx: int


def counters_command(interface: str) -> list[str]:
    base = _STATISTICS.format(interface)
    return ["cat", f"{base}/rx_bytes", f"{base}/tx_bytes"]


def parse_counters(stdout: str) -> Counters | None:
    """``rx_bytes`` then ``tx_bytes``; None when the interface or a counter is missing."""
    values = stdout.split()
    if len(values) != 2 or not all(value.isdigit() for value in values):
        return None
    return Counters(int(values[0]), int(values[1]))


class LinkLoad(BaseModel):
    """What one worker's link carried during one load, and what that says."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    worker: str
    interface: str
    rx_bytes: int = Field(ge=0)
    tx_bytes: int = Field(ge=0)
    seconds: float = Field(gt=0)
    capacity_bps: float | None = Field(default=None, gt=0)  # bits/s, iperf3
    capacity_at: float | None = None  # when it was measured (epoch s)
    shared: bool = False  # the interface also carries other serving hosts' traffic

    @property
    def bytes(self) -> int:
        """The transfer: the larger direction (the weights the worker received)."""
        return max(self.rx_bytes, self.tx_bytes)

    @property
    def throughput_bps(self) -> float:
        return self.bytes * 8 / self.seconds

    @property
    def utilisation(self) -> float | None:
        """Effective throughput over capacity; None when the capacity is unknown."""
        return None if self.capacity_bps is None else self.throughput_bps / self.capacity_bps

    @property
    def bottleneck(self) -> Bottleneck:
        if self.bytes < JUDGED_BYTES:
            return Bottleneck.TOO_LITTLE
        used = self.utilisation
        if used is None:
            return Bottleneck.UNKNOWN
        if used > STALE_ABOVE:
            return Bottleneck.STALE
        if used >= LINK_BOUND:
            return Bottleneck.LINK
        return Bottleneck.HEAD if used < HEAD_BOUND else Bottleneck.UNCLEAR

    @property
    def hash_s(self) -> float:
        """What hashing these bytes costs the head, at ``HASH_BYTES_PER_S``."""
        return self.bytes / HASH_BYTES_PER_S

    @property
    def transfer_s(self) -> float | None:
        """What sending these bytes takes at the link's capacity."""
        return None if self.capacity_bps is None else self.bytes * 8 / self.capacity_bps

    @property
    def cache_pays(self) -> bool | None:
        """Whether a cached reload (hash, no send) beats an uncached, unhashed one (send)."""
        transfer = self.transfer_s
        return None if transfer is None else self.hash_s < transfer

    def verdict(self) -> str:
        """The bottleneck and the cache, in words."""
        words = {
            Bottleneck.LINK: "the link is the bottleneck",
            Bottleneck.HEAD: "the head (read, hash, send) is the bottleneck",
            Bottleneck.UNCLEAR: "neither clearly the bottleneck",
            Bottleneck.UNKNOWN: "link capacity unknown (clusterctl health --throughput)",
            Bottleneck.STALE: "more than the measured capacity: measure it again "
            "(clusterctl health --throughput)",
            Bottleneck.TOO_LITTLE: "too little moved to judge",
        }
        text = words[self.bottleneck]
        transfer = self.transfer_s
        if transfer is not None and self.bytes >= JUDGED_BYTES:
            pays = "pays" if self.cache_pays else "does not pay"
            text += (
                f"; the rpc-server cache {pays} (hash {self.hash_s:.1f} s vs "
                f"transfer {transfer:.1f} s)"
            )
        return text

    def describe(self) -> str:
        """``bee: 1.23 GB in 14.2 s, 0.69 Gbit/s of 0.94 Gbit/s (73%): the link ...``."""
        rate = f"{self.throughput_bps / 1e9:.3g} Gbit/s"
        if self.capacity_bps is not None:
            rate += f" of {self.capacity_bps / 1e9:.3g} Gbit/s ({self.utilisation:.0%})"
        shared = f" (shared {self.interface})" if self.shared else ""
        return (
            f"{self.worker}: {self.bytes / 1e9:.3g} GB in {self.seconds:.1f} s{shared}, "
            f"{rate}: {self.verdict()}"
        )


def link_load(
    worker: str,
    interface: str,
    before: Counters | None,
    after: Counters | None,
    seconds: float,
    capacity_bps: float | None = None,
    *,
    capacity_at: float | None = None,
    shared: bool = False,
) -> LinkLoad | None:
    """The record of one worker's load; None when a reading is missing or no time passed.
    A counter that went down (the interface was reset) counts as nothing moved."""
    if before is None or after is None or seconds <= 0:
        return None
    return LinkLoad(
        worker=worker,
        interface=interface,
        rx_bytes=max(0, after.rx - before.rx),
        tx_bytes=max(0, after.tx - before.tx),
        seconds=seconds,
        capacity_bps=capacity_bps,
        capacity_at=capacity_at,
        shared=shared,
    )


def workers(hosts: Sequence[HostConfig], head: str) -> list[HostConfig]:
    """The hosts whose link carries weights from the head: every rpc host but the head (its
    own rpc-server is reached without the link)."""
    return [host for host in hosts if host.name != head]


def shared(host: HostConfig, hosts: Sequence[HostConfig]) -> bool:
    """Whether another serving host counts on the same interface: local-transport hosts
    all run on this machine."""
    return host.transport == "local" and any(
        other.name != host.name
        and other.transport == "local"
        and other.link_interface == host.link_interface
        for other in hosts
    )


async def read_counters(pool: HostPool, hosts: Sequence[HostConfig]) -> dict[str, Counters | None]:
    """Each host's link counters, read concurrently; None for a host that cannot say."""

    async def one(host: HostConfig) -> Counters | None:
        try:
            result = await pool[host.name].run(counters_command(host.link_interface), timeout=15)
        except ClusterError:
            return None
        return parse_counters(result.stdout) if result.exit_status == 0 else None

    found = await asyncio.gather(*(one(host) for host in hosts))
    return {host.name: counters for host, counters in zip(hosts, found, strict=True)}


@dataclass(frozen=True)
class Capacity:
    """A link's measured throughput (bits/s) and when it was measured (epoch s)."""

    bps: float
    at: float | None = None


def link_loads(
    measured: Sequence[HostConfig],
    serving: Sequence[HostConfig],
    before: Mapping[str, Counters | None],
    after: Mapping[str, Counters | None],
    seconds: float,
    capacities: Mapping[str, Capacity],
) -> list[LinkLoad]:
    """One record per measured host that has both readings."""
    loads = []
    for host in measured:
        capacity = capacities.get(host.name)
        load = link_load(
            host.name,
            host.link_interface,
            before.get(host.name),
            after.get(host.name),
            seconds,
            capacity.bps if capacity else None,
            capacity_at=capacity.at if capacity else None,
            shared=shared(host, serving),
        )
        if load is not None:
            loads.append(load)
    return loads


class LoadTraffic:
    """The workers' link counters around one load: ``start`` before the rpc-servers start
    (or, when they are kept, before llama-server does), ``finish`` when the load is done."""

    def __init__(
        self,
        pool: HostPool,
        serving: Sequence[HostConfig],
        rpc_hosts: Sequence[HostConfig],
        head: str,
    ) -> None:
        self.pool = pool
        self.serving = list(serving)
        self.head = head
        self.measured = workers(rpc_hosts, head)
        self.before: dict[str, Counters | None] = {}

    async def start(self) -> None:
        self.before = await read_counters(self.pool, self.measured)

    async def finish(self, seconds: float, store: Store) -> list[LinkLoad]:
        """The records of the load that took ``seconds``, each link's capacity as the
        record's last iperf3 measurement from the head says (``health``)."""
        after = await read_counters(self.pool, self.measured)
        capacities = {
            worker: Capacity(measured.bps, measured.at)
            for worker, measured in store.last_throughputs(self.head).items()
        }
        return link_loads(self.measured, self.serving, self.before, after, seconds, capacities)
