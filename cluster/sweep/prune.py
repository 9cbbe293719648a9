"""Memory-aware pruning: a split that cannot fit a host is skipped before any load.

The model's GGUF headers are read once from the head (only the headers travel), and each
host's memory is taken once, before the sweep loads anything: its configured
``memory_budget_gib``, else MemAvailable. For each split the estimate mirrors llama.cpp's
layer assignment (``gguf_info.estimate_memory``: weights per layer, the output layer, the
KV cache for the context and slots, a compute allowance per device), so a split that asks
a host for more than it has is recorded as pruned with the reason, e.g. ``needs 71.3 GiB
on evo, has 64.0 GiB``, and never loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.config.models import Inventory, Profile
from cluster.config.resolve import devices_for, serving_hosts
from cluster.llamacpp import gguf_info
from cluster.orchestration import hostfacts
from cluster.orchestration.modelcheck import available_bytes, model_shard_paths, read_model_report
from cluster.transport.pool import HostPool


@dataclass(frozen=True)
class MemoryModel:
    """What pruning needs: the model's tensors and each host's memory for serving."""

    info: gguf_info.ModelInfo
    available: dict[str, int]

    def misfits(self, inventory: Inventory, profile: Profile, split: list[float]) -> list[str]:
        """Why the split does not fit, one reason per host that is short; empty when it fits."""
        needed = gguf_info.estimate_memory(
            self.info,
            devices_for(inventory, profile, split),
            profile.ctx_size,
            profile.parallel,
            profile.n_gpu_layers,
            inventory.cluster.head,
        )
        return [
            line.reason for line in gguf_info.fit_report(needed, self.available) if not line.fits
        ]


async def memory_model(
    pool: HostPool, inventory: Inventory, profile: Profile
) -> tuple[MemoryModel | None, str]:
    """Read the model's headers and the hosts' memory; None and why when it cannot."""
    names = [host.name for host in serving_hosts(inventory, profile)]
    found = await hostfacts.gather(
        pool,
        inventory,
        names,
        model_paths=model_shard_paths(profile.model),
        measure_throughput=False,
        probe_rpc=False,
    )
    report = await read_model_report(pool, inventory, profile, found)
    if report.info is None:
        why = report.error or f"model shards missing on the head: {', '.join(report.missing)}"
        return None, why
    available = {
        name: have for name, f in found.items() if (have := available_bytes(f)) is not None
    }
    return MemoryModel(report.info, available), ""
