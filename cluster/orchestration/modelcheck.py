"""Is the profile's model on the head, and does its split fit each host's memory?

The model lives on the head; only the GGUF headers (metadata and tensor infos) are
fetched, a prefix at a time, and parsed here with the ``gguf`` package.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cluster import facts
from cluster.config.models import Inventory, Profile
from cluster.config.resolve import devices_for
from cluster.llamacpp import gguf_info
from cluster.llamacpp.gguf_info import ModelInfo
from cluster.transport.base import Transport
from cluster.transport.pool import HostPool

if TYPE_CHECKING:
    from cluster.orchestration.hostfacts import HostFacts

GIB = 1024**3
MAX_HEADER = 256 * 1024**2


@dataclass
class ModelReport:
    sizes: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    info: gguf_info.ModelInfo | None = None
    needed: dict[str, int] = field(default_factory=dict)
    fit: list[gguf_info.FitLine] = field(default_factory=list)
    error: str | None = None


def model_shard_paths(first_shard: str) -> list[str]:
    """Every shard path of a model, from the first shard's llama.cpp split name."""
    parsed = gguf_info.parse_shard_name(first_shard)
    if parsed is None:
        return [first_shard]
    return gguf_info.shard_names(first_shard, parsed[2])


async def fetch_header(transport: Transport, path: str, length: int) -> bytes:
    """The first ``length`` bytes of a file on a host (base64 keeps them intact over ssh)."""
    result = await transport.run(
        ["sh", "-c", 'head -c "$1" -- "$2" | base64 -w0', "clusterctl", str(length), path],
        timeout=120,
        check=True,
    )
    return base64.b64decode(result.stdout)


async def read_remote_info(transport: Transport, sizes: dict[str, int]) -> gguf_info.ModelInfo:
    """Parse every shard's header, fetching a larger prefix whenever one is too short."""
    want = {path: min(size, gguf_info.DEFAULT_HEADER_FETCH) for path, size in sizes.items()}
    while True:
        headers = [
            (path, await fetch_header(transport, path, want[path]), sizes[path]) for path in sizes
        ]
        try:
            return gguf_info.info_from_headers(headers)
        except gguf_info.NeedMoreHeader as exc:
            path = exc.name if exc.name in want else next(iter(want))
            grown = min(sizes[path], max(exc.needed + 1024 * 1024, want[path] * 2))
            if grown <= want[path] or grown > MAX_HEADER:
                raise
            want[path] = grown


async def read_head_model(pool: HostPool, inventory: Inventory, profile: Profile) -> ModelInfo:
    """The profile's model as its headers on the head say (sizes first, then headers), without
    the rest of the health facts; a missing shard or an unreadable header is a ModelFileError."""
    paths = model_shard_paths(profile.model)
    transport = pool[inventory.cluster.head]
    listed = facts.parse_file_sizes((await transport.run(facts.file_sizes_command(paths))).stdout)
    sizes = {path: size for path, size in listed.items() if size is not None}
    missing = [path for path in paths if path not in sizes]
    if missing:
        raise gguf_info.ModelFileError(f"model shards missing on the head: {', '.join(missing)}")
    return await read_remote_info(transport, sizes)


def available_bytes(found: HostFacts) -> int | None:
    """A host's memory for serving: its configured budget, else MemAvailable."""
    if found.host.memory_budget_gib is not None:
        return int(found.host.memory_budget_gib * GIB)
    return found.memory.available if found.memory else None


async def read_model_report(
    pool: HostPool, inventory: Inventory, profile: Profile, found: dict[str, HostFacts]
) -> ModelReport:
    head = found[inventory.cluster.head]
    report = ModelReport()
    for path in model_shard_paths(profile.model):
        size = head.files.get(path)
        if size is None:
            report.missing.append(path)
        else:
            report.sizes[path] = size
    if report.missing:
        return report
    try:
        report.info = await read_remote_info(pool[head.name], report.sizes)
    except gguf_info.ModelFileError as exc:
        report.error = f"cannot read the model's GGUF header: {exc}"
        return report
    report.needed = gguf_info.estimate_memory(
        report.info,
        devices_for(inventory, profile),
        profile.ctx_size,
        profile.parallel,
        profile.n_gpu_layers,
        inventory.cluster.head,
    )
    available = {
        name: have for name, f in found.items() if (have := available_bytes(f)) is not None
    }
    report.fit = gguf_info.fit_report(report.needed, available)
    return report
