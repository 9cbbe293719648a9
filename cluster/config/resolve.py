"""Cross-checks between a profile and the inventory, and the device list they imply."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.config.models import HostConfig, Inventory, Profile, format_split
from cluster.errors import ConfigError


@dataclass(frozen=True)
class Device:
    """One entry of the tensor split: an rpc-server device or a local GPU of the head."""

    host: str
    label: str  # RPC0, RPC1, ... in --rpc order, then the head's local GPUs
    proportion: float


def devices_for(
    inventory: Inventory, profile: Profile, split: list[float] | None = None
) -> list[Device]:
    """The split's devices in llama.cpp order: RPC devices in --rpc order, then local GPUs.

    Raises ConfigError naming the profile key when the profile and inventory disagree.
    """
    source = f"playbooks/{profile.name}.toml"
    split = profile.tensor_split if split is None else split
    slots: list[tuple[str, str]] = []
    for name in profile.rpc_hosts:
        if name not in inventory.hosts:
            known = ", ".join(sorted(inventory.hosts))
            raise ConfigError(
                f"host {name!r} is not in the inventory ({known})", file=source, key="rpc_hosts"
            )
        host = inventory.hosts[name]
        slots.extend((name, f"RPC{len(slots)}") for _ in range(host.rpc_device_count))
    head = inventory.head
    slots.extend((head.name, f"{head.name}-gpu{index}") for index in range(head.local_devices))
    if len(split) != len(slots):
        layout = ", ".join(f"{label} on {host}" for host, label in slots) or "none"
        raise ConfigError(
            f"split {format_split(split)} has {len(split)} entries but the cluster has "
            f"{len(slots)} devices ({layout})",
            file=source,
            key="tensor_split",
        )
    return [
        Device(host=h, label=label, proportion=p)
        for (h, label), p in zip(slots, split, strict=True)
    ]


def serving_hosts(inventory: Inventory, profile: Profile) -> list[HostConfig]:
    """Every host that takes part in serving the profile: its rpc hosts and the head."""
    names = list(dict.fromkeys([*profile.rpc_hosts, inventory.cluster.head]))
    return [inventory.hosts[name] for name in names]
