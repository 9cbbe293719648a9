"""Cross-checks between a profile and the inventory, and the device list they imply."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from cluster.config.loader import load_profile
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


class Fit(Enum):
    """How a profile relates to the inventory it is checked against."""

    FITS = "fits"
    # A valid profile written for another cluster (other hosts, another device count).
    UNFIT = "unfit"
    # The file itself is wrong: not found, not TOML, an unknown key, a bad value.
    INVALID = "invalid"


@dataclass(frozen=True)
class ProfileCheck:
    """One profile checked against the inventory; ``problem`` is the one error line."""

    name: str
    fit: Fit
    profile: Profile | None = None
    devices: list[Device] = field(default_factory=list)
    problem: str = ""


def check_profile(inventory: Inventory, playbooks_dir: Path, name: str) -> ProfileCheck:
    """Load a profile and lay it out on the inventory; a problem is data, not raised."""
    try:
        profile = load_profile(playbooks_dir, name)
    except ConfigError as exc:
        return ProfileCheck(name, Fit.INVALID, problem=str(exc))
    try:
        devices = devices_for(inventory, profile)
    except ConfigError as exc:
        return ProfileCheck(name, Fit.UNFIT, profile, problem=str(exc))
    return ProfileCheck(name, Fit.FITS, profile, devices)


def check_profiles(
    inventory: Inventory, playbooks_dir: Path, names: Iterable[str]
) -> list[ProfileCheck]:
    return [check_profile(inventory, playbooks_dir, name) for name in names]
