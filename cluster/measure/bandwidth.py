"""How close token generation runs to the memory-bandwidth wall.

Generating one token reads, once, every weight the token passes through, and on the
machines this project serves (Strix Halo APUs, GPUs) that read is the bound: the tokens
per second of generation times the bytes read per token is a bandwidth, and a device
cannot read faster than its memory's peak. From the GGUF metadata (``ModelInfo``):

- a dense layer reads all of its tensors;
- a mixture-of-experts layer reads its shared tensors (attention, norms, router, shared
  experts) and ``expert_used_count / expert_count`` of its routed experts' bytes (the
  experts a token uses differ from token to token; on average that fraction is read);
- the output head is read whole (every logit is computed), also when it is the token
  embedding itself (tied);
- the token embedding is a lookup: one row, not the matrix.

With a split, each device reads the share of those bytes that llama.cpp placed on it
(``gguf_info.assign_layers`` / ``assign_output``; what stays on the CPU, the embedding row
and any layer not offloaded, is the head's). llama.cpp runs the layers in order, one device
after the other, so a token takes at least ``sum(bytes_i / bandwidth_i)``: that is the
split's floor, ``bytes_per_token`` over it its peak bandwidth, and generation at ``tg``
tokens per second reaches ``tg * floor`` of that peak. A device's bandwidth is its host's
``memory_bandwidth_gbs`` (decimal GB/s, as vendors quote it); when a host that reads a
share has none, the peak is unknown (never guessed). A share under 1% of the bytes (the
embedding row the head's CPU looks up when every layer is offloaded) is negligible: a head
without a figure leaves it out of the floor instead of making the peak unknown.

Above the peak is impossible: a fraction over ``ABOVE_PEAK`` says a host's
``memory_bandwidth_gbs`` is set too low (seen on the GPU run: a CPU host's figure from a
one-thread copy, a fraction of what its cores read together), and the text says so.

``TokenTraffic`` is the record: it is written into each bench and sweep point's metrics
under ``traffic`` and read back by the reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from cluster.config.models import Inventory, Profile
from cluster.config.resolve import Device, devices_for
from cluster.llamacpp.gguf_info import HEAD_CPU_LABEL, ModelInfo, assign_layers, assign_output

GB = 1e9
# A device reading less than this part of a token's bytes does not need a bandwidth figure.
NEGLIGIBLE = 0.01
# Past the peak by more than measurement noise: the peak's figures are wrong, not the run.
ABOVE_PEAK = 1.1


class DeviceShare(BaseModel):
    """The weight bytes one device reads per generated token, and its memory's peak."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    label: str
    bytes: int = Field(ge=0)
    bandwidth_gbs: float | None = Field(default=None, gt=0)


class TokenTraffic(BaseModel):
    """Bytes of weights read per generated token, per device of a split."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bytes_per_token: int = Field(ge=0)
    expert_count: int = 0
    expert_used_count: int = 0
    devices: list[DeviceShare]

    @property
    def floor_s(self) -> float | None:
        """Seconds a token takes at least: every device reading its share at its peak, one
        device after the other; None when a device that reads anything has no peak."""
        total = 0.0
        for device in self.devices:
            if device.bandwidth_gbs is not None:
                total += device.bytes / (device.bandwidth_gbs * GB)
            elif not self._negligible(device):
                return None
        return total if total > 0 else None

    def _negligible(self, device: DeviceShare) -> bool:
        return device.bytes <= NEGLIGIBLE * self.bytes_per_token

    @property
    def peak_gbs(self) -> float | None:
        """The split's effective peak: ``bytes_per_token / floor_s`` in GB/s."""
        floor = self.floor_s
        return None if floor is None else self.bytes_per_token / floor / GB

    @property
    def ceiling_tps(self) -> float | None:
        """The generation rate at the wall: one token per ``floor_s``."""
        floor = self.floor_s
        return None if floor is None else 1.0 / floor

    @property
    def unknown_hosts(self) -> list[str]:
        """Hosts that read a share (not a negligible one) but have no bandwidth figure."""
        missing = [d for d in self.devices if d.bandwidth_gbs is None and not self._negligible(d)]
        return sorted({d.host for d in missing})

    def effective_gbs(self, tg_tps: float) -> float:
        """The bandwidth generation at ``tg_tps`` tokens per second reads weights at."""
        return tg_tps * self.bytes_per_token / GB

    def fraction(self, tg_tps: float) -> float | None:
        """How much of the split's peak generation at ``tg_tps`` reaches (0..1, more means
        the model of what is read is wrong); None when the peak is unknown."""
        floor = self.floor_s
        return None if floor is None else tg_tps * floor

    def describe(self) -> str:
        """``1.84 GB per token (MoE, 8 of 256 experts used); peak 256 GB/s for this split``."""
        experts = (
            f" (MoE, {self.expert_used_count} of {self.expert_count} experts used)"
            if self.expert_count
            else ""
        )
        peak = self.peak_gbs
        where = (
            f"peak {peak:.0f} GB/s for this split"
            if peak is not None
            else "peak unknown (no memory_bandwidth_gbs for " + ", ".join(self.unknown_hosts) + ")"
        )
        return f"{format_gb(self.bytes_per_token)} per token{experts}; {where}"

    def utilisation_text(self, tg_tps: float) -> str:
        """``38.4 GB/s, 15% of 256 GB/s``, or ``38.4 GB/s, peak unknown``."""
        effective = f"{self.effective_gbs(tg_tps):.3g} GB/s"
        fraction, peak = self.fraction(tg_tps), self.peak_gbs
        if fraction is None or peak is None:
            return f"{effective}, peak unknown"
        shown = f"{effective}, {fraction:.0%} of {peak:.0f} GB/s"
        if fraction > ABOVE_PEAK:
            return f"{shown}: above the peak, so a host's memory_bandwidth_gbs is set too low"
        return shown


def format_gb(n: float) -> str:
    """Decimal units, as bandwidths are quoted: ``1.84 GB``, ``320 MB``, ``12.3 kB``."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def layer_token_bytes(info: ModelInfo) -> list[float]:
    """Bytes each repeating layer reads per token: its shared tensors and the used fraction
    of its routed experts."""
    used = info.expert_used_count / info.expert_count if info.expert_count else 1.0
    out = []
    for il, layer in enumerate(info.layer_bytes):
        experts = info.expert_bytes(il)
        out.append(layer - experts + experts * used)
    return out


def _input_token_bytes(info: ModelInfo) -> int:
    """The non-layer, non-output tensors a token reads: one embedding row, the rest whole."""
    return info.input_bytes - info.token_embd_bytes + info.token_embd_row_bytes


def token_bytes(info: ModelInfo) -> int:
    """Weight bytes read to generate one token, wherever they are."""
    return round(sum(layer_token_bytes(info)) + info.output_bytes + _input_token_bytes(info))


def token_traffic(
    info: ModelInfo,
    devices: Sequence[Device],
    n_gpu_layers: int,
    head: str,
    bandwidths: Mapping[str, float | None],
) -> TokenTraffic:
    """Each device's bytes per token for the split (in split order, then the head's CPU),
    placed as llama.cpp places layers; ``bandwidths`` maps a host to its GB/s."""
    split = [d.proportion for d in devices]
    placement = (
        assign_layers(info.n_layer, split, n_gpu_layers) if devices else [None] * info.n_layer
    )
    output = assign_output(info.n_layer, split, n_gpu_layers) if devices else None
    cpu = len(devices)
    shares = [0.0] * (cpu + 1)
    for layer_bytes, device in zip(layer_token_bytes(info), placement, strict=True):
        shares[cpu if device is None else device] += layer_bytes
    shares[cpu if output is None else output] += info.output_bytes
    shares[cpu] += _input_token_bytes(info)
    slots = [(d.host, d.label) for d in devices] + [(head, HEAD_CPU_LABEL)]
    found = [
        DeviceShare(host=host, label=label, bytes=round(share), bandwidth_gbs=bandwidths.get(host))
        for (host, label), share in zip(slots, shares, strict=True)
    ]
    return TokenTraffic(
        bytes_per_token=sum(d.bytes for d in found),
        expert_count=info.expert_count if info.is_moe else 0,
        expert_used_count=info.expert_used_count if info.is_moe else 0,
        devices=found,
    )


def traffic_for(
    info: ModelInfo, inventory: Inventory, profile: Profile, split: list[float] | None = None
) -> TokenTraffic:
    """``token_traffic`` for a profile (and split) on the inventory's hosts."""
    return token_traffic(
        info,
        devices_for(inventory, profile, split),
        profile.n_gpu_layers,
        inventory.cluster.head,
        {name: host.memory_bandwidth_gbs for name, host in inventory.hosts.items()},
    )
